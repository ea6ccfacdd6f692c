// The AITBC peer's dashboard: explorer, market and node views over this peer's RPC
// (specs/rpc.md). Served by the peer; no library, no build step, nothing from outside.
// Everything a stranger wrote (job outputs, provider names) goes in as text, never HTML.
"use strict";

const POLL_MS = 1000;
const SAMPLES = 300; // five minutes of one-second samples for the node charts
const LATEST_BLOCKS = 10;
const TX_RATE_WINDOW_MS = 10000; // transactions per second: those committed in the last 10 s

const state = { status: null, samples: [], blocks: new Map(), latest: [], arrivals: [], view: null, cleanup: null, signedIn: true };

// ---------------------------------------------------------------- helpers
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const short = (hex, n = 12) => (typeof hex === "string" && hex.length > n + 4 ? hex.slice(0, n) + "…" : String(hex ?? ""));
const when = (ms) => {
  if (!ms && ms !== 0) return "";
  const at = new Date(ms);
  return at.toDateString() === new Date().toDateString() ? at.toLocaleTimeString() : at.toLocaleString();
};
const mono = (text, full) => h("code", { title: full || text }, text);
const link = (href, text) => h("a", { href }, text);
const aitbc = (units) => (units === null || units === undefined ? "" : (Number(units) / 1e9).toLocaleString(undefined, { maximumFractionDigits: 9 }) + " AITBC");

function dl(pairs) {
  return h("dl", {}, pairs.filter(([, v]) => v !== undefined).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v === null ? "—" : v)]));
}

function table(headers, rows, cls) {
  return h("table", { class: cls || "wide" },
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c, i) => h("td", { "data-label": headers[i] }, c))))));
}

function scalar(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") return mono(JSON.stringify(value));
  if (typeof value === "string" && /^[0-9a-f]{40,}$/.test(value)) return mono(value);
  return String(value);
}

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path) {
  const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401) {
    state.signedIn = false;
    if (!location.hash.startsWith("#/login")) location.hash = "#/login";
    throw new ApiError(401, "UNAUTHORIZED", "sign in with the peer's RPC token");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const err = (body && body.error) || {};
    throw new ApiError(response.status, err.code || "HTTP_" + response.status, err.message || response.statusText);
  }
  return body;
}

function problem(err) {
  return h("p", { class: "error", role: "alert" }, err instanceof ApiError ? `${err.message} (${err.code})` : String(err));
}

function render(title, ...content) {
  const main = document.getElementById("view");
  main.replaceChildren(h("h2", {}, title), ...content);
  document.title = `${title} · AITBC peer`;
}

// ---------------------------------------------------------------- live status
async function poll() {
  const conn = document.getElementById("conn");
  try {
    const status = await api("/v1/status");
    state.signedIn = true;
    const grew = !state.status || status.height !== state.status.height;
    state.status = status;
    document.getElementById("logout").hidden = false;
    document.getElementById("chain").textContent = status.chain_id;
    document.getElementById("peers").textContent = status.peers.length;
    const provider = status.provider || {};
    const now = Date.now();
    state.arrivals = state.arrivals.filter((a) => a.t > now - TX_RATE_WINDOW_MS);
    state.samples.push({
      t: now, height: status.height, mempool: status.mempool, peers: status.peers.length,
      busy: provider.slots !== undefined ? provider.slots - provider.free_slots : null,
      txs: state.arrivals.length ? Math.round((10 * state.arrivals.reduce((n, a) => n + a.txs, 0)) / (TX_RATE_WINDOW_MS / 1000)) / 10 : 0,
    });
    if (state.samples.length > SAMPLES) state.samples.shift();
    if (state.view && state.view.onStatus) state.view.onStatus(status, grew);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      conn.textContent = "no answer";
      conn.className = "conn down";
    } else {
      conn.textContent = "signed out";
      conn.className = "conn down";
    }
  }
}

// The chain's event stream (GET /v1/events): each block as it joins the main chain, a
// reorg when blocks leave it. The browser reconnects by itself, resuming after the last
// block it got (Last-Event-ID), so no block is missed.
function follow(fromHeight) {
  const conn = document.getElementById("conn");
  const source = new EventSource(`/v1/events?after=${Math.max(0, fromHeight)}`);
  source.addEventListener("open", () => { conn.textContent = "live"; conn.className = "conn ok"; });
  source.addEventListener("error", () => { conn.textContent = "reconnecting"; conn.className = "conn down"; });
  source.addEventListener("reorg", (event) => {
    const { height } = JSON.parse(event.data);
    state.latest = state.latest.filter((b) => b.height <= height);
    for (const cached of [...state.blocks.keys()]) if (cached > height) state.blocks.delete(cached);
    if (state.view && state.view.onBlocks) state.view.onBlocks();
  });
  source.addEventListener("block", (event) => {
    const b = JSON.parse(event.data);
    state.latest = [b, ...state.latest.filter((x) => x.height < b.height)].slice(0, LATEST_BLOCKS);
    state.arrivals.push({ t: b.timestamp_ms, txs: b.txs }); // chain time: a catch-up of old blocks adds no rate
    document.getElementById("height").textContent = b.height;
    document.getElementById("final").textContent = b.final_height;
    if (state.view && state.view.onBlocks) state.view.onBlocks();
  });
}

// ---------------------------------------------------------------- explorer
async function block(height) {
  if (!state.blocks.has(height)) {
    state.blocks.set(height, await api(`/v1/blocks/${height}`));
    if (state.blocks.size > 200) state.blocks.delete(state.blocks.keys().next().value);
  }
  return state.blocks.get(height);
}

async function search(text) {
  const q = text.trim().toLowerCase().replace(/^0x/, "");
  if (/^\d+$/.test(q)) return `#/block/${q}`;
  if (q.startsWith("aitbc1")) return `#/account/${q}`;
  if (/^[0-9a-f]{64}$/.test(q)) {
    try { await api(`/v1/transactions/${q}`); return `#/tx/${q}`; } catch (err) { if (err.status !== 404) throw err; }
    try { const blk = await findBlockByHash(q); if (blk !== null) return `#/block/${blk}`; } catch (err) { /* not a block */ }
  }
  if (/^[0-9a-f]{4,64}$/.test(q)) {
    try { const job = await api(`/v1/jobs/${q}`); return `#/job/${job.job_id}`; } catch (err) { if (err.status !== 404) throw err; }
  }
  return null;
}

async function findBlockByHash(hash) {
  // The RPC finds blocks by height; a hash is looked for among the latest ones.
  const top = state.status ? state.status.height : 0;
  for (let height = top; height >= Math.max(0, top - 50); height--) {
    if ((await block(height)).header.hash === hash) return height;
  }
  return null;
}

function explorerView() {
  const message = h("p", { role: "status", class: "hint" });
  const input = h("input", { id: "q", name: "q", type: "search", autocomplete: "off", placeholder: "height, tx or block hash, aitbc1… address, job id" });
  const form = h("form", { class: "search", role: "search", onsubmit: async (event) => {
    event.preventDefault();
    message.textContent = "Searching…";
    try {
      const target = await search(input.value);
      if (target) location.hash = target;
      else message.textContent = `Nothing found for “${input.value}”.`;
    } catch (err) { message.replaceChildren(problem(err)); }
  } }, h("label", { for: "q" }, "Search"), input, h("button", { type: "submit" }, "Go"));
  const latest = h("div", { id: "latest-blocks" }, h("p", { class: "hint" }, "Loading…"));
  render("Explorer", form, message, h("h3", {}, "Latest blocks"), latest);
  function refresh() {
    if (!state.latest.length) return;
    latest.replaceChildren(table(["Height", "Hash", "Txs", "Proposer", "Time"], state.latest.map((b) => [
      link(`#/block/${b.height}`, b.height), mono(short(b.hash), b.hash), b.txs,
      link(`#/account/${b.proposer}`, short(b.proposer, 16)), when(b.timestamp_ms),
    ])));
  }
  refresh();
  return { onBlocks: refresh };
}

function txRows(txs, withHeight) {
  return txs.map((tx) => [
    ...(withHeight ? [link(`#/block/${tx.height}`, tx.height)] : []),
    link(`#/tx/${tx.hash}`, short(tx.hash)), tx.kind, link(`#/account/${tx.from}`, short(tx.from, 16)), tx.nonce, tx.fee,
  ]);
}

async function blockView(height) {
  render(`Block ${height}`, h("p", { class: "hint" }, "Loading…"));
  try {
    const b = await block(Number(height));
    const hd = b.header;
    const nav = h("p", {}, hd.height > 0 ? link(`#/block/${hd.height - 1}`, "← parent") : "", " ",
      state.status && hd.height < state.status.height ? link(`#/block/${hd.height + 1}`, "child →") : "");
    render(`Block ${hd.height}`, nav, dl([
      ["Hash", mono(hd.hash)], ["Parent", mono(hd.parent)], ["Time", new Date(hd.timestamp_ms).toISOString()],
      ["Proposer", link(`#/account/${hd.proposer}`, hd.proposer)], ["Round", hd.round],
      ["State root", mono(hd.state_root)], ["Transactions root", mono(hd.tx_root)], ["Receipts root", mono(hd.receipts_root)],
      ["Finalised by", b.certificate ? `${b.certificate.validators.length} validators (round ${b.certificate.round})` : undefined],
    ]), h("h3", {}, `Transactions (${b.txs.length})`),
    b.txs.length ? table(["Hash", "Kind", "From", "Nonce", "Fee"], txRows(b.txs, false)) : h("p", { class: "hint" }, "No transactions."));
  } catch (err) { render(`Block ${height}`, problem(err)); }
}

async function txView(hash) {
  render("Transaction", h("p", { class: "hint" }, "Loading…"));
  try {
    const found = await api(`/v1/transactions/${hash}`);
    const tx = found.tx;
    const where = found.status === "committed" ? [["Block", link(`#/block/${found.height}`, found.height)], ["Index", found.index]] : [];
    const parts = [dl([
      ["Status", h("span", { class: "status" }, found.status)], ...where, ["Hash", mono(tx.hash)], ["Kind", tx.kind],
      ["From", link(`#/account/${tx.from}`, tx.from)], ["Nonce", tx.nonce], ["Fee", tx.fee], ["Chain", tx.chain_id],
    ]), h("h3", {}, "Payload"), dl(Object.entries(tx.payload || {}).map(([k, v]) => [k,
      typeof v === "string" && v.startsWith("aitbc1") ? link(`#/account/${v}`, v) : scalar(v)]))];
    if (found.status === "committed") {
      try {
        const proof = await api(`/v1/transactions/${hash}/proof`);
        parts.push(h("h3", {}, "Receipt proof"), h("p", {}, "The receipt and its Merkle path to the block's receipts root, as ",
          h("code", {}, `GET /v1/transactions/${hash}/proof`), " serves it to keep and check offline."),
          dl(Object.entries(proof).filter(([, v]) => typeof v !== "object").map(([k, v]) => [k, scalar(v)])));
      } catch (err) { parts.push(problem(err)); }
    }
    render("Transaction", ...parts);
  } catch (err) { render("Transaction", problem(err)); }
}

async function accountView(address) {
  render("Account", h("p", { class: "hint" }, "Loading…"));
  try {
    const [acct, history] = await Promise.all([api(`/v1/accounts/${address}`), api(`/v1/accounts/${address}/history?limit=50`)]);
    render("Account", dl([
      ["Address", mono(acct.address)], ["Balance", aitbc(acct.balance)], ["Stake", aitbc(acct.stake)],
      ["Unbonding", acct.unbonding.length ? acct.unbonding.map((u) => `${aitbc(u.amount)} at ${u.release_height}`).join(", ") : "none"],
      ["Nonce", `${acct.nonce} (next ${acct.pending_nonce})`], ["Provider", acct.provider ? "yes" : "no"], ["Active jobs", acct.active_jobs],
    ]), h("h3", {}, "History"),
    history.txs.length ? table(["Block", "Hash", "Kind", "From", "Nonce", "Fee"], txRows(history.txs, true)) : h("p", { class: "hint" }, "No transactions."));
  } catch (err) { render("Account", problem(err)); }
}

// ---------------------------------------------------------------- market
function marketView() {
  const providers = h("div", {}, h("p", { class: "hint" }, "Loading…"));
  const jobs = h("div", { id: "jobs" }, h("p", { class: "hint" }, "Loading…"));
  render("Market",
    h("h3", {}, "Providers"), providers,
    h("h3", {}, "Jobs of this peer"), jobs,
    h("h3", {}, "Submit a job"),
    h("p", {}, "This peer has no wallet service for the page to sign with; submit with the CLI (it signs with your wallet), and the job appears above:"),
    h("pre", {}, h("code", {}, 'aitbc --devnet job submit --workload echo --message "hello" --wait')));
  async function refresh() {
    try {
      const [p, j] = await Promise.all([api("/v1/providers"), api("/v1/jobs?limit=50")]);
      providers.replaceChildren(p.providers.length ? table(["Miner", "Device", "GFLOP/s", "Price /s", "Workloads", "Load", "Reputation"], p.providers.map((r) => [
        h("span", {}, r.miner_id, h("br"), link(`#/account/${r.provider}`, short(r.provider, 16))), `${r.device} (${r.mode})`, r.gflops,
        aitbc(r.price_per_s), (r.workloads || []).join(", "), r.load ? `${r.load.slots - r.load.free_slots}/${r.load.slots} busy, ${r.load.queued} queued` : "—",
        r.reputation ? `${(r.reputation.score_milli / 1000).toFixed(3)} (${r.reputation.settled} paid, ${r.reputation.failed} failed, ${r.reputation.lost} disputes lost)` : "—",
      ])) : h("p", { class: "hint" }, "No provider has announced itself yet."));
      jobs.replaceChildren(j.jobs.length ? table(["Job", "Workload", "Status", "Phase", "Escrow", "Cost"], j.jobs.map((job) => [
        link(`#/job/${job.job_id}`, short(job.job_id)), job.workload || "—", h("span", { class: "status" }, job.status), job.phase || "—",
        job.escrow ? aitbc(job.escrow.amount) : "—", job.escrow ? aitbc(job.escrow.cost) : "—",
      ])) : h("p", { class: "hint" }, "No jobs yet."));
    } catch (err) { jobs.replaceChildren(problem(err)); }
  }
  refresh();
  const timer = setInterval(refresh, 2000);
  return { cleanup: () => clearInterval(timer) };
}

const STEPS = [
  ["offer", "Offer published", (j) => Boolean(j.offer) || Boolean(j.escrow)],
  ["bids", "Bids received", (j) => (j.bids && j.bids.length > 0) || Boolean(j.escrow)],
  ["escrow", "Escrow opened", (j) => Boolean(j.escrow)],
  ["dispatch", "Dispatched to the provider", (j) => ["running", "fetching", "result_received"].includes(j.phase) || Boolean(j.escrow && (j.escrow.result_hash || j.receipt_id))],
  ["result", "Result received", (j) => j.result_available || Boolean(j.escrow && j.escrow.result_hash)],
  ["receipt", "Receipt on chain", (j) => Boolean(j.receipt_id)],
  ["end", "Settled or refunded", (j) => ["settled", "refunded"].includes(j.status)],
];

function timeline(job, seen) {
  const failed = ["failed", "cancelled"].includes(job.status) || job.phase === "failed";
  const escrow = job.escrow || {};
  const onChain = { escrow: escrow.opened_at, receipt: escrow.receipt_height };
  return h("ol", { class: "timeline", "aria-label": "Job timeline" }, STEPS.map(([key, label, done]) => {
    const ok = done(job);
    const text = key === "end" && ok ? `${job.status === "settled" ? "Settled" : "Refunded"}` : label;
    const details = [onChain[key] ? `block ${onChain[key]}` : "", seen[key] ? `seen ${seen[key]}` : ""].filter(Boolean);
    return h("li", { class: ok ? "done" : "", "data-step": key }, text, ok ? "" : " (not yet)", details.length ? ` · ${details.join(", ")}` : "");
  }), failed ? h("li", { class: "failed" }, `${job.status}${job.error ? ": " + job.error : ""}`) : null);
}

function hexBytes(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

function resultBody(result, stream) {
  const out = result.output;
  if (!result.ok) return problem(result.error || "the job failed");
  if (out && typeof out.text === "string") return h("pre", { class: "output" }, out.text);
  if (out && out.format === "png" && typeof out.image === "string") {
    const url = URL.createObjectURL(new Blob([hexBytes(out.image)], { type: "image/png" }));
    return h("img", { class: "result", src: url, alt: "The image the job generated" });
  }
  if (out && typeof out.vectors === "string") {
    const bytes = out.vectors.length / 2;
    return h("p", {}, `${out.count ?? "?"} vectors of ${out.dim ?? "?"} dimensions (${bytes.toLocaleString()} bytes of ${out.dtype || "float32"}).`);
  }
  return h("pre", { class: "output" }, stream || JSON.stringify(out, null, 2));
}

function jobView(id) {
  const seen = {};
  let tokens = "";
  let result = null; // built once: an image's object URL is made a single time
  let source = null;
  const body = h("div", {}, h("p", { class: "hint" }, "Loading…"));
  render(`Job ${short(id)}`, body);

  let opened = false;
  async function show(job) {
    // A step is timed only if this page saw it happen: those done before it opened are not.
    for (const [key, , done] of STEPS) if (done(job) && !(key in seen)) seen[key] = opened ? new Date().toLocaleTimeString() : "";
    opened = true;
    if (job.result_available && !result) {
      try { result = resultBody(await api(`/v1/jobs/${job.job_id}/result`), tokens); } catch (err) { /* tried again on the next event */ }
    }
    const escrow = job.escrow;
    const offer = job.offer || {};
    body.replaceChildren(
      dl([["Job id", mono(job.job_id)], ["Status", h("span", { class: "status", id: "job-status" }, job.status)], ["Phase", job.phase || "—"],
        ["Workload", job.workload || "—"], ["Client", job.client ? link(`#/account/${job.client}`, job.client) : undefined],
        ["Provider", escrow ? link(`#/account/${escrow.provider}`, escrow.provider) : "not chosen yet"],
        ["Quote (most it pays)", offer.max_price !== undefined ? aitbc(offer.max_price) : undefined],
        ["Escrowed", escrow ? aitbc(escrow.amount) : "—"], ["Cost", escrow ? aitbc(escrow.cost) : "—"],
        ["Receipt", job.receipt_id ? link(`#/tx/${job.receipt_id}`, short(job.receipt_id)) : "—"],
        ["Check", job.check ? `${job.check.verdict}: ${job.check.why}` : undefined],
        ["Replica", job.replica ? link(`#/job/${job.replica}`, short(job.replica)) : undefined]]),
      h("h3", {}, "Timeline"), timeline(job, seen),
      h("section", { "aria-label": "Bids" }, job.bids && job.bids.length ? [h("h3", {}, `Bids (${job.bids.length})`), table(["Provider", "Price", "Trust"], job.bids.map((b) => [
        link(`#/account/${b.provider}`, short(b.provider, 16)), aitbc(b.price), (b.trust_milli / 1000).toFixed(3)]))] : null),
      h("h3", {}, "Result"), result ? result : (tokens ? h("pre", { class: "output", "aria-live": "polite" }, tokens) : h("p", { class: "hint" }, "No result yet.")));
  }

  (async () => {
    try {
      const job = await api(`/v1/jobs/${id}`);
      await show(job);
      source = new EventSource(`/v1/jobs/${job.job_id}/events`);
      const onJob = (event) => show(JSON.parse(event.data));
      source.addEventListener("status", onJob);
      source.addEventListener("end", (event) => { onJob(event); source.close(); });
      source.addEventListener("progress", (event) => {
        const p = JSON.parse(event.data);
        if (typeof p.token === "string") { tokens += p.token; api(`/v1/jobs/${job.job_id}`).then(show).catch(() => {}); }
      });
    } catch (err) { body.replaceChildren(problem(err)); }
  })();
  return { cleanup: () => source && source.close() };
}

// ---------------------------------------------------------------- my node
function chart(title, key, unit) {
  const canvas = h("canvas", { role: "img", "aria-label": title, width: 600, height: 240 });
  const caption = h("figcaption", {}, title);
  function draw() {
    const points = state.samples.filter((s) => s[key] !== null && s[key] !== undefined);
    const ctx = canvas.getContext("2d");
    const w = canvas.width, ht = canvas.height, pad = 30;
    ctx.clearRect(0, 0, w, ht);
    const style = getComputedStyle(document.body);
    ctx.strokeStyle = style.getPropertyValue("--line"); ctx.fillStyle = style.getPropertyValue("--muted");
    ctx.font = "20px system-ui"; ctx.lineWidth = 1;
    ctx.strokeRect(pad, 4, w - pad - 4, ht - pad - 4);
    if (points.length < 2) { ctx.fillText("collecting…", pad + 8, ht / 2); caption.textContent = title; return; }
    const values = points.map((p) => p[key]);
    const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
    const t0 = points[0].t, t1 = points[points.length - 1].t, tspan = t1 - t0 || 1;
    ctx.fillText(String(hi), 2, 22); ctx.fillText(String(lo), 2, ht - pad);
    ctx.strokeStyle = style.getPropertyValue("--accent"); ctx.lineWidth = 3; ctx.beginPath();
    points.forEach((p, i) => {
      const x = pad + ((p.t - t0) / tspan) * (w - pad - 8), y = 8 + (1 - (p[key] - lo) / span) * (ht - pad - 16);
      if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
    const last = values[values.length - 1];
    caption.textContent = `${title}: ${last}${unit || ""} now, ${lo}–${hi} over the last ${Math.round(tspan / 1000)} s`;
    canvas.setAttribute("aria-label", caption.textContent);
  }
  return { el: h("figure", {}, canvas, caption), draw };
}

function counts(map) {
  const entries = Object.entries(map || {});
  return entries.length ? dl(entries.map(([k, v]) => [k, String(v)])) : h("p", { class: "hint" }, "None.");
}

function nodeView() {
  const info = h("div");
  const neighbours = h("div", {}, h("p", { class: "hint" }, "Loading…"));
  const charts = [chart("Height", "height"), chart("Committed tx/s (10 s)", "txs", " tx/s"), chart("Mempool", "mempool", " txs"), chart("Peers", "peers")];
  if (state.status && state.status.provider) charts.push(chart("Executor slots busy", "busy"));
  render("My node", info, h("h3", {}, "The last minutes"), h("div", { class: "charts" }, charts.map((c) => c.el)), neighbours);
  let asked = 0;
  async function refreshNetwork() {
    try {
      const n = await api("/v1/network");
      neighbours.replaceChildren(
        h("h3", {}, `Peers (${n.peers.filter((p) => p.connected).length} connected)`),
        n.peers.length ? table(["Peer", "Connected", "Score", "Rejected", "Banned"], n.peers.map((p) => [
          mono(short(p.peer_id, 20), p.peer_id), p.connected ? "yes" : "no", p.score.toFixed(1), p.rejected, p.banned ? "banned" : "no"])) : h("p", { class: "hint" }, "No peers."),
        h("h3", {}, "Gossip verdicts"), counts(n.gossip),
        h("h3", {}, "Transactions the pool refused"), counts(n.mempool_rejected));
    } catch (err) { neighbours.replaceChildren(problem(err)); }
  }
  function refresh(s) {
    if (!s) return;
    if (Date.now() - asked > 2000) { asked = Date.now(); refreshNetwork(); }
    const p = s.provider;
    info.replaceChildren(dl([
      ["Chain", s.chain_id], ["Version", s.version], ["Up", `${Math.round(s.uptime_s)} s`], ["Consensus", s.consensus],
      ["Height", `${s.height} (final ${s.final_height})`], ["Sync", s.sync.behind > 0 ? `${s.sync.behind} blocks behind ${s.sync.target_height}` : "in step"],
      ["Address", link(`#/account/${s.address}`, s.address)], ["Peer id", mono(s.peer_id)], ["Listening", s.listen.join(" ")],
      ["Mempool", `${s.mempool} transactions (min fee ${s.min_fee})`], ["Next proposer", mono(s.next_proposer)],
      ["Provider", p ? `${p.miner_id}: ${p.device} (${p.mode}), ${p.gflops} GFLOP/s, ${p.price_per_s}/s; slots ${p.slots - p.free_slots}/${p.slots} busy, ${p.done} done, ${p.failed} failed` : "does not sell compute"],
    ]));
    charts.forEach((c) => c.draw());
  }
  refresh(state.status);
  return { onStatus: refresh };
}

function loginView() {
  const main = document.getElementById("view");
  main.replaceChildren(document.getElementById("login").content.cloneNode(true));
  document.title = "Sign in · AITBC peer";
  if (location.hash.includes("error=token")) document.getElementById("login-error").hidden = false;
  document.getElementById("token").focus();
  return {};
}

// ---------------------------------------------------------------- router
function route() {
  if (state.view && state.view.cleanup) state.view.cleanup();
  const parts = (location.hash.replace(/^#\/?/, "").split("?")[0] || "").split("/");
  const [name, arg] = parts;
  const views = {
    "": explorerView, block: () => blockView(arg), tx: () => txView(arg), account: () => accountView(arg),
    market: marketView, job: () => jobView(arg), node: nodeView, login: loginView,
  };
  const view = views[name] || explorerView;
  const section = { block: "explorer", tx: "explorer", account: "explorer", job: "market" }[name] || name || "explorer";
  document.querySelectorAll("nav a").forEach((a) => {
    if (a.dataset.view === section) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
  state.view = view() || {};
  if (!(state.view instanceof Promise)) return;
  state.view = {};
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", async () => {
  // Ask first whether this browser is signed in, so a signed-out page reads nothing
  // (and logs no 401).
  const session = await fetch("/ui/session", { credentials: "same-origin" }).then((r) => r.json()).catch(() => ({ signed_in: false }));
  if (!session.signed_in) {
    state.signedIn = false;
    document.getElementById("conn").textContent = "signed out";
    document.getElementById("conn").className = "conn down";
    if (!location.hash.startsWith("#/login")) location.hash = "#/login";
    else route();
    return;
  }
  route();
  await poll();
  follow(state.status ? state.status.height - LATEST_BLOCKS : 0);
  setInterval(poll, POLL_MS);
});
