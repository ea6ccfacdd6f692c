"""Peering: who this node talks to.

Dials bootstrap peers (and, under the peer floor, peers learnt by exchange and mDNS),
exchanges status with every connected peer about once per ``peer_interval_s``,
disconnects and bans peers of another chain or that misbehave (one ban list, the
network's, shared with the gossip scores), and answers peer exchange. The heads that
peers report drive sync (node/sync.py).
"""

from __future__ import annotations

import logging

import trio

from aitbc_p2p.codec import decode, encode
from aitbc_p2p.exceptions import CodecError, HandshakeRefused, NetworkError
from aitbc_p2p.network.abc import Network
from aitbc_p2p.network.protocols import PEERS_PROTOCOL, STATUS_PROTOCOL
from aitbc_p2p.node.abc import ChainView
from aitbc_p2p.node.config import NodeConfig
from aitbc_p2p.node.peers import Backoff, PeerBook
from aitbc_p2p.node.wire import Status

logger = logging.getLogger(__name__)

EXCHANGE_EVERY_S = 10.0
"""How often, while under the peer floor, each connected peer is asked for more peers."""


class PeeringService:
    def __init__(self, chain: ChainView, network: Network, config: NodeConfig) -> None:
        self.chain = chain
        self.network = network
        self.config = config
        self.book = PeerBook(network.peer_id)
        self.heads: dict[str, int] = {}
        """Heads that connected peers told us (pruned to the connected ones each round);
        a peer is here once it passed the status handshake."""
        self.head_hashes: dict[str, bytes] = {}
        """The hash of each head in :attr:`heads`, as its peer last said it."""
        self._backoff = Backoff(trio.current_time)
        self._dialing: set[str] = set()
        self._exchanged: dict[str, float] = {}
        self._round_done = trio.Event()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.network.set_request_handler(STATUS_PROTOCOL, self.serve_status)
        self.network.set_request_handler(PEERS_PROTOCOL, self.serve_peers)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await self._round()
                self._round_done.set()
                self._round_done = trio.Event()
                await trio.sleep(self.config.peer_interval_s)

    async def wait_round(self) -> None:
        """Return after the next round of status exchanges."""
        await self._round_done.wait()

    def ahead(self) -> list[tuple[int, str]]:
        """``(height, peer)`` of the handshaken peers whose head is above ours."""
        mine = self.chain.head.height
        return [(h, p) for p, h in self.heads.items() if h > mine and not self.network.banned(p)]

    def level(self) -> list[str]:
        """The handshaken peers whose head is at our height but another block: a
        competing tip that fork choice may prefer (poa: after a start-up race or a
        partition, each side extending its own block stalls under signer recency)."""
        head = self.chain.head
        return [
            p for p, h in self.heads.items()
            if h == head.height and self.head_hashes.get(p) not in (None, head.hash) and not self.network.banned(p)
        ]  # fmt: skip

    def saw_height(self, peer: str, height: int) -> None:
        """``peer`` published a block at ``height``: it is at least that far."""
        if peer in self.heads and height > self.heads[peer]:  # a peer we handshook with, not any name
            self.heads[peer] = height
            self.head_hashes.pop(peer, None)  # its head moved: the hash it said is stale

    def forget_head(self, peer: str) -> None:
        self.heads.pop(peer, None)
        self.head_hashes.pop(peer, None)

    # ------------------------------------------------------------ handshake
    def status(self) -> Status:
        head = self.chain.head
        return Status(self.chain.genesis.chain_id, self.chain.genesis.hash, head.height, head.hash, self._advertised())

    def _advertised(self) -> tuple[str, ...]:
        me = self.network.peer_id
        if not self.config.announce:
            return tuple(self.network.listen_addrs())
        return tuple(a if "/p2p/" in a else f"{a}/p2p/{me}" for a in self.config.announce)

    def _check_status(self, peer: str, raw: bytes) -> int:
        try:
            status = Status.decode(raw)
        except CodecError as e:
            raise HandshakeRefused(f"malformed status: {e}") from e
        genesis = self.chain.genesis
        if status.chain_id != genesis.chain_id or status.genesis != genesis.hash:
            raise HandshakeRefused(f"peer {peer} is on another chain ({status.chain_id!r})")
        self.book.verified(peer, list(status.listen))
        self.head_hashes[peer] = status.head
        return status.height

    def _refuse(self, peer: str, reason: str) -> None:
        self.network.ban(peer, reason)
        self.book.forget(peer)
        self.forget_head(peer)

    async def serve_status(self, peer: str, request: bytes) -> bytes:
        try:
            self.heads[peer] = self._check_status(peer, request)
        except HandshakeRefused as e:
            logger.warning("refusing peer %s: %s", peer, e)
            self._refuse(peer, str(e))
        return self.status().encode()

    async def serve_peers(self, peer: str, request: bytes) -> bytes:
        """Peer exchange: verified peers of this chain, for a peer that passed the handshake."""
        if peer not in self.heads:
            raise NetworkError("peer exchange before a status handshake")
        return encode(self.book.share(exclude=peer))

    async def _exchange_status(self, peer: str) -> None:
        try:
            raw = await self.network.request(peer, STATUS_PROTOCOL, self.status().encode(), timeout=5)
            self.heads[peer] = self._check_status(peer, raw)
        except HandshakeRefused as e:
            logger.warning("disconnecting %s: %s", peer, e)
            self._refuse(peer, str(e))
        except NetworkError as e:  # unreachable or slow: try again next round
            logger.debug("status with %s failed: %s", peer, e)

    async def _exchange_peers(self, peer: str) -> None:
        self._exchanged[peer] = trio.current_time()
        try:
            raw = await self.network.request(peer, PEERS_PROTOCOL, encode({}), timeout=5)
            learnt = self.book.heard_all(decode(raw))
            logger.debug("peer exchange with %s: %d new", peer, learnt)
        except (NetworkError, CodecError) as e:
            logger.debug("peer exchange with %s failed: %s", peer, e)

    # ------------------------------------------------------------ dialling
    async def _dial(self, peer: str, addrs: list[str]) -> None:
        """Dial ``peer`` at its first address that answers; failures back off (1 s .. 60 s)."""
        self._dialing.add(peer)
        try:
            for addr in addrs:
                if not self._backoff.ready(addr):
                    continue
                try:
                    await self.network.connect(addr)
                    self._backoff.succeeded(addr)
                    return
                except NetworkError as e:
                    delay = self._backoff.failed(addr)
                    logger.debug("dial %s failed (next try in %.0f s): %s", addr, delay, e)
        finally:
            self._dialing.discard(peer)

    def _dial_more(self, connected: set[str]) -> None:
        """Bootstrap peers always; below the floor, peers learnt by exchange and mDNS too.
        Dials run concurrently, so an address that hangs does not stall the others."""
        assert self._nursery is not None
        skip = connected | self._dialing
        for addr in self.config.bootstrap:
            peer = addr.rsplit("/p2p/", 1)[-1]
            if peer not in skip and not self.network.banned(peer) and self._backoff.ready(addr):
                skip.add(peer)
                self._nursery.start_soon(self._dial, peer, [addr])
        room = min(self.config.peer_floor, self.config.peer_ceiling) - len(connected) - len(self._dialing)
        if room <= 0:
            return
        for peer, addrs in self.network.discovered().items():
            self.book.heard(peer, addrs)
        for peer, addrs in self.book.to_dial(skip):
            if room <= 0:
                break
            if not self.network.banned(peer) and any(self._backoff.ready(a) for a in addrs):
                self._nursery.start_soon(self._dial, peer, addrs)
                room -= 1

    async def _round(self) -> None:
        connected = set(self.network.connected_peers())
        for gone in [p for p in self.heads if p not in connected]:
            self.forget_head(gone)
        self._exchanged = {p: t for p, t in self._exchanged.items() if p in connected}
        self._dial_more(connected)
        now = trio.current_time()
        for peer in connected:
            if self.network.banned(peer):
                await self.network.disconnect(peer)
                continue
            await self._exchange_status(peer)
            due = peer not in self._exchanged or now - self._exchanged[peer] >= EXCHANGE_EVERY_S
            if due and len(connected) < self.config.peer_floor and peer in self.heads:
                await self._exchange_peers(peer)
