"""An in-memory network: many peers in one Trio run, no sockets (issue 16, specs/wire.md).

A :class:`MemoryHub` holds the peers; :meth:`MemoryHub.open_network` gives each one a
:class:`MemoryNetwork` that keeps the real adapter's contract (network/abc.py), so the
node runs over it unchanged:

* gossip is checked by the subscriber's validator before it is delivered or relayed:
  ACCEPT delivers and relays, IGNORE drops, REJECT drops and penalizes the peer that
  forwarded it (the same :class:`~aitbc_p2p.network.scoring.PeerScores` as libp2p's
  adapter, so graylists and bans follow); the first copy of a message decides, later
  copies are dropped unread; a graylisted forwarder's messages are dropped unread;
* request handlers run within the same per-peer limits
  (:class:`~aitbc_p2p.network.limits.RequestLimits`) and frame limits, with the same
  consequences for a handler's exceptions;
* ``connect``/``disconnect``/``ban`` keep one connection table for both ends.

What the real network does to messages is injected: a latency per link, a loss rate,
and partitions that cut links until :meth:`MemoryHub.heal`. Every delay is a
``trio.sleep``, so under Trio's ``MockClock(autojump_threshold=0)`` a simulated minute
passes in as much wall time as the work in it takes. Counters per peer (messages and
bytes sent) feed ``bench/sim.py``.

Gossip floods: each peer relays an accepted message to every connected peer that did
not send it. Gossipsub relays to a mesh of about six; on the small degrees a test or a
simulation uses, flooding is the same graph.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import math
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import trio

from aitbc_p2p.crypto import PrivateKey
from aitbc_p2p.exceptions import AitbcError, NetworkError
from aitbc_p2p.network.abc import (
    Emit,
    GossipMessage,
    RequestHandler,
    StreamHandler,
    ValidationResult,
    Validator,
    Verdict,
    as_stream_handler,
    check_streaming,
)
from aitbc_p2p.network.limits import Refused, RequestLimits, RequestPolicy
from aitbc_p2p.network.protocols import MAX_FRAME, MAX_SYNC_FRAME, SYNC_PROTOCOL
from aitbc_p2p.network.scoring import Banning, PeerScores, ScoringPolicy

T = TypeVar("T")

logger = logging.getLogger(__name__)

INBOX_SIZE = 4096
"""Messages waiting in one subscription before new ones are dropped (as libp2p's adapter)."""
SEEN = 16384
"""Message ids remembered per peer to drop later copies."""
PREFIX = "/memory/"


def memory_peer_id(key: PrivateKey) -> str:
    """The peer id a key gets on a memory hub: ``mem`` and the head of its address."""
    return "mem" + key.address.removeprefix("aitbc1")[:16]


class _PeerConfig(Protocol):
    """What :meth:`MemoryHub.node_network` reads of a node's config."""

    @property
    def key(self) -> PrivateKey: ...

    @property
    def peer_ceiling(self) -> int: ...


@dataclass
class LinkStats:
    """What one peer sent (gossip and requests together)."""

    messages: int = 0
    bytes: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)


class MemoryHub:
    """The peers of one simulated network and the links between them.

    ``latency_s``: one-way delay of every message, or a function of (from, to) peer ids;
    ``loss``: probability that one gossip transmission is lost (requests are not lost:
    libp2p carries them over a reliable stream); ``seed`` fixes the losses drawn.
    """

    def __init__(
        self,
        *,
        latency_s: float | Callable[[str, str], float] = 0.0,
        loss: float = 0.0,
        seed: int = 0,
        scoring: ScoringPolicy | None = None,
        requests: RequestPolicy | None = None,
    ) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), not {loss}")
        self._latency = latency_s
        self.loss = loss
        self._random = random.Random(seed)
        self.scoring = scoring or ScoringPolicy()
        self.requests = requests or RequestPolicy()
        self.networks: dict[str, MemoryNetwork] = {}
        self._groups: dict[str, int] | None = None

    # ------------------------------------------------------------ links
    def latency(self, a: str, b: str) -> float:
        return self._latency(a, b) if callable(self._latency) else self._latency

    def reachable(self, a: str, b: str) -> bool:
        """Whether ``a`` and ``b`` are on the hub and on the same side of any partition."""
        if a not in self.networks or b not in self.networks:
            return False
        if self._groups is None:
            return True
        return self._groups.get(a, -1) == self._groups.get(b, -1)

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the hub: peers in different groups (peers in none form one more group)
        cannot reach each other, and their connections are cut at once."""
        self._groups = {peer: i for i, group in enumerate(groups) for peer in group}
        for net in list(self.networks.values()):
            for peer in list(net._links):
                if not self.reachable(net.peer_id, peer):
                    net._drop_link(peer)

    def heal(self) -> None:
        """Lift the partition. Connections come back when the peers dial again."""
        self._groups = None

    def lost(self) -> bool:
        return self.loss > 0 and self._random.random() < self.loss

    # ------------------------------------------------------------ peers
    def node_network(self, config: _PeerConfig) -> AbstractAsyncContextManager[MemoryNetwork]:
        """A node's network on this hub: ``open_node(config, network=hub.node_network)``."""
        return self.open_network(config.key, max_peers=config.peer_ceiling)

    @asynccontextmanager
    async def open_network(self, key: PrivateKey, *, max_peers: int = 50) -> AsyncIterator[MemoryNetwork]:
        """Join the hub as ``key``'s peer until the context exits (then its links close)."""
        peer_id = memory_peer_id(key)
        if peer_id in self.networks:
            raise NetworkError(f"{peer_id} is on this hub already")
        async with trio.open_nursery() as nursery:
            net = MemoryNetwork(self, peer_id, nursery, max_peers)
            self.networks[peer_id] = net
            try:
                nursery.start_soon(net._enforce_bans)
                nursery.start_soon(net._deliveries)
                yield net
            finally:
                net.closed = True
                del self.networks[peer_id]
                for peer in list(net._links):
                    net._drop_link(peer)
                nursery.cancel_scope.cancel()


@dataclass
class _Topic:
    validator: Validator[Any]
    inbox: trio.MemorySendChannel[GossipMessage[Any]]


class MemoryNetwork(Banning):
    """One peer's view of a :class:`MemoryHub`; implements :class:`~aitbc_p2p.network.Network`."""

    def __init__(self, hub: MemoryHub, peer_id: str, nursery: trio.Nursery, max_peers: int) -> None:
        self.hub = hub
        self._peer_id = peer_id
        self._nursery = nursery
        self._max_peers = max_peers
        self._links: set[str] = set()
        self._topics: dict[str, _Topic] = {}
        self._handlers: dict[str, tuple[StreamHandler, int | None]] = {}
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self.scores = PeerScores(hub.scoring, trio.current_time)
        self.limits = RequestLimits(hub.requests, trio.current_time)
        self.verdicts: dict[str, int] = {v.value: 0 for v in ValidationResult} | {"graylisted": 0, "duplicate": 0}
        self.sent = LinkStats()
        self.closed = False
        """Set when the peer leaves the hub: nothing more may start in its nursery."""
        self._inbound: list[tuple[float, int, str, GossipMessage[Any]]] = []
        """Gossip on its way here: (due time, order, sender, message), a heap. One task
        delivers it all (:meth:`_deliveries`): a task and a timer per transmission cost
        the simulator most of its time."""
        self._order = itertools.count()
        self._wake = trio.Event()

    # ------------------------------------------------------------ Network
    @property
    def peer_id(self) -> str:
        return self._peer_id

    def listen_addrs(self) -> list[str]:
        return [f"{PREFIX}{self._peer_id}/p2p/{self._peer_id}"]

    def connected_peers(self) -> list[str]:
        return sorted(self._links)

    def discovered(self) -> dict[str, list[str]]:
        return {}

    async def connect(self, addr: str) -> str:
        if not addr.startswith(PREFIX) or "/p2p/" not in addr:
            raise NetworkError(f"cannot connect to {addr}: not a memory address")
        peer = addr.rsplit("/p2p/", 1)[-1]
        await trio.sleep(2 * self.hub.latency(self._peer_id, peer))  # a handshake's round trip
        other = self.hub.networks.get(peer)
        if other is None or peer == self._peer_id or not self.hub.reachable(self._peer_id, peer):
            raise NetworkError(f"cannot connect to {addr}: unreachable")
        if self.banned(peer) or other.banned(self._peer_id):
            raise NetworkError(f"cannot connect to {addr}: refused")
        if peer not in self._links and (len(self._links) >= self._max_peers or len(other._links) >= other._max_peers):
            raise NetworkError(f"cannot connect to {addr}: no room for another connection")
        self._links.add(peer)
        other._links.add(self._peer_id)
        return peer

    async def disconnect(self, peer_id: str) -> None:
        self._drop_link(peer_id)

    def _drop_link(self, peer_id: str) -> None:
        self._links.discard(peer_id)
        other = self.hub.networks.get(peer_id)
        if other is not None:
            other._links.discard(self._peer_id)

    def _cut_off(self, peer_id: str) -> None:
        self._drop_link(peer_id)

    async def _enforce_bans(self) -> None:
        while True:
            await trio.sleep(1)
            for peer in list(self._links):
                if self.banned(peer):
                    self._drop_link(peer)

    # ------------------------------------------------------------ gossip
    async def subscribe(self, topic: str, validator: Validator[T]) -> trio.MemoryReceiveChannel[GossipMessage[T]]:
        send, receive = trio.open_memory_channel[GossipMessage[T]](INBOX_SIZE)
        self._topics[topic] = _Topic(validator, send)
        return receive

    async def publish(self, topic: str, data: bytes) -> None:
        msg_id = hashlib.sha256(data).digest()
        if self._mark_seen(msg_id):
            return  # the same bytes again: one message (content-addressed, as libp2p's adapter)
        msg: GossipMessage[Any] = GossipMessage(topic, bytes(data), self._peer_id, self._peer_id)
        sub = self._topics.get(topic)
        if sub is not None:
            self._deliver(sub, msg)
        self._relay(msg, exclude=())

    def _mark_seen(self, msg_id: bytes) -> bool:
        """Record ``msg_id``; True if it was seen before."""
        if msg_id in self._seen:
            return True
        self._seen[msg_id] = None
        if len(self._seen) > SEEN:
            self._seen.popitem(last=False)
        return False

    def _relay(self, msg: GossipMessage[Any], exclude: Iterable[str]) -> None:
        skip = set(exclude)
        for peer in sorted(self._links):
            if peer in skip:
                continue
            self.sent.messages += 1
            self.sent.bytes += len(msg.data)
            self.sent.by_topic[msg.topic] = self.sent.by_topic.get(msg.topic, 0) + 1
            if self.hub.lost():
                continue
            other = self.hub.networks.get(peer)
            if other is not None and not other.closed:
                other._enqueue(trio.current_time() + self.hub.latency(self._peer_id, peer), self._peer_id, msg)

    def _enqueue(self, due: float, via: str, msg: GossipMessage[Any]) -> None:
        if not self._inbound or due < self._inbound[0][0]:
            self._wake.set()  # earlier than what the delivery task waits for
        heapq.heappush(self._inbound, (due, next(self._order), via, msg))

    async def _deliveries(self) -> None:
        while True:
            if self._inbound and self._inbound[0][0] <= trio.current_time():
                _, _, via, msg = heapq.heappop(self._inbound)
                if via in self._links:  # else the link went down on the way
                    self._receive(via, msg)
                continue
            with trio.move_on_at(self._inbound[0][0] if self._inbound else math.inf):
                await self._wake.wait()
            self._wake = trio.Event()

    def _receive(self, via: str, msg: GossipMessage[Any]) -> None:
        sub = self._topics.get(msg.topic)
        if sub is None:
            return
        if self.scores.graylisted(via):
            self.verdicts["graylisted"] += 1
            self._penalize(via, f"{msg.topic} gossip while graylisted", self.scores.policy.graylisted_message_penalty)
            return
        if self._mark_seen(hashlib.sha256(msg.data).digest()):
            self.verdicts["duplicate"] += 1
            return
        self._nursery.start_soon(self._check, sub, GossipMessage(msg.topic, msg.data, msg.origin, via))

    async def _check(self, sub: _Topic, msg: GossipMessage[Any]) -> None:
        try:
            verdict = await sub.validator(msg.data)
        except Exception:  # a validator's bug drops the message, as libp2p's adapter does
            logger.exception("validator for %s raised", msg.topic)
            return
        result = verdict.result if isinstance(verdict, Verdict) else ValidationResult.REJECT
        self.verdicts[result.value] += 1
        if result is ValidationResult.REJECT:
            self._penalize(msg.via, f"invalid {msg.topic} gossip")
        elif result is ValidationResult.ACCEPT:
            self._deliver(sub, replace(msg, value=verdict.value))
            self._relay(msg, exclude=(msg.via, msg.origin))

    @staticmethod
    def _deliver(sub: _Topic, msg: GossipMessage[Any]) -> None:
        try:
            sub.inbox.send_nowait(msg)
        except trio.WouldBlock:
            logger.warning("inbox for %s full; message dropped (sync repairs gaps)", msg.topic)
        except trio.ClosedResourceError:
            pass

    # ------------------------------------------------------------ requests
    def set_request_handler(self, protocol: str, handler: RequestHandler, *, concurrent: int | None = None) -> None:
        self._handlers[protocol] = (as_stream_handler(protocol, handler), concurrent)

    def set_stream_handler(self, protocol: str, handler: StreamHandler, *, concurrent: int | None = None) -> None:
        check_streaming(protocol)
        self._handlers[protocol] = (handler, concurrent)

    async def request(
        self,
        peer_id: str,
        protocol: str,
        data: bytes,
        *,
        timeout: float = 10.0,
        on_frame: Callable[[bytes], None] | None = None,
    ) -> bytes:
        max_response = MAX_SYNC_FRAME if protocol == SYNC_PROTOCOL else MAX_FRAME
        waiting = [True]  # the requester still reads the stream

        async def emit(frame: bytes) -> None:
            if not waiting[0]:
                raise NetworkError("the stream was reset")
            if len(frame) + 1 > max_response:
                raise NetworkError(f"an interim frame of {len(frame)} bytes exceeds {max_response}")
            if on_frame is not None:
                on_frame(frame)

        if self.hub.networks.get(peer_id) is None or peer_id not in self._links:
            raise NetworkError(f"{protocol} to {peer_id} failed: not connected")
        self.sent.messages += 1
        self.sent.bytes += len(data)
        answer: list[bytes | BaseException] = []
        done = trio.Event()
        latency = self.hub.latency(self._peer_id, peer_id)
        with trio.move_on_after(timeout) as scope:
            await trio.sleep(latency)
            if len(data) > MAX_FRAME:
                raise NetworkError(f"{protocol} to {peer_id} failed: the stream was reset")
            other = self.hub.networks.get(peer_id)
            if other is None or other.closed or peer_id not in self._links:
                raise NetworkError(f"{protocol} to {peer_id} failed: the connection closed")
            # The handler runs in the serving peer's tasks: a caller that gives up does
            # not cancel it, as on a real stream.
            other._nursery.start_soon(other._serve, self._peer_id, protocol, data, answer, done, emit)
            try:
                await done.wait()
            finally:
                waiting[0] = False
            await trio.sleep(latency)
        if scope.cancelled_caught:
            raise NetworkError(f"{protocol} to {peer_id} timed out after {timeout} s")
        result = answer[0]
        if isinstance(result, BaseException):
            raise NetworkError(f"{protocol} to {peer_id} failed: {result}")
        if len(result) > max_response:
            raise NetworkError(
                f"{protocol} to {peer_id} failed: response of {len(result)} bytes exceeds {max_response}"
            )
        return result

    async def _serve(
        self,
        peer: str,
        protocol: str,
        data: bytes,
        answer: list[bytes | BaseException],
        done: trio.Event,
        emit: Emit,
    ) -> None:
        try:
            answer.append(await self._handle_request(peer, protocol, data, emit))
        except BaseException as e:
            answer.append(e if isinstance(e, Exception) else NetworkError("the stream was reset"))
            if not isinstance(e, Exception):
                raise
        finally:
            done.set()

    async def _handle_request(self, peer: str, protocol: str, data: bytes, emit: Emit) -> bytes:
        entry = self._handlers.get(protocol)
        if entry is None or self.banned(peer):
            raise NetworkError("protocol not supported")
        handler, concurrent = entry
        try:
            wait = self.limits.admit(peer, protocol, concurrent=concurrent)
        except Refused as e:
            logger.info("%s from %s refused: %s", protocol, peer, e)
            self._penalize(peer, f"{protocol} flooding", self.limits.policy.over_rate_penalty)
            raise NetworkError("the stream was reset") from e
        try:
            if wait:
                await trio.sleep(wait)
            response = await handler(peer, data, emit)
            self.sent.messages += 1
            self.sent.bytes += len(response)
            return response
        except NetworkError as e:
            logger.info("%s from %s refused: %s", protocol, peer, e)
            raise NetworkError("the stream was reset") from e
        except AitbcError as e:
            logger.info("%s from %s refused: %s: %s", protocol, peer, type(e).__name__, e)
            self._penalize(peer, f"a malformed {protocol} request")
            raise NetworkError("the stream was reset") from e
        except Exception as e:
            logger.exception("%s handler failed on a request from %s", protocol, peer)
            raise NetworkError("the stream was reset") from e
        finally:
            self.limits.release(peer, protocol)


async def connect_all(nets: Iterable[MemoryNetwork], *, degree: int | None = None, seed: int = 0) -> None:
    """Connect the networks: every pair, or (``degree``) each to ``degree`` others at random."""
    nets = list(nets)
    rng = random.Random(seed)
    for i, net in enumerate(nets):
        others = [n for n in nets[i + 1 :]] if degree is None else rng.sample(nets, min(degree + 1, len(nets)))
        for other in others:
            if other is not net:
                await net.connect(other.listen_addrs()[0])


__all__ = ["LinkStats", "MemoryHub", "MemoryNetwork", "connect_all", "memory_peer_id"]
