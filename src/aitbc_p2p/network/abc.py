"""The network seam the node uses: gossip topics and request/response protocols.

The exception contract, which every adapter keeps (specs/wire.md, "What a peer can do
to a node"): nothing a remote peer sends (a frame, an RPC, a gossiped message, a
request) ends the node or a task of it. The worst it earns is a reset stream, a
dropped message, a lower score, a graylist or a ban, for that peer alone:

* a :data:`Validator` or :data:`RequestHandler` that raises is the end of that message
  or stream; an :class:`~aitbc_p2p.exceptions.AitbcError` from a request handler counts
  as a REJECT against the peer, any other exception is logged as a bug of ours;
* malformed transport or gossip frames reset the stream and penalize the sender;
* each peer's inbound requests are limited in number and rate (see
  :mod:`aitbc_p2p.network.limits`); a peer that keeps flooding is banned.

Callers of :meth:`Network.request` and :meth:`Network.publish` get
:class:`~aitbc_p2p.exceptions.NetworkError` and nothing else for the network's failures.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import trio

from aitbc_p2p.network.protocols import STREAMING_PROTOCOLS

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GossipMessage(Generic[T]):
    topic: str
    data: bytes
    origin: str  # peer id of the publisher
    via: str  # peer id we received it from
    value: T | None = None
    """What the topic's validator parsed from ``data`` (its :class:`Verdict`'s value);
    None for this peer's own publishes, which no validator sees."""


class ValidationResult(enum.Enum):
    """What the stateless gate makes of a gossiped message (specs/topics.md).

    ACCEPT: deliver and relay. IGNORE: maybe honest (a duplicate, a future nonce, an
    unknown parent): neither deliver nor relay, no penalty. REJECT: provably bad (a bad
    signature, another chain, malformed bytes): neither deliver nor relay, and the peer
    that forwarded it is penalized.
    """

    ACCEPT = "accept"
    IGNORE = "ignore"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Verdict(Generic[T]):
    """A validator's answer: the result and, when accepted, what it parsed, which the
    topic's subscriber receives as :attr:`GossipMessage.value` (decoded and checked
    once, off the handler's path)."""

    result: ValidationResult
    value: T | None = None


def accept(value: T) -> Verdict[T]:
    return Verdict(ValidationResult.ACCEPT, value)


IGNORE: Verdict[Any] = Verdict(ValidationResult.IGNORE)
REJECT: Verdict[Any] = Verdict(ValidationResult.REJECT)

Validator = Callable[[bytes], Awaitable[Verdict[T]]]
"""The stateless gate of a topic, run before a message is delivered or relayed: decode,
size, signature. Gates run concurrently (e.g. signature batches in worker processes)."""

RequestHandler = Callable[[str, bytes], Awaitable[bytes]]
Emit = Callable[[bytes], Awaitable[None]]
"""Send one interim frame on a streaming protocol's response (NetworkError once the
requester is gone)."""
StreamHandler = Callable[[str, bytes, Emit], Awaitable[bytes]]
"""Serves a streaming protocol: may ``emit`` interim frames before it returns the answer."""


def as_stream_handler(protocol: str, handler: RequestHandler) -> StreamHandler:
    """``handler`` for a protocol that does not stream, in the shape adapters serve every
    protocol in (it never emits). ValueError for a streaming protocol."""
    if protocol in STREAMING_PROTOCOLS:
        raise ValueError(f"{protocol} streams: serve it with set_stream_handler")

    async def answer(peer: str, request: bytes, _emit: Emit) -> bytes:
        return await handler(peer, request)

    return answer


def check_streaming(protocol: str) -> None:
    """ValueError unless ``protocol`` is a streaming one (for set_stream_handler)."""
    if protocol not in STREAMING_PROTOCOLS:
        raise ValueError(f"{protocol} does not stream: serve it with set_request_handler")
"""``(peer_id, request) -> response`` for one request/response protocol."""


class Network(Protocol):
    @property
    def peer_id(self) -> str: ...

    def listen_addrs(self) -> list[str]:
        """Full multiaddrs (with /p2p/<id>) that other peers can dial."""
        ...

    def connected_peers(self) -> list[str]: ...

    def discovered(self) -> dict[str, list[str]]:
        """Peers found by local discovery (mDNS): peer id -> full multiaddrs to dial."""
        ...

    async def connect(self, addr: str) -> str:
        """Dial a full multiaddr; returns the remote peer id. Raises NetworkError."""
        ...

    async def disconnect(self, peer_id: str) -> None: ...

    def ban(self, peer_id: str, reason: str) -> None:
        """Disconnect ``peer_id`` and refuse it for the ban period (the one ban list,
        shared with gossip scoring)."""
        ...

    def banned(self, peer_id: str) -> bool: ...

    def penalize(self, peer_id: str, reason: str) -> None:
        """Count one REJECT against ``peer_id`` for something the node found invalid
        after the gate (e.g. a block that its publisher signed and the chain refuses)."""
        ...

    async def subscribe(self, topic: str, validator: Validator[T]) -> trio.MemoryReceiveChannel[GossipMessage[T]]:
        """Messages of ``topic`` that ``validator`` accepted (with what it parsed), and
        this peer's own publishes (without)."""
        ...

    async def publish(self, topic: str, data: bytes) -> None: ...

    def set_request_handler(self, protocol: str, handler: RequestHandler, *, concurrent: int | None = None) -> None:
        """Serve ``protocol``; ``concurrent``: requests of one peer in service at once
        (default the adapter's policy; more for protocols whose requests last long)."""
        ...

    def set_stream_handler(self, protocol: str, handler: StreamHandler, *, concurrent: int | None = None) -> None:
        """Serve a streaming protocol (one of protocols.STREAMING_PROTOCOLS): the handler
        may send interim frames before its answer (specs/wire.md, "Streaming responses")."""
        ...

    async def request(
        self,
        peer_id: str,
        protocol: str,
        data: bytes,
        *,
        timeout: float = 10.0,
        on_frame: Callable[[bytes], None] | None = None,
    ) -> bytes:
        """Send one framed request on a new stream and read one framed response; on a
        streaming protocol, ``on_frame`` gets each interim frame before it, in order.
        ``timeout`` bounds the whole exchange."""
        ...
