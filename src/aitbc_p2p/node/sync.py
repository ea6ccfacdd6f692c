"""Sync: catch up with peers that are ahead, and serve blocks to peers that are behind.

After each peering round the service syncs from the highest peer that is ahead and not
cooling down after a failed sync (a peer that answers garbage is banned), a batch
of blocks at a time (``/aitbc/sync/2``), each block decoded and its signatures checked
in a worker while the ones before it are applied. A peer whose chain forks from ours
below our head is asked for its fork, and the chain service switches if its tip is
better and no final block would be reverted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from functools import partial

import trio

from aitbc_p2p.chain.batch import CheckedBlock
from aitbc_p2p.chain.models import Block
from aitbc_p2p.chain.votes import Vote
from aitbc_p2p.codec import decode
from aitbc_p2p.codec import head as cbor_head
from aitbc_p2p.exceptions import CodecError, ConsensusError, NetworkError, ValidationError
from aitbc_p2p.network import protocols
from aitbc_p2p.network.abc import Network
from aitbc_p2p.node.abc import BlockImporter, PeerHeads, StoredBlocks
from aitbc_p2p.node.offload import blocking
from aitbc_p2p.node.verify import BLOCKS_AHEAD, decode_block, pipelined
from aitbc_p2p.node.wire import decode_sync_item, decode_sync_request, encode_sync_item, encode_sync_request
from aitbc_p2p.types import Hash32

logger = logging.getLogger(__name__)

SYNC_BATCH = 64
"""Most blocks in one sync response (fewer when they would pass MAX_SYNC_FRAME)."""
MAX_REORG_FETCH = 256
"""Most blocks above our final height fetched to compare a forked peer's chain."""
FETCH_TIMEOUT_S = 30.0
"""A sync request unanswered this long fails: a stalled peer, tried again only after its cool-down."""
COOLDOWN_BASE_S = 2.0
COOLDOWN_MAX_S = 60.0
"""After a failed sync a peer is skipped for 2 s, doubling per failure in a row up to 60 s,
so the next round syncs from another peer (before, the highest claim was always tried
first: a peer claiming a height it could not serve stopped a node's sync for good)."""
MAX_COOLING = 1024
"""Peers whose cool-downs are remembered; past it the soonest to end is forgotten."""


class GarbageResponse(NetworkError):
    """A sync answer no honest peer sends: not the wire format, or a block that does not
    decode or whose signatures are wrong (a peer serves only blocks it imported). Banned."""


class _Forked(Exception):
    """The first block of a sync batch does not extend our head."""


Served = list[tuple[bytes, tuple[Vote, ...]]]


class SyncService:
    def __init__(self, chain: BlockImporter, store: StoredBlocks, network: Network, peering: PeerHeads) -> None:
        self.chain = chain
        self._store = store  # read only: serves stored blocks as they are encoded
        self.network = network
        self.peering = peering
        self.cooling: dict[str, tuple[int, float]] = {}
        """Peers whose last syncs failed: ``(failures in a row, skipped until)`` (trio time)."""
        self._compared: dict[tuple[str, bytes], None] = {}
        """``(peer, our head)`` pairs whose competing tips were compared (bounded, oldest out)."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.network.set_request_handler(protocols.SYNC_PROTOCOL, self.serve)
        task_status.started()
        while True:
            await self.peering.wait_round()
            picked = self.pick()
            if picked is None:
                await self._compare_tips()
                continue
            target, peer = picked
            await self._guarded(peer, self.sync_from(peer, target))

    async def _guarded(self, peer: str, sync: Awaitable[None]) -> None:
        """Run one sync from ``peer``; what it did wrong costs it, and nothing else."""
        try:
            await sync
        except GarbageResponse as e:
            logger.warning("sync from %s: %s", peer, e)
            self.network.ban(peer, f"sync: {e}")
            self.peering.forget_head(peer)
        except (ValidationError, ConsensusError) as e:  # well formed, but not a block of our chain
            self.network.penalize(peer, f"sync: {e}")
            self._cool(peer, e)
        except NetworkError as e:  # unreachable, stalled, or a chain that does not extend ours
            self._cool(peer, e)
        else:
            self.cooling.pop(peer, None)

    def pick(self) -> tuple[int, str] | None:
        """``(height, peer)``: the highest peer ahead of us that is not cooling down."""
        now = trio.current_time()
        ready = [(h, p) for h, p in self.peering.ahead() if self.cooling.get(p, (0, now))[1] <= now]
        return max(ready) if ready else None

    async def _compare_tips(self) -> None:
        """No peer is ahead, but one is at our height on another block: fetch its branch
        and let fork choice decide (it switches only to a better tip, never past a final
        block). Each competing head is compared once. Without this, two peers that each
        made their own block at one height would wait on each other for good under poa's
        signer recency (each the last proposer of its own branch). BFT heads are final:
        nothing to compare."""
        head = self.chain.head
        if self.chain.final_height() >= head.height:
            return
        now = trio.current_time()
        for peer in self.peering.level():
            key = (peer, head.hash)
            if key in self._compared or self.cooling.get(peer, (0, now))[1] > now:
                continue
            self._compared[key] = None
            if len(self._compared) > MAX_COOLING:
                del self._compared[next(iter(self._compared))]
            await self._guarded(peer, self._sync_fork(peer, head.height))
            return  # one a round

    def _cool(self, peer: str, why: Exception) -> None:
        failures = self.cooling.get(peer, (0, 0.0))[0] + 1
        delay = min(COOLDOWN_MAX_S, COOLDOWN_BASE_S * 2 ** min(failures - 1, 16))
        self.cooling[peer] = (failures, trio.current_time() + delay)
        if len(self.cooling) > MAX_COOLING:
            del self.cooling[min(self.cooling, key=lambda p: self.cooling[p][1])]
        self.peering.forget_head(peer)
        logger.warning("sync from %s failed (%s); other peers first for %.0f s", peer, why, delay)

    # ------------------------------------------------------------ serving
    async def serve(self, peer: str, request: bytes) -> bytes:
        try:
            start, end = decode_sync_request(request)
        except CodecError as e:
            raise NetworkError(f"bad sync request: {e}") from e
        end = min(end, start + SYNC_BATCH - 1)
        room = protocols.MAX_SYNC_FRAME - 16  # the array's head
        encoded = await blocking(partial(self._store.encoded_blocks, start, end, max_bytes=room))
        parts: list[bytes] = []
        for height, raw in enumerate(encoded, start):
            item = encode_sync_item(raw, self._store.certificate(height) or b"\x80")
            room -= len(item)
            if parts and room < 0:
                break
            parts.append(item)
        return cbor_head(4, len(parts)) + b"".join(parts)

    # ------------------------------------------------------------ fetching
    async def fetch(self, peer: str, start: int, end: int) -> Served:
        """Blocks ``start..end`` from ``peer``, each still encoded, with its certificate."""
        request = encode_sync_request(start, end)
        raw = await self.network.request(peer, protocols.SYNC_PROTOCOL, request, timeout=FETCH_TIMEOUT_S)
        try:
            items = decode(raw, max_size=protocols.MAX_SYNC_FRAME)
            if not isinstance(items, list):
                raise ValidationError("sync response must be a list")
            return [decode_sync_item(item) for item in items]
        except (CodecError, ValidationError) as e:
            raise GarbageResponse(f"bad sync response from {peer}: {e}") from e

    @staticmethod
    def _served_block(peer: str, checked: CheckedBlock) -> Block:
        if checked.block is None:
            raise GarbageResponse(f"bad sync response from {peer}: {checked.error}")
        return checked.block

    async def sync_from(self, peer: str, target: int) -> None:
        """Fetch and import blocks from ``peer`` up to ``target``, a batch at a time; each
        block is decoded and its signatures checked in a worker while the ones before it
        are applied.

        If the peer's chain forks from ours below our head and its tip is better, switch.
        """
        chain = self.chain

        async def import_one(item: tuple[bytes, tuple[Vote, ...]], checked: CheckedBlock) -> None:
            block = self._served_block(peer, checked)
            head = chain.head
            if item is batch[0] and block.height == head.height + 1 and block.header.parent != head.hash:
                raise _Forked
            imported = await chain.import_block(block, item[1], verified=checked.verified())
            if not imported and block.height > chain.head.height:
                raise NetworkError(f"sync block {block.height} from {peer} does not extend our head")

        while chain.head.height < target:
            start = chain.head.height + 1
            batch = await self.fetch(peer, start, min(target, start + SYNC_BATCH - 1))
            if not batch:
                return
            try:
                await pipelined(batch, lambda item: decode_block(item[0]), import_one, ahead=BLOCKS_AHEAD)
            except _Forked:
                await self._sync_fork(peer, target)
                return
            logger.info("synced to %d from %s", chain.head.height, peer)

    async def _sync_fork(self, peer: str, target: int) -> None:
        """The peer's chain forks from ours: find the common block, compare tips, maybe
        switch. Under a BFT engine every block is final, so this ends in NetworkError."""
        low = self.chain.final_height()
        theirs: list[Block] = []
        verified: set[Hash32] = set()

        def collect(_: object, checked: CheckedBlock) -> None:
            theirs.append(self._served_block(peer, checked))
            verified.update(checked.verified())

        height = low
        while height <= min(target, low + MAX_REORG_FETCH):
            batch = await self.fetch(peer, height, min(target, height + SYNC_BATCH - 1))
            if not batch:
                break
            await pipelined(batch, lambda item: decode_block(item[0]), collect, ahead=BLOCKS_AHEAD)
            height = theirs[-1].height + 1
        ancestor = None
        for block in theirs:
            ours = self.chain.block(block.height)
            if ours is None or ours.hash != block.hash:
                break
            ancestor = block.height
        if ancestor is None:
            raise NetworkError(f"{peer}'s chain shares no block with ours above the final height {low}")
        fork = [b for b in theirs if b.height > ancestor]
        await self.chain.reorg(ancestor, fork, verified)
