"""Verification in a node (specs/market.md, "Verification"): the three sides of
``/aitbc/audit/1``.

- **Provider:** answers an audit of a job it receipted (any asker: the client's agent,
  an arbiter, an auditor) with the job's facts and the rows asked for, each with its
  Merkle proof under the committed ``rows_root``, until the escrow ends.
- **Client's agent:** for a ``spot`` offer, once the receipt is committed, draws rows
  from the hash of the next block (unknown to the provider when it computed), asks for
  them, and judges: an ack if all holds, else a dispute carrying the evidence.
- **Arbiter** (a genesis arbiter's peer): reads each dispute's evidence, audits the
  provider itself where that does not decide it, and posts the ruling.
- **Third-party auditor** (a peer with ``[node] audit_rate`` above 0): draws that share of
  the other peers' receipts, asks their providers for the facts and what the workload's
  check needs, and disputes a result the check refutes (a challenge, once the job is
  settled, within the genesis ``challenge_blocks``).

Every check is :func:`aitbc_p2p.market.audit.judge`, run off the Trio thread (a row's
recomputation needs torch, imported in that thread on the first torch_bench check).
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from aitbc_p2p.chain.payloads import JobDispute, JobReceipt, JobResolve, Verdict
from aitbc_p2p.chain.state import Job, JobStatus
from aitbc_p2p.chain.transition import challengeable
from aitbc_p2p.compute import check_params
from aitbc_p2p.compute.context import (
    find_model,
    language_models,
    module_available,
    pipeline_models,
    torch_available,
    with_digests,
)
from aitbc_p2p.compute.workloads import EMBED_MODULE
from aitbc_p2p.exceptions import ComputeError, MarketError, NetworkError, TxRejected
from aitbc_p2p.market.audit import (
    MAX_ANSWER_ROWS_BYTES,
    MAX_AUDIT_ROWS,
    MAX_PROOF_DEPTH,
    SPOT_ROWS,
    AuditAnswer,
    AuditRequest,
    Evidence,
    Facts,
    GenerationCheck,
    ImageCheck,
    Level,
    RowCheck,
    Ruling,
    challenge_rows,
    challenges_of,
    check_level,
    checkable_generation,
    facts_hold,
    image_challenges,
    judge,
    leaves_for,
    rows_for,
    sampled,
    third_party_drawn,
)
from aitbc_p2p.market.messages import Bid, is_model_digest
from aitbc_p2p.market.replicate import compare
from aitbc_p2p.network.abc import Network
from aitbc_p2p.network.protocols import AUDIT_PROTOCOL, MAX_FRAME
from aitbc_p2p.node.abc import ChainView, OwnAccount
from aitbc_p2p.node.offload import blocking
from aitbc_p2p.types import JobId

if TYPE_CHECKING:
    from aitbc_p2p.node.market import ClientJob, MarketService


logger = logging.getLogger(__name__)

AUDIT_TIMEOUT_S = 5.0
"""One audit request's limit."""
AGENT_PATIENCE = 2
"""The client's agent disputes a receipt whose provider has not answered its audit when
1/AGENT_PATIENCE of the dispute window is left (time for the dispute to be included)."""
ARBITER_PATIENCE_S = 20.0
"""How long an arbiter keeps asking a provider before it rules on its silence."""
RETRY_S = 1.0
MAX_CASES = 256
"""Disputes an arbiter works on at once (more wait for the next block)."""
SCAN_BACK = 1000
"""Blocks an arbiter reads back for disputes when it starts."""
MAX_AUDITS = 8
"""Third-party audits a peer runs at once; receipts drawn past it are left unaudited."""
REPLICA_PATIENCE = 4
"""At level replicate, a job's result waits for its replica's for 1/REPLICA_PATIENCE of the
dispute window after its receipt (the rest is for its own check, where one is needed)."""
MAX_PRODUCTS = 4
"""Recomputed products a provider keeps to answer audits of the same job again."""
MAX_PRODUCT_N = 4096
"""Above this n a product is not kept (64 MiB); each audit recomputes it."""


def _vector_check() -> RowCheck | None:
    """Re-embeds a text where this peer has the embedding model, else None."""
    if not module_available(EMBED_MODULE):
        return None

    def check(params: dict[str, Any], index: int, vector: bytes) -> bool:
        from aitbc_p2p.compute.workloads import embedding_matches

        return embedding_matches(params, index, vector)

    return check


def _generation_check(models: dict[str, str]) -> GenerationCheck | None:
    """Checks an llm_gen generation with this peer's model of the content the job names
    (one teacher-forced pass, in the calling thread), where it has torch, transformers and
    causal LMs; else None."""
    if not language_models(models) or not (torch_available() and module_available("transformers")):
        return None

    def check(params: dict[str, Any], output: dict[str, Any]) -> str | None:
        from aitbc_p2p.compute import llm

        found = find_model(models, params["model"])
        return None if found is None else llm.check_generation(params, output, found[1])

    return check


def _image_check(models: dict[str, str]) -> ImageCheck | None:
    """Re-runs an sd_infer challenge with this peer's pipeline of the content the job
    names (on the CPU, in the calling thread), where it has torch, diffusers and
    pipelines; else None."""
    if not pipeline_models(models) or not (torch_available() and module_available("diffusers")):
        return None

    def check(params: dict[str, Any], output: dict[str, Any], challenge: int, leaves: Any) -> str | None:
        from aitbc_p2p.compute import diffusion

        found = find_model(models, params["model"], pipeline_models)
        if found is None:
            return None
        try:
            return diffusion.check_challenge(params, output, found[1], challenge, leaves)
        except ComputeError as e:  # a pipeline not checked step by step
            logger.info("sd_infer challenge not checked: %s", e)
            return None

    return check


def _check_row(params: dict[str, Any], index: int, row: bytes) -> bool:
    from aitbc_p2p.compute.workloads import row_matches

    return row_matches(params, index, row)


class AuditService:
    def __init__(
        self,
        chain: ChainView,
        account: OwnAccount,
        network: Network,
        market: MarketService,
        *,
        models: dict[str, str] | None = None,
        audit_rate: float = 0.0,
    ) -> None:
        self.chain = chain
        self.account = account
        self.network = network
        self.market = market
        self.models = dict(models or {})
        """Local model directories (name -> path) this peer checks llm_gen generations with."""
        self._check_generation = _generation_check(self.models)
        self._check_image = _image_check(self.models)
        self._nursery: trio.Nursery | None = None
        self._products: OrderedDict[JobId, tuple[list[bytes], list[bytes] | None]] = OrderedDict()
        """Products proved from lately: ``(rows, leaf hashes or None)``."""
        self._prove_lock = trio.Lock()  # one recomputation at a time: audits cannot pile up n^3 work
        self._cases: set[JobId] = set()
        self.audit_rate = audit_rate
        """The share of other peers' receipts this peer audits as a third party."""
        self._audits: set[JobId] = set()
        self.rulings: OrderedDict[JobId, Ruling] = OrderedDict()
        """The latest rulings this peer reached (as arbiter or client's agent), bounded."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.network.set_request_handler(AUDIT_PROTOCOL, self.serve_audit)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.account.key.address in self.chain.rules.arbiters:
                nursery.start_soon(self._arbitrate)
            if self._check_generation is not None or self._check_image is not None:
                nursery.start_soon(self._hash_models)
            if self.audit_rate > 0:
                if not self.chain.rules.challenge_blocks:
                    logger.warning(
                        "audit_rate %s: this chain's genesis allows no challenge of a settled job (challenge_blocks"
                        " 0), so only receipts not yet settled can be disputed",
                        self.audit_rate,
                    )
                nursery.start_soon(self._audit_others)
            task_status.started()
            await trio.sleep_forever()  # the checks and cases it starts run here

    async def _hash_models(self) -> None:
        """Read each model's content hash once at start, off the event loop, so that the
        first job naming one is not kept waiting while a large model is hashed."""
        try:
            known = await blocking(with_digests, self.models)
        except OSError as e:  # a model directory that cannot be read: the jobs naming it say so
            logger.warning("models not hashed: %s", e)
            return
        for digest, path in known.items():
            if is_model_digest(digest):
                logger.info("checks jobs naming %s with %s", digest, path)

    async def cannot_check(self, workload: str, params: dict[str, Any]) -> str:
        """Why this peer could not check a job of ``workload`` with ``params`` at level
        spot or audit (empty: it can): a client's peer refuses such an offer up front."""
        if workload == "embed" and not module_available(EMBED_MODULE):
            return "this peer cannot check embed results: it has no embedding model (the compute extra)"
        if workload == "llm_gen" and checkable_generation(params):
            if self._check_generation is None:
                return "this peer cannot check llm_gen generations: it has no causal LM (torch, transformers, models)"
            if await blocking(find_model, self.models, params["model"]) is None:
                return f"this peer holds no model of content {params['model']} to check the generation with"
        if workload == "sd_infer" and is_model_digest(params.get("model")):
            if self._check_image is None:
                return "this peer cannot check sd_infer images: it has no pipeline (torch, diffusers, models)"
            found = await blocking(find_model, self.models, params["model"], pipeline_models)
            if found is None:
                return f"this peer holds no pipeline of content {params['model']} to check the image with"
            from aitbc_p2p.compute import diffusion

            why = await blocking(diffusion.pipeline_uncheckable, found[1])
            if why:
                return f"the pipeline {params['model']} cannot be checked: {why}"
        return ""

    def disputed(self, job_id: JobId, why: str) -> None:
        """The client's agent disputed the receipt: its ruling is against the provider."""
        self._remember(job_id, Ruling(Verdict.CLIENT, why))

    def check_of(self, job_id: JobId) -> tuple[str, str] | None:
        ruling = self.rulings.get(job_id)
        if ruling is None:
            return None
        return ("undecided" if ruling.verdict is None else ruling.verdict.value), ruling.why

    def _remember(self, job_id: JobId, ruling: Ruling) -> None:
        self.rulings[job_id] = ruling
        while len(self.rulings) > MAX_CASES:
            self.rulings.popitem(last=False)

    # ------------------------------------------------------------ provider
    async def serve_audit(self, peer: str, request: bytes) -> bytes:
        """Answer an audit of a job this provider receipted and still holds."""
        req = AuditRequest.decode(request)  # MarketError: the stream is reset
        job_id = req.job_id
        escrow = self.chain.state.job(job_id)
        facts, device = self.market.held_facts(job_id)
        cheater = self.market.cheater
        if (
            facts is None
            or escrow is None
            or escrow.provider != self.account.key.address
            or not self._answerable(escrow)
        ):
            return AuditAnswer(job_id, error="no receipted job of that id is held here").encode()
        if cheater is not None and not cheater.answers_audits:
            return AuditAnswer(job_id, error="busy").encode()
        rows: tuple[Any, ...] = ()
        workload = facts.offer.body["workload"]
        if req.rows and workload == "torch_bench":
            clean = check_params("torch_bench", facts.params)  # as it ran: defaults filled in
            rows = tuple(await self._prove(job_id, clean, req.rows[: rows_for(clean["n"])], device))
        elif req.rows and workload == "sd_infer":
            clean = check_params("sd_infer", facts.params)
            rows = tuple(await self._prove_latents(job_id, clean, req.rows, device))
        answer = AuditAnswer(job_id, facts, rows).encode()
        if rows and len(answer) > MAX_FRAME - 1024:  # an image and latents: the asker holds the facts already
            answer = AuditAnswer(job_id, None, rows).encode()
        return answer

    async def _prove_latents(
        self, job_id: JobId, params: dict[str, Any], indices: tuple[int, ...], device: str
    ) -> list[Any]:
        """The committed latents asked for, with their proofs: from what the run kept, or
        the trajectory recomputed (the whole job again, one at a time)."""
        from aitbc_p2p.compute import diffusion
        from aitbc_p2p.compute.workloads import prove_rows

        leaves = diffusion.split_leaves(self.market.held_kept(job_id), params["steps"])
        if leaves is None:
            async with self._prove_lock:
                leaves = await blocking(diffusion.trajectory, params, self.market.provider_models(), device)
        cheater = self.market.cheater
        if cheater is not None:
            leaves = cheater.leaves(params, leaves)
        budget = MAX_ANSWER_ROWS_BYTES // max(1, len(leaves[0]) + 64 * MAX_PROOF_DEPTH)
        return await blocking(prove_rows, leaves, indices[: max(1, budget)])

    def _rule(self, escrow: Job, gflops: int = 0) -> Callable[..., Ruling]:
        """:func:`judge` bound to ``escrow``, every check this peer can run, the provider's
        declared ``gflops`` and the chain's time from the escrow to the receipt: call it
        with ``(evidence, answer, asked=...)``, off the event loop."""
        return functools.partial(
            judge, escrow, check_row=_check_row, normalize=check_params, gflops=gflops, check_vector=_vector_check(),
            check_generation=self._check_generation, check_image=self._check_image,
            elapsed_ms=self._elapsed_ms(escrow),
        )  # fmt: skip

    def _elapsed_ms(self, escrow: Job) -> int | None:
        """The chain's time from the block of the escrow the provider ran under (its
        ``opened_at``) to its receipt's block (None: a block not at hand)."""
        opened, receipted = self.chain.block(escrow.opened_at), self.chain.block(escrow.receipt_height)
        if opened is None or receipted is None or not escrow.receipt_height:
            return None
        return receipted.header.timestamp_ms - opened.header.timestamp_ms

    def _answerable(self, escrow: Job) -> bool:
        """Whether a provider answers audits of this escrow: receipted and not yet paid, under
        dispute, or settled and still open to a challenge (``challenge_blocks``)."""
        if escrow.status in (JobStatus.RECEIPTED, JobStatus.DISPUTED, JobStatus.CHALLENGED):
            return True
        return challengeable(escrow, self.chain.rules, self.chain.head.height)

    async def _prove(self, job_id: JobId, params: dict[str, Any], indices: tuple[int, ...], device: str) -> list[Any]:
        from aitbc_p2p.compute.workloads import product_rows, prove_rows

        async with self._prove_lock:
            product = self._products.get(job_id)
            if product is None:
                product = self.market.held_product(job_id, params["n"])  # kept with the result
                if product is None:  # not kept: recomputed (one more product)
                    product = (await blocking(product_rows, params, device), None)
                cheater = self.market.cheater
                if cheater is not None:
                    product = (cheater.rows(params, product[0]), None)
                if params["n"] <= MAX_PRODUCT_N:
                    self._products[job_id] = product
                    while len(self._products) > MAX_PRODUCTS:
                        self._products.popitem(last=False)
            return await blocking(prove_rows, product[0], indices, product[1])

    # ------------------------------------------------------- client's agent
    def spot_check(self, job: ClientJob, escrow: Job) -> None:
        """Check the delivered result of ``job`` before it is acked (levels ``spot``, and
        ``audit`` where the job is drawn), or compare it with its replica's (``replicate``)."""
        if self._nursery is not None:
            self._nursery.start_soon(self._spot_guarded, job, escrow)

    async def _spot_guarded(self, job: ClientJob, escrow: Job) -> None:
        try:
            if job.offer.body["verification"] == Level.REPLICATE:
                await self._replicate(job, escrow)
            else:
                await self._spot(job, escrow)
        except Exception:  # a task edge: one job's check must not end the node
            logger.exception("check of job %s failed", job.job_id.hex()[:16])

    async def _replicate(self, job: ClientJob, escrow: Job) -> None:
        """Level replicate: first the checks that need no model (the bid, the metering,
        an echo recomputed), a failure disputed at once; then the delivered result compared
        with its replica's (another provider's run of the same job) once that is in, for a
        quarter of the dispute window at most. Agreement: ack. A difference, a replica
        without a result, or a replica run by the same provider: the spot check where this
        peer can run one, else reported in the job's ``check`` and not acked
        (specs/market.md, "Replicate")."""
        assert job.result is not None
        facts, bid = Facts(job.offer, job.params, job.result), job.bids.get(escrow.provider)
        rule = self._rule(escrow, _gflops(bid, escrow))
        no_model = {"check_vector": None, "check_generation": None, "check_image": None}
        cheap = await blocking(lambda: rule(Evidence("replicate", facts, bid=bid), None, **no_model))
        if cheap.verdict is Verdict.CLIENT:  # no need to compare
            self._remember(job.job_id, cheap)
            logger.warning("job %s failed its checks: %s", job.job_id.hex()[:16], cheap.why)
            await self.market.dispute(job, cheap.why, Evidence(cheap.why, facts, bid=bid).encode())
            return
        window = self.chain.rules.dispute_blocks
        until = escrow.receipt_height + max(1, window // REPLICA_PATIENCE)
        other, gone = self.market.replica_result(job)
        while other is None and not gone and self.chain.head.height <= until:
            with trio.move_on_after(RETRY_S):
                await self.market.next_job_change().wait()
            other, gone = self.market.replica_result(job)
        twin = job.twin.hex()[:16] if job.twin is not None else "?"
        if other is None:
            why = gone or f"its replica {twin} delivered no result within {until - escrow.receipt_height} blocks"
            await self._settle_alone(job, escrow, why)
            return
        theirs = self.chain.state.job(job.twin) if job.twin is not None else None
        if theirs is not None and theirs.provider == escrow.provider:
            await self._settle_alone(job, escrow, f"its replica {twin} was run by the same provider")
            return
        differ = await blocking(compare, job.workload, job.result.output, other.output)
        if differ:
            await self._settle_alone(job, escrow, f"differs from its replica {twin}: {differ}")
            return
        self._remember(job.job_id, Ruling(Verdict.PROVIDER, f"agrees with its replica {twin}"))
        logger.info("job %s agrees with its replica %s: acked", job.job_id.hex()[:16], twin)
        self.market.ack_checked(job)

    async def _settle_alone(self, job: ClientJob, escrow: Job, why: str) -> None:
        """A replicated job the comparison did not settle: its own spot check if this peer
        can run one (it acks or disputes), else ``why`` reported and no ack."""
        try:
            check_level(job.workload, Level.SPOT, job.params)
            cannot = await self.cannot_check(job.workload, job.params)
        except MarketError as e:
            cannot = str(e)
        if not cannot:
            logger.info("job %s %s: spot-checked", job.job_id.hex()[:16], why)
            await self._spot(job, escrow)
            return
        self._remember(job.job_id, Ruling(None, f"{why}; not checked here: {cannot}"))
        logger.warning("job %s %s; not checked here (%s): no ack", job.job_id.hex()[:16], why, cannot)

    async def _spot(self, job: ClientJob, escrow: Job) -> None:
        assert job.result is not None
        job_id = job.job_id
        facts = Facts(job.offer, job.params, job.result)
        bid = job.bids.get(escrow.provider)
        gflops = _gflops(bid, escrow)
        evidence = Evidence("spot check", facts, bid=bid)
        if job.offer.body["verification"] == Level.AUDIT:
            seed = await self._block_hash(escrow.receipt_height + 1)
            if not sampled(seed, job_id):
                logger.info("job %s not drawn for an audit: acked", job_id.hex()[:16])
                self.market.ack_checked(job)
                return
        rule = self._rule(escrow, gflops)
        unanswered = False
        ruling = await blocking(rule, evidence, None)
        clean = check_params(job.workload, job.params)
        if ruling.verdict is None and job.workload == "embed":  # texts drawn from a block after the receipt
            seed = await self._block_hash(escrow.receipt_height + 1)
            drawn = challenge_rows(seed, job_id, len(clean["texts"]), SPOT_ROWS)
            ruling = await blocking(lambda: rule(evidence, None, asked=drawn))
            evidence = Evidence(ruling.why, facts, rows=tuple((i, b"", ()) for i in drawn), bid=bid)
        elif ruling.verdict is None and job.workload == "torch_bench":  # rows from a block after the receipt
            seed = await self._block_hash(escrow.receipt_height + 1)
            n = int(clean["n"])
            asked = challenge_rows(seed, job_id, n, min(SPOT_ROWS, rows_for(n)))
            window = self.chain.rules.dispute_blocks
            last = escrow.receipt_height + max(1, window - window // AGENT_PATIENCE)
            answer = await self._ask(job.peer, AuditRequest(job_id, asked), until_height=last)
            if answer is None:
                ruling, unanswered = Ruling(None, "the provider did not answer the audit"), True
            else:
                ruling = await blocking(lambda: rule(evidence, answer, asked=asked))
                evidence = Evidence(ruling.why, facts, rows=answer.rows, bid=bid)
        elif ruling.verdict is None and job.workload == "sd_infer":  # a step or the decode, drawn after the receipt
            seed = await self._block_hash(escrow.receipt_height + 1)
            steps = int(clean["steps"])
            drawn = image_challenges(seed, job_id, steps)
            window = self.chain.rules.dispute_blocks
            last = escrow.receipt_height + max(1, window - window // AGENT_PATIENCE)
            answer = await self._ask(job.peer, AuditRequest(job_id, leaves_for(drawn, steps)), until_height=last)
            if answer is None:
                ruling, unanswered = Ruling(None, "the provider did not answer the audit"), True
            else:
                ruling = await blocking(lambda: rule(evidence, answer, asked=drawn))
                evidence = Evidence(ruling.why, facts, rows=answer.rows, bid=bid)
        self._remember(job_id, ruling)
        if ruling.verdict is Verdict.PROVIDER:
            logger.info("job %s passed its spot check (%s)", job_id.hex()[:16], ruling.why)
            self.market.ack_checked(job)
            return
        if ruling.verdict is None and not unanswered:  # it could not check: no ack, no dispute
            logger.error("job %s not checked: %s; no ack (paid after the window)", job_id.hex()[:16], ruling.why)
            return
        logger.warning("job %s failed its spot check: %s", job_id.hex()[:16], ruling.why)
        await self.market.dispute(job, ruling.why, Evidence(ruling.why, evidence.facts, evidence.rows, bid).encode())

    async def _block_hash(self, height: int) -> bytes:
        while self.chain.head.height < height:
            await self.chain.wait_head_change()
        block = self.chain.block(height)
        return block.hash if block is not None else self.chain.head.hash

    async def _ask(
        self, peer: str, request: AuditRequest, *, until_height: int | None = None, patience_s: float | None = None
    ) -> AuditAnswer | None:
        """The provider's answer (one naming the job, without an error), asking again
        until ``until_height`` or for ``patience_s``; None if it never came."""
        with trio.move_on_after(patience_s if patience_s is not None else float("inf")):
            while until_height is None or self.chain.head.height <= until_height:
                if peer:
                    try:
                        raw = await self.network.request(
                            peer, AUDIT_PROTOCOL, request.encode(), timeout=AUDIT_TIMEOUT_S
                        )
                        answer = AuditAnswer.decode(raw)
                        if answer.job_id == request.job_id and not answer.error:
                            return answer
                        logger.info(
                            "audit of %s: %s", request.job_id.hex()[:16], answer.error or "another job's answer"
                        )
                    except (NetworkError, MarketError) as e:
                        logger.info("audit of %s unanswered: %s", request.job_id.hex()[:16], e)
                await trio.sleep(RETRY_S)
        return None

    # ------------------------------------------------------ third-party auditor
    async def _audit_others(self) -> None:
        """Audit the drawn share of the receipts in new blocks (other peers' jobs)."""
        seen = self.chain.head.height
        while True:
            head = self.chain.head.height
            for height in range(seen + 1, head + 1):
                block = self.chain.block(height)
                for tx in block.txs if block is not None else ():
                    if isinstance(tx.payload, JobReceipt):
                        self._consider(tx.payload.job_id)
            seen = max(seen, head)
            await self.chain.wait_head_change()

    def _consider(self, job_id: JobId) -> None:
        me = self.account.key.address
        escrow = self.chain.state.job(job_id)
        if escrow is None or me in (escrow.client, escrow.agent, escrow.provider) or self._nursery is None:
            return  # its own jobs are its agent's to check
        if job_id in self._audits or len(self._audits) >= MAX_AUDITS:
            logger.debug("receipt of %s not audited: %d audits running", job_id.hex()[:16], len(self._audits))
            return
        self._audits.add(job_id)
        self._nursery.start_soon(self._guarded, self._audits, job_id, self._third_party, "third-party audit")

    @staticmethod
    async def _guarded(running: set[JobId], job_id: JobId, work: Callable[[JobId], Awaitable[None]], what: str) -> None:
        """A task edge: one job's audit or case must not end the node; ``running`` (a
        bounded set of the jobs being worked on) forgets it however it ends."""
        try:
            await work(job_id)
        except Exception:
            logger.exception("%s of job %s failed", what, job_id.hex()[:16])
        finally:
            running.discard(job_id)

    async def _third_party(self, job_id: JobId) -> None:
        """Draw, ask the provider for the facts and what the check needs, judge, and
        dispute a result the check refutes. Silence is not disputed: an auditor does not
        stake its bond on a provider it may not reach."""
        escrow = self.chain.state.job(job_id)
        if escrow is None:
            return
        seed = await self._block_hash(escrow.receipt_height + 1)
        if not third_party_drawn(self.audit_rate, self.account.key.address, seed, job_id):
            return
        peer = self.market.provider_peer(escrow.provider)
        answer = await self._ask(peer, AuditRequest(job_id), patience_s=ARBITER_PATIENCE_S)
        if answer is None:
            logger.warning("third-party audit of %s: the provider did not answer; not disputed", job_id.hex()[:16])
            return
        facts = answer.facts if facts_hold(escrow, answer.facts) else None
        asked: tuple[int, ...] = ()
        workload = facts.offer.body["workload"] if facts is not None else ""
        request: AuditRequest | None = None
        if facts is not None and workload == "torch_bench" and (n := _rows_of(facts)):
            asked = challenge_rows(seed, job_id, n, min(SPOT_ROWS, rows_for(n)))
            request = AuditRequest(job_id, asked)
        elif facts is not None and workload == "sd_infer" and is_model_digest(facts.params.get("model")):
            steps = _steps_of(facts)
            asked = image_challenges(seed, job_id, steps)
            request = AuditRequest(job_id, leaves_for(asked, steps))
        elif facts is not None and workload == "embed" and (texts := facts.params.get("texts")):
            asked = challenge_rows(seed, job_id, len(texts), SPOT_ROWS)
        if request is not None:
            rows = await self._ask(peer, request, patience_s=ARBITER_PATIENCE_S)
            if rows is None:
                logger.warning("third-party audit of %s: no rows answered; not disputed", job_id.hex()[:16])
                return
            answer = rows if rows.facts is not None else AuditAnswer(job_id, facts, rows.rows)
        shown, evidence, rule = answer, Evidence("third-party audit", facts), self._rule(escrow)
        ruling = await blocking(lambda: rule(evidence, shown, asked=asked))
        self._remember(job_id, ruling)
        if ruling.verdict is not Verdict.CLIENT:
            logger.info("third-party audit of %s: %s", job_id.hex()[:16], ruling.why or "not checked here")
            return
        now = self.chain.state.job(job_id)
        what = "challenged (settled)" if now is not None and now.status is JobStatus.SETTLED else "disputed"
        logger.warning("third-party audit of %s refutes the result: %s; %s", job_id.hex()[:16], ruling.why, what)
        try:
            await self.account.send_own_tx(JobDispute(job_id, Evidence(ruling.why, facts, shown.rows).encode()))
        except TxRejected as e:  # disputed by another, settled past its challenges, or no bond to lock
            logger.warning("third-party audit of %s: dispute refused: %s", job_id.hex()[:16], e)

    # ------------------------------------------------------------- arbiter
    async def _arbitrate(self) -> None:
        """Find every dispute in new blocks (and in the last SCAN_BACK at start) and rule."""
        seen = max(0, self.chain.head.height - SCAN_BACK)
        while True:
            head = self.chain.head.height
            for height in range(seen + 1, head + 1):
                block = self.chain.block(height)
                for tx in block.txs if block is not None else ():
                    if isinstance(tx.payload, JobDispute) and len(self._cases) < MAX_CASES:
                        self._open_case(tx.payload.job_id)
            seen = max(seen, head)
            await self.chain.wait_head_change()

    def _open_case(self, job_id: JobId) -> None:
        if job_id in self._cases or self._nursery is None:
            return
        self._cases.add(job_id)
        self._nursery.start_soon(self._guarded, self._cases, job_id, self._case, "ruling on the dispute")

    async def _case(self, job_id: JobId) -> None:
        escrow = self.chain.state.job(job_id)
        if escrow is None or escrow.status not in (JobStatus.DISPUTED, JobStatus.CHALLENGED):
            return
        if any(arbiter == self.account.key.address for arbiter, _ in escrow.votes):
            return  # ruled already (a quorum of arbiters is counted on chain)
        found = self.chain.find_tx(escrow.dispute_tx)
        evidence: Evidence | None = None
        if found is not None and isinstance(found.tx.payload, JobDispute) and found.tx.payload.evidence:
            try:
                evidence = Evidence.decode(found.tx.payload.evidence)
            except MarketError as e:
                logger.info("dispute of %s carries no readable evidence: %s", job_id.hex()[:16], e)
        bid = evidence.bid if evidence is not None else None
        rule = self._rule(escrow, _gflops(bid, escrow))
        ruling = await blocking(rule, evidence, None)
        if ruling.verdict is None:  # audit the provider: the facts (if the evidence lacks them), then rows
            peer = self.market.provider_peer(escrow.provider)
            silent = AuditAnswer(job_id, error="no answer within the arbiter's patience")
            facts = evidence.facts if evidence is not None and facts_hold(escrow, evidence.facts) else None
            answer: AuditAnswer | None = None
            if facts is None:
                answer = await self._ask(peer, AuditRequest(job_id), patience_s=ARBITER_PATIENCE_S) or silent
                facts = answer.facts if facts_hold(escrow, answer.facts) else None
            asked: tuple[int, ...] = ()
            workload = facts.offer.body["workload"] if facts is not None else ""
            if facts is not None and workload == "torch_bench":
                n = _rows_of(facts)
                asked = challenge_rows(escrow.dispute_tx, job_id, n, min(SPOT_ROWS, rows_for(n))) if n else ()
                answer = await self._ask(peer, AuditRequest(job_id, asked), patience_s=ARBITER_PATIENCE_S) or silent
            elif facts is not None and workload == "embed":  # texts of its own drawing, and the challenger's
                texts = facts.params.get("texts")
                asked = challenge_rows(escrow.dispute_tx, job_id, len(texts), SPOT_ROWS) if texts else ()
            elif facts is not None and workload == "sd_infer":  # a challenge of its own, and the challenger's
                steps = _steps_of(facts)
                named = [i for i, _, _ in evidence.rows] if evidence is not None else []
                drawn = image_challenges(escrow.dispute_tx, job_id, steps)
                asked = tuple(sorted({*drawn, *challenges_of(named, steps)}))
                request = AuditRequest(job_id, leaves_for(asked, steps)[:MAX_AUDIT_ROWS])
                answer = await self._ask(peer, request, patience_s=ARBITER_PATIENCE_S) or silent
                if answer.facts is None and not answer.error:  # an image and latents: the facts came first
                    answer = AuditAnswer(job_id, facts, answer.rows)
            shown = answer
            ruling = await blocking(lambda: rule(evidence, shown, asked=asked))
        if ruling.verdict is None:
            logger.error("dispute of job %s not ruled here: %s", job_id.hex()[:16], ruling.why)
            return
        self._remember(job_id, ruling)
        logger.warning("dispute of job %s: for the %s (%s)", job_id.hex()[:16], ruling.verdict.value, ruling.why)
        try:
            await self.account.send_own_tx(JobResolve(job_id, ruling.verdict))
        except TxRejected as e:  # another arbiter ruled first, or this one cannot pay the fee
            logger.info("ruling on %s not posted: %s", job_id.hex()[:16], e)


def _gflops(bid: Bid | None, escrow: Job) -> int:
    """The throughput the provider declared in its own signed bid for this job (0: none shown)."""
    if bid is None or bid.signer != escrow.provider or bid.job_id != escrow.job_id:
        return 0
    return int(bid.body["gflops"])


def _steps_of(facts: Facts) -> int:
    """The steps of an sd_infer job (1 where its parameters are refused: judge says so)."""
    try:
        return int(check_params("sd_infer", facts.params)["steps"])
    except ComputeError:
        return 1


def _rows_of(facts: Facts) -> int:
    """The rows of a torch_bench job's product (0: its parameters are refused)."""
    try:
        return int(check_params("torch_bench", facts.params)["n"])
    except ComputeError:
        return 0
