"""``aitbc``: wallet, jobs, chain and devnet commands for people and scripts.

The RPC to talk to: ``--rpc URL`` with ``--token-file FILE`` or ``--data-dir DIR``
(env ``AITBC_RPC``, ``AITBC_RPC_TOKEN_FILE``); ``--devnet`` uses peer1 of a running devnet.
A wallet is an encrypted key file (``--wallet FILE``); its password comes from
``AITBC_WALLET_PASSWORD`` or a prompt, and only commands that sign ask for it. Global
options may stand before or after the subcommand.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any

import argcomplete
import trio
from rich.console import Console

from aitbc_p2p.chain import genesis_from_json
from aitbc_p2p.chain.models import Verdict
from aitbc_p2p.chain.payloads import (
    JobDispute,
    JobRefund,
    JobResolve,
    JobSettle,
    Payload,
    ProviderRegister,
    ProviderUnregister,
    Stake,
    Transfer,
    Unstake,
    Withdraw,
)
from aitbc_p2p.cli import devnet, wallet
from aitbc_p2p.cli.output import Out, fields, table
from aitbc_p2p.consensus.proofs import JobProof, verify_receipt
from aitbc_p2p.crypto import PrivateKey, key_file_address, load_key_file, save_key_file
from aitbc_p2p.crypto.keys import validate_address
from aitbc_p2p.exceptions import AitbcError, ConfigError, RpcError
from aitbc_p2p.market.audit import Level
from aitbc_p2p.rpc import RpcClient, result_image
from aitbc_p2p.types import VERSION, Hash32, JobId, aitbc, format_aitbc

DEFAULT_RPC = "http://127.0.0.1:8006"
DEFAULT_NODES = Path("nodes/devnet")
DEFAULT_RUN = Path(".devnet")


PASSWORD_ENV = "AITBC_WALLET_PASSWORD"


def _password(args: argparse.Namespace, *, confirm: bool = False) -> str:
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        return env
    if args.devnet:
        return devnet.DEVNET_WALLET_PASSWORD
    if not sys.stdin.isatty():
        raise AitbcError(f"no terminal to ask for the wallet password: set {PASSWORD_ENV}")
    first = getpass.getpass("wallet password: ")
    if confirm and getpass.getpass("again: ") != first:
        raise AitbcError("passwords differ")
    return first


def _wallet_path(args: argparse.Namespace) -> Path:
    if args.wallet:
        return Path(args.wallet)
    if args.devnet:
        return Path(args.nodes_dir) / "wallets" / "client.json"
    return Path.home() / ".aitbc" / "wallets" / "default.json"


def _wallet(args: argparse.Namespace) -> PrivateKey:
    """The wallet's key: the file is found (and its address read) before the password is asked."""
    path = _wallet_path(args)
    key_file_address(path)
    return load_key_file(path, _password(args))


def _rpc(args: argparse.Namespace) -> RpcClient:
    if args.devnet:
        procs = devnet.load_state(args.run_dir)
        if not procs:
            raise AitbcError(f"no devnet running in {args.run_dir}; start one with 'aitbc devnet up'")
        return procs[0].rpc()
    url = args.rpc or os.environ.get("AITBC_RPC")
    token_file = args.token_file or os.environ.get("AITBC_RPC_TOKEN_FILE")
    if token_file is None and args.data_dir:
        # The data directory names both: rpc.token, and the URL in node.json (unless given).
        return RpcClient.from_data_dir(args.data_dir, url=url)
    url = url or DEFAULT_RPC
    if token_file is None:
        raise AitbcError("the RPC needs a token: pass --token-file, --data-dir or --devnet")
    return RpcClient(url, token=Path(token_file).read_text().strip())


def _job_id(text: str) -> JobId:
    try:
        raw = bytes.fromhex(text)
    except ValueError as e:
        raise AitbcError(f"{text!r} is not a job id (hex)") from e
    if len(raw) != 32:
        raise AitbcError(f"{text!r} is not a whole job id (64 hex digits)")
    return JobId(Hash32(raw))


async def _full_job_id(rpc: RpcClient, text: str) -> JobId:
    """A job id from its full hex or a prefix of a job this peer tracks."""
    return _job_id(text if len(text) == 64 else str((await rpc.job(text))["job_id"]))


async def _send(args: argparse.Namespace, out: Out, rpc: RpcClient, payload: Payload, what: str) -> dict[str, Any]:
    """Sign ``payload`` with the wallet, submit it, and with ``--wait`` wait for its block."""
    key = _wallet(args)
    tx_hash = await rpc.send(key, payload.KIND, payload)
    data: dict[str, Any] = {"tx_hash": tx_hash, "kind": str(payload.KIND), "from": key.address, "status": "pending"}
    if getattr(args, "wait", False):
        with out.waiting(f"{what}: waiting for tx {tx_hash[:16]} to be committed"):
            found = await rpc.wait_tx(tx_hash, timeout=args.timeout)
        data.update(status="committed", height=found["height"])
    return data


def _sent_text(data: dict[str, Any], first: str) -> str:
    text = f"{first}\ntx {data['tx_hash']}"
    return text + (f"\ncommitted in block {data['height']}" if data["status"] == "committed" else "")


def _amount(text: str) -> int:
    try:
        amount = aitbc(text)
    except ValueError as e:
        raise AitbcError(f"{text!r} is not an amount of AITBC (e.g. 50 or 0.25)") from e
    if amount <= 0:
        raise AitbcError(f"the amount must be above 0, not {text}")
    return amount


# ---------------------------------------------------------------- wallet
async def _wallet_cmd(args: argparse.Namespace, out: Out) -> None:
    command = args.wallet_command
    if command == "new" or command == "import":
        path = _wallet_path(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            raise AitbcError(f"{path} exists; refusing to overwrite a wallet")
        key = PrivateKey.generate() if command == "new" else wallet.read_secret(args.source)
        save_key_file(path, key, _password(args, confirm=True))
        out.done({"wallet": str(path), "address": key.address}, f"{command} wallet {path}\naddress {key.address}")
        return
    if command == "list":
        found = wallet.wallet_files(_wallet_path(args).parent)
        rows: list[tuple[Any, ...]] = [(w["name"], w["address"], w["file"]) for w in found]
        out.done({"wallets": found}, lambda c: c.print(table(None, ["name", "address", "file"], rows)))
        return
    if command == "export":
        key = _wallet(args)
        if args.out is not None:
            wallet.write_secret(args.out, key)
            out.done({"address": key.address, "file": str(args.out)}, f"wrote the key of {key.address} to {args.out}")
        else:
            out.progress("the private key in clear follows: whoever holds it holds the funds")
            out.done({"address": key.address, "secret": key.secret.hex()}, key.secret.hex())
        return
    address = key_file_address(_wallet_path(args))  # in clear in the file: no password needed
    if command == "address":
        out.done({"address": address}, address)
        return
    async with _rpc(args) as rpc:
        if command == "balance":
            acct = await rpc.account(address)
            text = f"{address}\nbalance {acct['balance_aitbc']} AITBC  (nonce {acct['nonce']})"
            if acct["stake"] or acct["unbonding"]:
                unbonding = sum(u["amount"] for u in acct["unbonding"])
                text += f"\nstake {format_aitbc(acct['stake'])} AITBC, unbonding {format_aitbc(unbonding)} AITBC"
            out.done(acct, text)
        elif command in ("send", "withdraw"):
            to = validate_address(args.to)
            amount = _amount(args.amount)
            data = await _send(args, out, rpc, Transfer(to, amount), "send")
            data.update(to=to, amount=amount, amount_aitbc=format_aitbc(amount), description=args.description)
            note = f" ({args.description})" if args.description else ""
            out.done(data, _sent_text(data, f"sent {format_aitbc(amount)} AITBC to {to}{note}"))
        elif command == "history":
            txs = await rpc.history(address, args.limit)
            rows = []
            for tx in txs:
                p = tx["payload"]
                amount = p.get("amount")
                what = f"{format_aitbc(amount)} AITBC" if isinstance(amount, int) else ""
                peer = p.get("to") or p.get("provider") or (p.get("job_id", "")[:16] if p.get("job_id") else "")
                rows.append((tx["height"], tx["kind"], tx["from"], peer, what, tx["hash"][:16]))
            columns = ["block", "kind", "from", "to / job", "amount", "tx"]
            out.done({"address": address, "txs": txs}, lambda c: c.print(table(None, columns, rows)))
        elif command == "earn":
            _bought, sold, _history = await wallet.books(rpc, address)
            if args.amount is not None:
                if not args.job:
                    raise AitbcError("earn AMOUNT needs --job JOB_ID: the job that paid it")
                data = wallet.check_earning(sold, args.job, _amount(args.amount))
                data["description"] = args.desc
                note = f" ({args.desc})" if args.desc else ""
                out.done(data, f"job {data['job_id'][:16]} paid {data['earned_aitbc']} AITBC to {address}{note}")
                return
            earned = wallet.earnings(sold)
            rows = [(j["job_id"][:16], j["height"], format_aitbc(j["earned"]), j["client"]) for j in earned["jobs"]]

            def show(c: Console) -> None:
                c.print(table(None, ["job", "receipt block", "earned (AITBC)", "client"], rows))
                c.print(f"total earned {earned['total_aitbc']} AITBC from {len(rows)} settled jobs")

            out.done({"address": address, **earned}, show)
        elif command == "stats":
            bought, sold, _history = await wallet.books(rpc, address)
            acct = await rpc.account(address)
            data = wallet.stats(address, bought, sold, acct["reputation"])

            def show_stats(c: Console) -> None:
                rows = []
                for name, side, money in (("bought", data["bought"], "spent"), ("sold", data["sold"], "earned")):
                    rate = side["success_rate"]
                    rows.append(
                        (
                            name,
                            side["jobs"],
                            side["by_status"].get("settled", 0),
                            side[f"{money}_aitbc"],
                            "-" if rate is None else f"{rate:.0%}",
                        )
                    )
                c.print(table(address, ["jobs", "count", "settled", "AITBC", "success"], rows))

            out.done(data, show_stats)


# ------------------------------------------------------------ stake, provider, arbiter
async def _stake_cmd(args: argparse.Namespace, out: Out) -> None:
    async with _rpc(args) as rpc:
        if args.stake_command == "status":
            address = key_file_address(_wallet_path(args))
            acct = await rpc.account(address)
            unbonding = sum(u["amount"] for u in acct["unbonding"])
            data = {
                "address": address,
                "stake": acct["stake"],
                "unbonding": acct["unbonding"],
                "provider": acct["provider"],
            }
            text = f"{address}\nstake {format_aitbc(acct['stake'])} AITBC, unbonding {format_aitbc(unbonding)} AITBC"
            for u in acct["unbonding"]:
                text += f"\n  {format_aitbc(u['amount'])} AITBC withdrawable from block {u['release_height']}"
            out.done(data, text)
            return
        if args.stake_command == "withdraw":
            payload: Payload = Withdraw()
            text = "withdrawing the unbonded stake"
        else:
            amount = _amount(args.amount)
            payload = Stake(amount) if args.stake_command == "add" else Unstake(amount)
            text = f"{'staked' if args.stake_command == 'add' else 'unstaking'} {format_aitbc(amount)} AITBC"
        data = await _send(args, out, rpc, payload, args.stake_command)
        out.done(data, _sent_text(data, text))


async def _provider_cmd(args: argparse.Namespace, out: Out) -> None:
    async with _rpc(args) as rpc:
        if args.provider_command == "status":
            address = args.address or key_file_address(_wallet_path(args))
            acct = await rpc.account(validate_address(address))
            records = [p for p in await rpc.providers() if p["provider"] == address]
            rep = acct["reputation"]
            data = {
                "address": address,
                "registered": acct["provider"],
                "stake": acct["stake"],
                "active_jobs": acct["active_jobs"],
                "reputation": rep,
                "record": records[0] if records else None,
            }
            text = (
                f"{address}\nregistered {'yes' if acct['provider'] else 'no'}, "
                f"stake {format_aitbc(acct['stake'])} AITBC, "
                f"{acct['active_jobs']} open escrows\nsettled {rep['settled']}, failed {rep['failed']}, "
                f"lost disputes {rep['lost']}, trust {rep['score_milli'] / 10:.1f}%"
            )
            if records:
                text += f"\noffers {', '.join(records[0]['workloads']) or 'nothing now'} ({records[0]['device']})"
            out.done(data, text)
            return
        payload: Payload = ProviderRegister() if args.provider_command == "register" else ProviderUnregister()
        data = await _send(args, out, rpc, payload, args.provider_command)
        out.done(data, _sent_text(data, f"provider {args.provider_command} sent"))


async def _arbiter_cmd(args: argparse.Namespace, out: Out) -> None:
    async with _rpc(args) as rpc:
        job_id = await _full_job_id(rpc, args.job_id)
        data = await _send(args, out, rpc, JobResolve(job_id, Verdict(args.verdict)), "resolve")
        out.done(data, _sent_text(data, f"ruled for the {args.verdict} on job {job_id.hex()[:16]}"))


# ------------------------------------------------------------------- jobs
def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.message is not None:
        params["message"] = args.message
    if args.prompt is not None:
        params["prompt"] = args.prompt
    for item in args.param or []:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise AitbcError(f"--param {item!r}: write NAME=VALUE (VALUE as JSON, or plain text)")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value  # plain text: --param model=tiny
    return params


def _verify_proof(args: argparse.Namespace, out: Out) -> None:
    """``aitbc job verify FILE``: a saved receipt proof checked against the genesis alone;
    prints what it proves, or fails naming the check that failed."""
    genesis_path = args.genesis or (Path(args.nodes_dir) / "genesis.json" if args.devnet else None)
    if genesis_path is None:
        raise ConfigError("name the chain's genesis: --genesis genesis.json (or --devnet)")
    try:
        genesis = genesis_from_json(genesis_path.read_text())
        proof = JobProof.from_json(json.loads(args.file.read_text()))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {e}") from e
    checked = {"verified": True, **verify_receipt(proof, genesis).to_json()}
    out.done(checked, lambda c: c.print(fields(checked)))


def _model_digest(args: argparse.Namespace, out: Out) -> None:
    """``aitbc model digest DIR``: the content hash a job names a model by (offline)."""
    from aitbc_p2p.compute.context import model_digest

    if not args.path.is_dir():
        raise ConfigError(f"{args.path} is not a model directory")
    digest = {"path": str(args.path), "model": model_digest(str(args.path))}
    out.done(digest, lambda c: c.print(digest["model"]))


JOB_FIELDS = ("job_id", "status", "workload", "error", "receipt_id")


def _job_view(job: dict[str, Any]) -> dict[str, Any]:
    """What a person wants of a job at a glance."""
    view = {k: job.get(k) for k in JOB_FIELDS if job.get(k) not in (None, "")}
    escrow = job.get("escrow") or {}
    if escrow:
        view["provider"] = escrow["provider"]
        view["escrowed"] = f"{format_aitbc(escrow['amount'])} AITBC"
        if escrow.get("cost"):
            view["cost"] = f"{format_aitbc(escrow['cost'])} AITBC"
    if job.get("bids"):
        view["bids"] = len(job["bids"])
    if job.get("check"):
        view["check"] = f"{job['check']['verdict']}: {job['check']['why']}"
    if job.get("replica"):
        view["replica"] = job["replica"]
    return view


async def _job_cmd(args: argparse.Namespace, out: Out) -> None:
    async with _rpc(args) as rpc:
        command = args.job_command
        if command == "submit":
            key = _wallet(args)
            job_id = await rpc.submit_job(
                key,
                args.workload,
                _params(args),
                max_price=_amount(args.max_price),
                max_runtime_s=args.max_runtime,
                verification=args.verify,
                progress=out.progress,
            )
            if args.stream:
                await _stream(rpc, job_id)
            elif args.wait:  # the answer is the job as it ended; progress goes to stderr
                with out.waiting(f"job {job_id[:16]}: running") as say:
                    job = await rpc.wait_job(job_id, timeout=args.timeout, progress=say)
                out.done(job, lambda c: c.print(fields(_job_view(job))))
            else:
                out.done({"job_id": job_id, "status": "submitted"}, job_id)
        elif command == "list":
            jobs = await rpc.jobs(args.limit)
            rows = [
                (
                    j["job_id"][:16],
                    j["status"],
                    j.get("workload", ""),
                    (j.get("escrow") or {}).get("provider", ""),
                    format_aitbc((j.get("escrow") or {}).get("cost", 0)),
                )
                for j in jobs
            ]
            columns = ["job", "status", "workload", "provider", "cost (AITBC)"]
            out.done({"jobs": jobs}, lambda c: c.print(table(None, columns, rows)))
        elif command == "proof":
            proof = await rpc.job_proof(args.job_id)
            if args.out is None:
                out.done(proof, json.dumps(proof, indent=2))
            else:
                args.out.write_text(json.dumps(proof, indent=2) + "\n")
                out.done({"file": str(args.out)}, f"wrote {args.out}; check it offline: aitbc job verify {args.out}")
        elif command == "status":
            job = await rpc.job(args.job_id)
            out.done(job, lambda c: c.print(fields(_job_view(job))))
        elif command == "result":
            result = await rpc.job_result(args.job_id)
            if args.image is not None:
                image = result_image(result)
                if image is None:
                    raise ConfigError(f"job {args.job_id} has no image in its result")
                args.image.write_bytes(image)
                out.progress(f"wrote {len(image):,} bytes to {args.image}")
                # the image is in the file: the JSON keeps its digests, not its bytes twice in hex
                result = {**result, "output": {**result["output"], "image": str(args.image)}, "output_hex": None}
            out.done(result, lambda c: c.print(fields({k: v for k, v in result.items() if k != "output_hex"})))
        elif command == "cancel":
            job = await rpc.cancel_job(args.job_id)
            out.done(job, lambda c: c.print(fields(_job_view(job))))
        elif command in ("refund", "settle", "dispute"):
            escrow_id = await _full_job_id(rpc, args.job_id)
            payload: Payload = {"refund": JobRefund, "settle": JobSettle, "dispute": JobDispute}[command](escrow_id)
            data = await _send(args, out, rpc, payload, command)
            out.done(data, _sent_text(data, f"job {escrow_id.hex()[:16]}: {command} sent"))


async def _stream(rpc: RpcClient, job_id: str) -> None:
    """``job submit --stream``: the workload's output on stdout as it is made (an llm_gen
    token, an echo chunk), other progress and each status change on stderr.

    Raises:
        AitbcError: the job did not settle (after its events are shown).
    """
    last = ""
    async with aclosing(rpc.stream_job(job_id)) as events:
        async for event in events:
            data = event["data"]
            if event["event"] == "progress":
                if isinstance(data.get("token"), str):
                    sys.stdout.write(data["token"])
                    sys.stdout.flush()
                else:
                    print(json.dumps(data), file=sys.stderr)
            elif data["status"] != last:
                last = data["status"]
                print(f"job {job_id[:16]}: {last}", file=sys.stderr)
    print()
    if last != "settled":
        raise AitbcError(f"job {job_id} ended {last}: {data.get('error') or 'see aitbc job status'}")


# ------------------------------------------------------------------ chain
async def _chain_cmd(args: argparse.Namespace, out: Out) -> None:
    async with _rpc(args) as rpc:
        command = args.chain_command
        if command == "status":
            status = await rpc.status()
            keys = ("chain_id", "height", "final_height", "consensus", "address", "peer_id", "mempool", "version")
            out.done(
                status, lambda c: c.print(fields({k: status.get(k) for k in keys} | {"peers": len(status["peers"])}))
            )
        elif command == "supply":
            supply = await rpc.supply()
            out.done(supply, lambda c: c.print(fields({k: f"{format_aitbc(v)} AITBC" for k, v in supply.items()})))
        elif command == "providers":
            providers = await rpc.providers()
            rows: list[tuple[Any, ...]] = [
                (
                    p["provider"],
                    p["miner_id"],
                    ", ".join(p["workloads"]),
                    format_aitbc(p["price_per_s"]),
                    p["gflops"],
                    f"{p['reputation']['score_milli'] / 10:.0f}%",
                )
                for p in providers
            ]
            columns = ["provider", "miner id", "workloads", "AITBC/s", "GFLOP/s", "trust"]
            out.done({"providers": providers}, lambda c: c.print(table(None, columns, rows)))
        elif command == "block":
            block = await rpc.block(args.height)
            header = block["header"]
            view = {
                "height": header["height"],
                "hash": header["hash"],
                "parent": header["parent"],
                "proposer": header["proposer"],
                "timestamp_ms": header["timestamp_ms"],
                "txs": len(block["txs"]),
            }
            out.done(block, lambda c: c.print(fields(view)))
        elif command == "tx":
            found = await rpc.tx_status(args.tx_hash)
            tx = found["tx"]
            view = {
                "status": found["status"],
                "height": found.get("height"),
                "kind": tx["kind"],
                "from": tx["from"],
                "nonce": tx["nonce"],
                "fee": tx["fee"],
                "payload": tx["payload"],
            }
            out.done(found, lambda c: c.print(fields(view)))
        elif command == "peers":
            net = await rpc.network()
            rows = [
                (
                    p["peer_id"],
                    "yes" if p["connected"] else "no",
                    p["score"],
                    p["rejected"],
                    "yes" if p["banned"] else "",
                )
                for p in net["peers"]
            ]
            out.done(net, lambda c: c.print(table(None, ["peer", "connected", "score", "rejected", "banned"], rows)))


def _devnet_cmd(args: argparse.Namespace, out: Out) -> None:
    if args.devnet_command == "up":
        procs = devnet.start(args.nodes_dir, args.run_dir, tiny_llm=args.tiny_llm, tiny_sd=args.tiny_sd)
        trio.run(lambda: devnet.wait_ready(procs, progress=out.progress))
        peers = [{"name": p.name, **p.info(), "log": str(p.log)} for p in procs]
        first = procs[0]
        dashboard = f"{first.info()['rpc_url']}/ui/"
        lines = [f"{p['name']}: {p['address']}  rpc {p['rpc_url']}  log {p['log']}" for p in peers]
        lines.append("devnet up; use 'aitbc --devnet ...' to talk to peer1, 'aitbc devnet down' to stop")
        lines.append(f"dashboard: {dashboard}  (sign in with the token in {first.data_dir / 'rpc.token'})")
        out.done({"peers": peers, "dashboard": dashboard}, "\n".join(lines))
    elif args.devnet_command == "down":
        stopped = devnet.stop(args.run_dir)
        out.done({"stopped": stopped}, "\n".join(stopped or ["no devnet running"]))
    elif args.devnet_command == "demo":
        trio.run(partial(devnet.run_demo, args.nodes_dir, args.run_dir, workload=args.workload, prompt=args.prompt))


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every command takes. On the top parser they carry the defaults; on
    each subcommand they default to SUPPRESS, so one written after the subcommand
    (``aitbc devnet up --nodes-dir X``) counts as much as one written before it."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument("--rpc", default=default(None), help=f"peer RPC URL (default {DEFAULT_RPC}, env AITBC_RPC)")
    parser.add_argument("--token-file", default=default(None), help="RPC token file (env AITBC_RPC_TOKEN_FILE)")
    parser.add_argument(
        "--data-dir",
        default=default(None),
        help="peer data directory: its node.json gives the RPC URL, rpc.token the token",
    )
    parser.add_argument(
        "--wallet", default=default(None), help="wallet key file (default ~/.aitbc/wallets/default.json)"
    )
    parser.add_argument(
        "--devnet",
        action="store_true",
        default=default(False),
        help="talk to peer1 of the local devnet with the client wallet",
    )
    parser.add_argument(
        "--nodes-dir", type=Path, default=default(DEFAULT_NODES), help="devnet configs (default nodes/devnet)"
    )
    parser.add_argument(
        "--run-dir", type=Path, default=default(DEFAULT_RUN), help="devnet run directory (default .devnet)"
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print one JSON document on stdout (errors too)"
    )


class _Commands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommand parsers that take the global options too (see :func:`_global_options`),
    each with its examples under its help."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        example = kwargs.pop("example", None)
        if example is not None:
            lines = [example] if isinstance(example, str) else list(example)
            kwargs["epilog"] = "examples:\n" + "\n".join(f"  {line}" for line in lines)
            kwargs["formatter_class"] = argparse.RawDescriptionHelpFormatter
        if "help" in kwargs and "description" not in kwargs:
            kwargs["description"] = kwargs["help"]
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        parser.register("action", "parsers", _Commands)
        _global_options(parser, top=False)
        return parser


EPILOG = f"""The wallet's password comes from {PASSWORD_ENV} or, on a terminal, a prompt; only commands
that sign need it. Options may stand before or after the subcommand. --json prints one JSON
document on stdout. Shell completion: eval "$(register-python-argcomplete aitbc)".

examples:
  aitbc devnet up
  aitbc --devnet wallet balance
  aitbc --devnet job submit --workload echo --message hi --wait
  aitbc --data-dir /var/lib/aitbc chain status --json"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from e
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _wait_options(parser: argparse.ArgumentParser, what: str = "the transaction is committed") -> None:
    parser.add_argument("--wait", action="store_true", help=f"wait until {what}")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait at most (default 60)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aitbc",
        description="AITBC wallet, jobs, chain and devnet.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.register("action", "parsers", _Commands)
    parser.add_argument("--version", action="version", version=f"aitbc {VERSION}")
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)
    addr = "aitbc1r44jyhgqkngl74ur7234ltghvx0z578cnfwdr6"

    w = sub.add_parser("wallet", help="keys, balance, payments, earnings").add_subparsers(
        dest="wallet_command", required=True
    )
    w.add_parser("new", help="create an encrypted wallet key file", example="aitbc --wallet me.json wallet new")
    w.add_parser("address", help="print the wallet's address", example="aitbc --devnet wallet address")
    w.add_parser("balance", help="balance, nonce and stake", example="aitbc --devnet wallet balance")
    for name, what in (
        ("send", "transfer AITBC: send AMOUNT ADDRESS [DESCRIPTION]"),
        ("withdraw", "pay earnings out to an address (a transfer): withdraw AMOUNT ADDRESS"),
    ):
        send = w.add_parser(name, help=what, example=f"aitbc --devnet wallet {name} 50 {addr} 'for inference' --wait")
        send.add_argument("amount", help="AITBC, e.g. 50 or 0.25")
        send.add_argument("to", help="recipient aitbc1... address")
        send.add_argument("description", nargs="?", help="what it is for (shown here; the chain keeps no memo)")
        _wait_options(send)
    hist = w.add_parser("history", help="committed transactions, newest first", example="aitbc --devnet wallet history")
    hist.add_argument("--limit", type=_positive_int, default=20)
    earn = w.add_parser(
        "earn",
        help="what settled jobs paid this wallet; with AMOUNT --job ID, check that that job paid that",
        example=[
            "aitbc --wallet miner.json wallet earn",
            "aitbc --wallet miner.json wallet earn 0.25 --job 3f2a9c --desc inference",
        ],
    )
    earn.add_argument("amount", nargs="?", help="AITBC the job paid (the seed's earn AMOUNT)")
    earn.add_argument("--job", help="the job's id (or a prefix of it)")
    earn.add_argument("--desc", help="what the job was (shown, not stored)")
    w.add_parser(
        "stats", help="jobs bought and sold, spent, earned, success rate", example="aitbc --devnet wallet stats"
    )
    w.add_parser(
        "list", help="the wallet files beside --wallet (default ~/.aitbc/wallets)", example="aitbc wallet list"
    )
    imp = w.add_parser(
        "import",
        help="encrypt a private key (64 hex digits) into a wallet file",
        example="aitbc --wallet rig.json wallet import key.hex",
    )
    imp.add_argument("source", help="file holding the key, or - for stdin")
    exp = w.add_parser(
        "export",
        help="the wallet's private key in clear (to a new 0600 file, or stdout)",
        example="aitbc --wallet rig.json wallet export --out rig.key",
    )
    exp.add_argument("--out", type=Path, metavar="FILE", help="write it to FILE (mode 0600, never overwritten)")

    st = sub.add_parser("stake", help="stake, unstake, withdraw unbonded stake").add_subparsers(
        dest="stake_command", required=True
    )
    for name, what in (("add", "lock AMOUNT AITBC as stake"), ("remove", "start unbonding AMOUNT AITBC of stake")):
        one = st.add_parser(name, help=what, example=f"aitbc --devnet stake {name} 100 --wait")
        one.add_argument("amount", help="AITBC")
        _wait_options(one)
    _wait_options(
        st.add_parser("withdraw", help="take back stake whose unbonding ended", example="aitbc stake withdraw --wait")
    )
    st.add_parser("status", help="stake and unbonding", example="aitbc --devnet stake status")

    prov = sub.add_parser("provider", help="register to sell compute, or stop").add_subparsers(
        dest="provider_command", required=True
    )
    _wait_options(
        prov.add_parser(
            "register", help="register (needs the chain's provider stake)", example="aitbc provider register --wait"
        )
    )
    _wait_options(
        prov.add_parser("unregister", help="stop being offered escrows", example="aitbc provider unregister --wait")
    )
    pstat = prov.add_parser(
        "status",
        help="registration, stake, record on chain, what it offers",
        example="aitbc --devnet provider status aitbc1...",
    )
    pstat.add_argument("address", nargs="?", help="a provider's address (default: the wallet's)")

    job = sub.add_parser("job", help="submit and follow compute jobs").add_subparsers(dest="job_command", required=True)
    submit = job.add_parser(
        "submit",
        help="offer a job, pick a bid, open escrow",
        example=[
            "aitbc --devnet job submit --workload echo --message hi --wait",
            "aitbc --devnet job submit --workload torch_bench --param n=512 --max-price 2 --wait --json",
        ],
    )
    submit.add_argument("--workload", default="echo", help="echo | torch_bench | embed | llm_gen | sd_infer")
    submit.add_argument("--message", help="echo's message")
    submit.add_argument("--prompt", help="prompt for text-generation workloads")
    submit.add_argument(
        "--param",
        action="append",
        help='extra parameter NAME=VALUE, VALUE as JSON (7, true, ["a","b"]) or plain text',
    )
    submit.add_argument("--max-price", default="5", help="most AITBC to pay (default 5)")
    submit.add_argument("--max-runtime", type=_positive_int, default=60, help="runtime cap in seconds (at least 1)")
    submit.add_argument(
        "--verify",
        choices=[str(level) for level in Level],
        default="none",
        help="what this peer checks before it pays: none, spot or audit (echo, torch_bench, embed, llm_gen and"
        " sd_infer with --param model=sha256:...), or replicate (a second provider runs it too, at twice the"
        " cost, and the two results are compared; specs/market.md)",
    )
    _wait_options(submit, "settled, refunded or failed")
    submit.set_defaults(timeout=120.0)
    submit.add_argument(
        "--stream", action="store_true", help="show the output as it is made (tokens on stdout), until the job ends"
    )
    jl = job.add_parser("list", help="this peer's jobs, newest first", example="aitbc --devnet job list --limit 10")
    jl.add_argument("--limit", type=_positive_int, default=50)
    proof = job.add_parser(
        "proof",
        help="the job's receipt proof, to keep and check offline",
        example="aitbc --devnet job proof 3f2a9c -o proof.json",
    )
    proof.add_argument("job_id")
    proof.add_argument("-o", "--out", type=Path, metavar="FILE", help="write it to FILE (default: stdout)")
    verify = job.add_parser(
        "verify",
        help="check a saved receipt proof offline (no peer needed)",
        example="aitbc job verify proof.json --genesis genesis.json",
    )
    verify.add_argument("file", type=Path)
    verify.add_argument("--genesis", type=Path, help="the chain's genesis.json (default with --devnet: the devnet's)")
    job.add_parser("status", help="where a job is", example="aitbc --devnet job status 3f2a9c").add_argument("job_id")
    result = job.add_parser(
        "result", help="the job's result (bytes as hex)", example="aitbc --devnet job result 3f2a9c"
    )
    result.add_argument("job_id")
    result.add_argument("--image", type=Path, metavar="FILE", help="write an sd_infer result's PNG to FILE")
    cancel = job.add_parser(
        "cancel",
        help="take a job back: its escrow returns (at once with the provider's release)",
        example="aitbc --devnet job cancel 3f2a9c",
    )
    cancel.add_argument("job_id")
    for name, what in (
        ("refund", "return an escrow that ended unpaid (past its deadline, or cancelled past the grace)"),
        ("settle", "pay a receipted job now (the client's or agent's word that the result came)"),
        ("dispute", "challenge a receipt before it settles (locks the chain's dispute bond)"),
    ):
        one = job.add_parser(name, help=what, example=f"aitbc --devnet job {name} 3f2a9c --wait")
        one.add_argument("job_id")
        _wait_options(one)

    arb = sub.add_parser("arbiter", help="rule on disputed jobs (a genesis arbiter's key)").add_subparsers(
        dest="arbiter_command", required=True
    )
    res = arb.add_parser(
        "resolve",
        help="rule a disputed job for the provider or the client",
        example="aitbc --wallet arbiter.json arbiter resolve 3f2a9c --verdict client --wait",
    )
    res.add_argument("job_id")
    res.add_argument("--verdict", required=True, choices=[str(v) for v in Verdict])
    _wait_options(res)

    model = sub.add_parser("model", help="models named by their content").add_subparsers(
        dest="model_command", required=True
    )
    model.add_parser(
        "digest",
        help="a model directory's content hash, to name it in a checkable llm_gen job (no peer needed)",
        example="aitbc model digest /srv/models/tiny",
    ).add_argument("path", type=Path)
    chain = sub.add_parser("chain", help="chain and peer status").add_subparsers(dest="chain_command", required=True)
    chain.add_parser("status", help="head, finality, peers", example="aitbc --devnet chain status")
    chain.add_parser("supply", help="where every unit is", example="aitbc --devnet chain supply --json")
    chain.add_parser("providers", help="providers offering compute now", example="aitbc --devnet chain providers")
    chain.add_parser("block", help="a block by height", example="aitbc --devnet chain block 7").add_argument(
        "height", type=int
    )
    chain.add_parser("tx", help="a transaction by hash", example="aitbc --devnet chain tx 9c1e...").add_argument(
        "tx_hash"
    )
    chain.add_parser("peers", help="peers with their scores", example="aitbc --devnet chain peers")

    dev = sub.add_parser("devnet", help="local 3-peer devnet").add_subparsers(dest="devnet_command", required=True)
    up = dev.add_parser("up", help="start the peers in the background", example="aitbc devnet up")
    up.add_argument("--tiny-llm", action="store_true", help="build a tiny LM so the provider offers llm_gen")
    up.add_argument(
        "--tiny-sd", action="store_true", help="build a tiny Stable Diffusion pipeline so the provider offers sd_infer"
    )
    dev.add_parser("down", help="stop them", example="aitbc devnet down")
    demo = dev.add_parser(
        "demo",
        help="start, run one job end to end, print the outcome, stop",
        example="aitbc devnet demo --workload echo",
    )
    demo.add_argument(
        "--workload", help="echo | torch_bench | embed | llm_gen | sd_infer (default: torch_bench if offered)"
    )
    demo.add_argument("--prompt", help="llm_gen's or sd_infer's prompt (or echo's message)")
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace, Out], Awaitable[None]]] = {
    "wallet": _wallet_cmd,
    "stake": _stake_cmd,
    "provider": _provider_cmd,
    "arbiter": _arbiter_cmd,
    "job": _job_cmd,
    "chain": _chain_cmd,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    out = Out(json_mode=args.json)
    try:
        if args.command == "devnet" and args.devnet_command == "demo" and args.json:
            outcome = trio.run(
                partial(
                    devnet.run_demo,
                    args.nodes_dir,
                    args.run_dir,
                    workload=args.workload,
                    prompt=args.prompt,
                    out=out.progress,
                    to_stderr=True,
                )
            )
            out.done(outcome)
        elif args.command == "devnet":
            _devnet_cmd(args, out)
        elif args.command == "job" and args.job_command == "verify":
            _verify_proof(args, out)
        elif args.command == "model":
            _model_digest(args, out)
        else:
            trio.run(COMMANDS[args.command], args, out)
    except RpcError as e:
        out.error(e.code, e.message, e.details)
        return 1
    except trio.TooSlowError:
        out.error("TIMEOUT", "gave up waiting (--timeout)")
        return 1
    except (AitbcError, ValueError, OSError) as e:
        out.error("", str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
