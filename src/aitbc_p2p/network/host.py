"""The libp2p adapter: TCP + Noise + Yamux, gossipsub, framed request/response streams.

This is the only module that imports libp2p and multiaddr. The host's identity key is
the peer's secp256k1 key, so a peer id names the same key as the peer's address.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.discovery.mdns.mdns import create_mdns_discovery
from libp2p.exceptions import BaseLibp2pError
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.host.ping import perform_ping_roundtrip
from libp2p.network.auto_connector import AutoConnector
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub import gossipsub as libp2p_gossipsub
from libp2p.pubsub import pubsub as libp2p_pubsub
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.pubsub.score import ScoreParams, TopicScoreParams
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux import yamux as libp2p_yamux
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service
from libp2p.transport.tcp import tcp as libp2p_tcp

from aitbc_p2p.codec.framing import HEADER, frame_size
from aitbc_p2p.crypto import PrivateKey
from aitbc_p2p.exceptions import AitbcError, CodecError, NetworkError
from aitbc_p2p.network.abc import (
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
from aitbc_p2p.network.protocols import (
    FINAL,
    INTERIM,
    MAX_FRAME,
    MAX_SYNC_FRAME,
    STREAMING_PROTOCOLS,
    SYNC_PROTOCOL,
    frame,
)
from aitbc_p2p.network.scoring import Banning, PeerScores, ScoringPolicy

T = TypeVar("T")
logger = logging.getLogger(__name__)

GOSSIP_PROTOCOLS = [TProtocol("/meshsub/1.1.0"), TProtocol("/meshsub/1.0.0")]
"""Not /meshsub/1.2.0: in py-libp2p 0.8.1 it costs 2 to 3 times the CPU per message
(IDONTWANT to every mesh peer, a signed peer record on every RPC)."""
INBOX_SIZE = 4096
OUTBOUND_QUEUE_SIZE = 4096
"""RPCs queued per peer before py-libp2p drops (silently, at DEBUG). Its default is 32."""
SUBSCRIPTION_CHANNEL_SIZE = 1024
"""py-libp2p's per-subscription channel (default 32); :meth:`Libp2pNetwork._pump` drains it."""


RECENTLY_ACCEPTED = 4096
MAX_UNDELIVERED = 256
"""Gate values kept per topic for accepted messages not yet handed to the subscriber
(py-libp2p delivers each right after its validator; its queue holds 32). Bounded, as a
block's value is a decoded block: past it the oldest value goes and its message is
dropped on arrival (sync repairs a lost block)."""
"""Message ids remembered per topic to drop late copies (see ``subscribe``)."""
INBOUND_SLOTS = 1 << 30
MAX_CONNECTIONS_PER_PEER = 2
"""Two, not one: peers that dial each other at the same moment briefly hold two."""


class _RoomyRpcQueue(RpcQueue):
    def __init__(self, max_size: int = OUTBOUND_QUEUE_SIZE, **kwargs: Any) -> None:
        super().__init__(max_size, **kwargs)


def _reuse_address_only(sock: Any) -> None:
    """SO_REUSEADDR (a restart may bind the port its last run left in TIME_WAIT) but not
    SO_REUSEPORT, which py-libp2p 0.8.1 sets for hole punching (unused here): with it a
    second peer could listen on a port already in use and share its connections."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


class _SignedRecordMemo:
    """py-libp2p 0.8.1 puts its signed peer record on every pubsub RPC, and the receiver
    parses it, checks its signature and stores its addresses for every RPC: about a
    third of a peer's pubsub CPU at 20 bundles a second. A record is the same bytes
    until the sender's addresses change, so the same bytes from the same peer, accepted
    less than ``ttl_s`` ago, are accepted again without that work. Bounded: the oldest
    entry goes first."""

    def __init__(self, consume: Callable[..., bool], ttl_s: float = 60.0, size: int = 4096) -> None:
        self._consume = consume
        self._ttl_s = ttl_s
        self._size = size
        self._accepted: OrderedDict[tuple[str, str, bytes], float] = OrderedDict()

    def __call__(self, msg: Any, host: Any, peer_id: Any) -> bool:
        if not msg.HasField("senderRecord"):
            return True
        key = (str(host.get_id()), str(peer_id), bytes(msg.senderRecord))
        now = time.monotonic()
        at = self._accepted.get(key)
        if at is not None and now - at < self._ttl_s:
            return True
        ok = bool(self._consume(msg, host, peer_id))
        if ok:
            self._accepted[key] = now
            self._accepted.move_to_end(key)
            while len(self._accepted) > self._size:
                self._accepted.popitem(last=False)
        return ok


def _never() -> bool:
    return False


def _tune_libp2p() -> None:
    """py-libp2p 0.8.1 sizes the outbound queue by a default argument (so its module
    constant does nothing) and the subscription channel by a module constant; both
    drop honest bursts. Replace the names the pubsub module looks up at run time. The
    TCP transport's listen sockets get SO_REUSEADDR only (:func:`_reuse_address_only`)."""
    libp2p_tcp._set_reuse_flags = _reuse_address_only
    if getattr(libp2p_pubsub, "RpcQueue", None) is RpcQueue:
        setattr(libp2p_pubsub, "RpcQueue", _RoomyRpcQueue)  # noqa: B010 (a patch, not an attribute of ours)
    libp2p_pubsub.SUBSCRIPTION_CHANNEL_SIZE = SUBSCRIPTION_CHANNEL_SIZE
    # go-yamux's credit release: a WINDOW_UPDATE once half the window has been read. py-libp2p
    # 0.8.1 also sends one after every read (its PY_YAMUX_RELEASE_ON_READ default), which is
    # an extra frame, encryption and send for each gossip message a peer receives.
    libp2p_yamux._yamux_release_on_read = _never
    consume = getattr(libp2p_pubsub, "maybe_consume_signed_record")  # noqa: B009 (imported there, not exported)
    if not isinstance(consume, _SignedRecordMemo):
        memo = _SignedRecordMemo(consume)
        setattr(libp2p_pubsub, "maybe_consume_signed_record", memo)  # noqa: B010 (a patch, as above)
        setattr(libp2p_gossipsub, "maybe_consume_signed_record", memo)  # noqa: B010


class _GuardedPubsub(Pubsub):
    """py-libp2p's Pubsub with the exception contract of :mod:`aitbc_p2p.network.abc`.

    In py-libp2p 0.8.1 a peer's malformed RPC (five bytes that are not a protobuf)
    raises ``DecodeError`` out of the stream's read loop, through the connection's
    nursery, and ends the process; a message whose fields break its relay path does the
    same from a service task. Here both end in a reset stream and a penalty for the
    sender, never in the node.

    Sequence numbers start at the wall clock in nanoseconds rather than seconds: a
    restarted peer must never reuse the numbers its previous run sent (peers would drop
    its messages as repeats), and at most one number a nanosecond keeps them ahead.
    """

    def __init__(self, *args: Any, on_misbehaviour: Callable[[str, str], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counter = time.time_ns()
        self._on_misbehaviour = on_misbehaviour

    async def stream_handler(self, stream: Any) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            await super().stream_handler(stream)
        except Exception as e:  # noqa: BLE001 (a task edge: what a peer sends never ends the node)
            logger.info("malformed pubsub RPC from %s: %s: %s", peer, type(e).__name__, e)
            self._on_misbehaviour(str(peer), "malformed pubsub RPC")
            await _reset(stream)
            self._handle_dead_peer(peer)

    async def push_msg(self, msg_forwarder: ID, msg: Any) -> None:
        try:
            await super().push_msg(msg_forwarder, msg)
        except Exception as e:  # noqa: BLE001 (a task edge, as above)
            logger.info("pubsub message from %s refused: %s: %s", msg_forwarder, type(e).__name__, e)
            self._on_misbehaviour(str(msg_forwarder), "malformed pubsub message")


class _ContentAddressedGossipSub(GossipSub):
    """GossipSub without py-libp2p 0.8.1's seqno "equivocation" check.

    That check keeps every message ever relayed (a map that never shrinks) and drops,
    with a heavy penalty for the publisher, any message whose (publisher, seqno) was
    seen before with other data: exactly what a restarted peer's messages look like.
    Our message ids are content hashes and every topic validates its payloads, so two
    messages with one seqno are simply two messages.
    """

    def _check_equivocation(self, msg: Any) -> bool:
        return True


class _NoAutoConnector(AutoConnector):
    """py-libp2p's auto-connector dials every peer in the peerstore (inbound peers'
    ephemeral ports, banned peers) up to half its high watermark. The node's peer
    manager dials instead: bootstrap, exchanged and discovered addresses, with backoff,
    bans and a floor (specs/wire.md)."""

    async def maybe_connect(self) -> None:
        return None


def _connection_config(max_peers: int) -> ConnectionConfig:
    """A hard ceiling of ``max_peers`` connections, in and out (the swarm refuses the
    one past it at registration); two at most to one peer; no pruning below it."""
    return ConnectionConfig(
        max_connections=max_peers,
        min_connections=0,
        low_watermark=0,
        high_watermark=max_peers,
        max_connections_per_peer=MAX_CONNECTIONS_PER_PEER,
    )


def _score_params(scores: PeerScores) -> ScoreParams:
    """Gossipsub v1.1 scoring driven by our REJECT penalties (P6, application score).

    P4 (invalid messages) stays at weight 0: py-libp2p counts every failed validation,
    IGNORE included, and IGNORE must cost nothing. Behaviour penalties (IHAVE/IWANT
    spam, GRAFT floods) keep py-libp2p's accounting.
    """
    policy = scores.policy
    return ScoreParams(
        p4_invalid_messages=TopicScoreParams(weight=0.0),
        p5_behavior_penalty_weight=1.0,
        p5_behavior_penalty_threshold=10.0,
        p5_behavior_penalty_decay=0.9,
        p6_appl_slack_weight=1.0,
        app_specific_score_fn=lambda peer: scores.score(str(peer)),
        publish_threshold=policy.graylist_below,
        gossip_threshold=policy.graylist_below / 2,
        graylist_threshold=policy.graylist_below,
        accept_px_threshold=0.0,
    )


_IO_ERRORS = (BaseLibp2pError, OSError, EOFError, trio.BrokenResourceError, trio.ClosedResourceError)


def peer_id_of(key: PrivateKey) -> str:
    """The libp2p peer id of ``key`` (the same key as its aitbc address)."""
    return str(ID.from_pubkey(create_new_key_pair(key.secret).public_key))


_MISSING = object()


def _content_id(msg: Any) -> bytes:
    """Content-addressed message ids: the same bytes published twice are one message."""
    return hashlib.sha256(msg.data).digest()


async def _read_exact(stream: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise NetworkError("stream ended mid-frame")
        buf += chunk
    return bytes(buf)


async def read_frame(stream: Any, max_size: int = MAX_FRAME) -> bytes:
    """Read one length-prefixed frame; an oversized length resets instead of allocating."""
    try:
        size = frame_size(await _read_exact(stream, HEADER), max_size)
    except CodecError as e:
        await stream.reset()
        raise NetworkError(str(e)) from e
    return await _read_exact(stream, size)


@dataclass(frozen=True, slots=True)
class Keepalive:
    """The libp2p ping (``/ipfs/ping/1.0.0``) sent to every connected peer. A TCP
    connection to a host that froze, lost power or dropped off the network stays
    "established" for minutes to hours; a peer that misses ``misses`` pings in a row
    (each unanswered for ``timeout_s``) is disconnected, so the peer floor dials others."""

    interval_s: float = 15.0
    timeout_s: float = 10.0
    misses: int = 2


class Libp2pNetwork(Banning):
    """A running libp2p host with gossipsub. Open it with :func:`open_libp2p_network`."""

    def __init__(
        self,
        host: Any,
        pubsub: Any,
        nursery: trio.Nursery,
        scores: PeerScores,
        discovered: dict[str, list[str]],
        limits: RequestLimits | None = None,
    ) -> None:
        self._host = host
        self._pubsub = pubsub
        self._nursery = nursery
        self.scores = scores
        self.verdicts: dict[str, int] = {v.value: 0 for v in ValidationResult} | {"graylisted": 0, "duplicate": 0}
        """Counts of stateless verdicts on received gossip, of messages dropped unread from
        graylisted peers and of copies that arrived while the first was being checked."""
        self._discovered = discovered
        self.limits = limits or RequestLimits(RequestPolicy(), trio.current_time)
        """Per-peer limits on inbound requests: how many are in service per protocol, and
        their rate over all protocols."""

    def discovered(self) -> dict[str, list[str]]:
        """Peers found by local discovery (mDNS): peer id -> full multiaddrs to dial."""
        return dict(self._discovered)

    @property
    def peer_id(self) -> str:
        return str(self._host.get_id())

    def listen_addrs(self) -> list[str]:
        return [str(a) for a in self._host.get_addrs()]

    def connected_peers(self) -> list[str]:
        return [str(p) for p in self._host.get_connected_peers()]

    async def connect(self, addr: str) -> str:
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            # py-libp2p refuses to dial a peer for 60 s after a failed dial; the caller's
            # backoff (1 s doubling to 60 s) decides when to try again instead.
            self._host.get_network().unblock_peer(info.peer_id)
            await self._host.connect(info)
        except (*_IO_ERRORS, ValueError) as e:
            raise NetworkError(f"cannot connect to {addr}: {e}") from e
        return str(info.peer_id)

    async def disconnect(self, peer_id: str) -> None:
        try:
            await self._host.disconnect(ID.from_base58(peer_id))
        except _IO_ERRORS as e:
            logger.debug("disconnect %s: %s", peer_id, e)

    async def ping(self, peer_id: str, timeout_s: float) -> float | None:
        """One libp2p ping round trip to a connected peer, in seconds; None if it did not
        answer within ``timeout_s`` (or could not open the stream)."""
        with trio.move_on_after(timeout_s):
            try:
                stream = await self._host.new_stream(ID.from_base58(peer_id), [PING_PROTOCOL])
            except (*_IO_ERRORS, BaseLibp2pError, ValueError) as e:
                logger.debug("ping %s: %s", peer_id, e)
                return None
            try:
                start = trio.current_time()
                await perform_ping_roundtrip(stream)
                return trio.current_time() - start
            except (*_IO_ERRORS, BaseLibp2pError, ValueError, trio.TooSlowError) as e:
                logger.debug("ping %s: %s", peer_id, e)
                return None
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    try:
                        await stream.reset()
                    except (*_IO_ERRORS, BaseLibp2pError) as e:
                        logger.debug("closing a ping stream to %s: %s", peer_id, e)
        return None

    async def _keepalive(self, policy: Keepalive) -> None:
        """Ping every connected peer each interval, all at once; drop the ones that miss."""
        missed: dict[str, int] = {}

        async def probe(peer: str) -> None:
            if await self.ping(peer, policy.timeout_s) is not None:
                missed.pop(peer, None)
                return
            missed[peer] = missed.get(peer, 0) + 1
            if missed[peer] >= policy.misses:
                logger.info("peer %s missed %d pings in a row; disconnecting", peer, missed[peer])
                missed.pop(peer, None)
                await self.disconnect(peer)

        while True:
            await trio.sleep(policy.interval_s)
            peers = self.connected_peers()
            for gone in set(missed) - set(peers):
                del missed[gone]
            async with trio.open_nursery() as round_:
                for peer in peers:
                    round_.start_soon(probe, peer)

    def _cut_off(self, peer_id: str) -> None:
        try:
            peer = ID.from_base58(peer_id)
        except ValueError:
            return
        # Not Pubsub.add_to_blacklist: its teardown task resets the peer's stream, then
        # deletes the peer, which the disconnect's dead-peer handler may have deleted
        # while the reset was in flight; the KeyError ended pubsub's service and the node
        # (py-libp2p 0.8.1). The blacklist itself is this set; the disconnect tears down.
        self._pubsub.blacklisted_peers.add(peer)
        self._nursery.start_soon(self.disconnect, peer_id)

    async def subscribe(self, topic: str, validator: Validator[T]) -> trio.MemoryReceiveChannel[GossipMessage[T]]:
        """Subscribe with a stateless gate for what peers forward (our own publishes pass:
        the node checks them first). A graylisted forwarder's messages are dropped
        unread; a REJECT penalizes the forwarder (:class:`PeerScores`). What the gate
        parsed travels to the subscriber on the message."""
        me = self._host.get_id()
        checking: set[bytes] = set()
        accepted: OrderedDict[bytes, None] = OrderedDict()
        """Ids of recently accepted messages (late copies are dropped unchecked)."""
        values: OrderedDict[bytes, Any] = OrderedDict()
        """Each accepted message's gate value, until the message is delivered."""

        def gate(peer: ID) -> bool | None:
            """The answer before reading the message, if there is one: our own publishes
            pass (the node checks them first); a graylisted forwarder's are dropped unread."""
            if peer == me:
                return True
            if not self.scores.graylisted(str(peer)):
                return None
            self.verdicts["graylisted"] += 1
            self._penalize(str(peer), f"{topic} gossip while graylisted", self.scores.policy.graylisted_message_penalty)
            return False

        async def check(peer: ID, msg: Any) -> bool:
            early = gate(peer)
            if early is not None:
                return early
            # py-libp2p 0.8.1 checks its seen-cache before a copy waits for a
            # validator slot and marks a message seen only after its validator
            # returns, so copies from other peers would be checked (signatures and
            # all), delivered and relayed again. The first copy decides; the others
            # are dropped (as IGNORE: no penalty).
            msg_id = _content_id(msg)
            if msg_id in checking or msg_id in accepted:
                self.verdicts["duplicate"] += 1
                return False
            checking.add(msg_id)
            try:
                verdict = await validator(bytes(msg.data))
            except Exception:
                logger.exception("validator for %s raised", topic)
                return False
            finally:
                checking.discard(msg_id)
            result = verdict.result if isinstance(verdict, Verdict) else ValidationResult.REJECT
            self.verdicts[result.value] += 1
            if result is ValidationResult.REJECT and peer != me:
                self._penalize(str(peer), f"invalid {topic} gossip")
            if result is not ValidationResult.ACCEPT:
                return False
            accepted[msg_id] = None
            if len(accepted) > RECENTLY_ACCEPTED:
                accepted.popitem(last=False)
            values[msg_id] = verdict.value
            if len(values) > MAX_UNDELIVERED:
                values.popitem(last=False)
            return True

        self._pubsub.set_topic_validator(topic, check, True)
        sub = await self._pubsub.subscribe(topic)
        send, receive = trio.open_memory_channel[GossipMessage[T]](INBOX_SIZE)
        self._nursery.start_soon(self._pump, topic, sub, send, values)
        return receive

    async def _enforce_bans(self) -> None:
        """Keep banned peers off (they may dial back) and lift bans once served."""
        while True:
            await trio.sleep(1)
            banned = set(self.scores.banned_peers())
            for peer_id in list(self._pubsub.blacklisted_peers):
                if str(peer_id) not in banned:
                    self._pubsub.remove_from_blacklist(peer_id)
            for peer in self.connected_peers():
                if peer in banned:
                    await self.disconnect(peer)

    async def _pump(
        self, topic: str, sub: Any, send: trio.MemorySendChannel[GossipMessage[T]], values: OrderedDict[bytes, Any]
    ) -> None:
        # libp2p's subscription buffer is small (32); drain it at once into our own inbox.
        me = self._host.get_id()
        async with send:
            while True:
                msg = await sub.get()
                try:
                    origin_id = ID(msg.from_id) if msg.from_id else None
                except (ValueError, TypeError):
                    origin_id = None
                value = None
                if origin_id != me:
                    value = values.pop(_content_id(msg), _MISSING)
                    if value is _MISSING:  # its value was dropped to stay bounded (never in practice)
                        logger.warning("a %s message arrived without its gate's verdict; dropped", topic)
                        continue
                item = GossipMessage(topic, bytes(msg.data), str(origin_id or ""), str(origin_id or ""), value)
                try:
                    send.send_nowait(item)
                except trio.WouldBlock:
                    logger.warning("inbox for %s full; message dropped (sync repairs gaps)", topic)

    async def publish(self, topic: str, data: bytes) -> None:
        try:
            await self._pubsub.publish(topic, data)
        except _IO_ERRORS as e:
            raise NetworkError(f"publish on {topic} failed: {e}") from e

    def set_request_handler(self, protocol: str, handler: RequestHandler, *, concurrent: int | None = None) -> None:
        """Serve ``protocol`` with ``handler``, within each peer's request limits
        (:mod:`aitbc_p2p.network.limits`; ``concurrent``: requests of one peer in service
        at once, default the policy's). Whatever the peer sends, the worst outcome is a
        reset stream and a penalty for that peer (the contract in network/abc.py)."""
        self._serve(protocol, as_stream_handler(protocol, handler), concurrent)

    def set_stream_handler(self, protocol: str, handler: StreamHandler, *, concurrent: int | None = None) -> None:
        check_streaming(protocol)
        self._serve(protocol, handler, concurrent)

    def _serve(self, protocol: str, handler: StreamHandler, concurrent: int | None) -> None:
        max_request = MAX_FRAME
        streaming = protocol in STREAMING_PROTOCOLS

        async def on_stream(stream: Any) -> None:
            peer = str(stream.muxed_conn.peer_id)
            try:
                wait = self.limits.admit(peer, protocol, concurrent=concurrent)
            except Refused as e:
                logger.info("%s from %s refused: %s", protocol, peer, e)
                self._penalize(peer, f"{protocol} flooding", self.limits.policy.over_rate_penalty)
                await _reset(stream)
                return
            try:
                if wait:  # slowed, not penalized: an honest burst (many jobs at once) waits its turn
                    await trio.sleep(wait)
                request = await read_frame(stream, max_request)

                async def emit(data: bytes) -> None:
                    try:
                        await stream.write(frame(INTERIM + data))
                    except _IO_ERRORS as e:
                        raise NetworkError(f"{protocol} stream to {peer} closed: {e}") from e

                response = await handler(peer, request, emit)
                await stream.write(frame(FINAL + response if streaming else response))
                await stream.close()
            except NetworkError as e:
                logger.info("%s from %s refused: %s", protocol, peer, e)
                await _reset(stream)
            except _IO_ERRORS as e:
                logger.debug("%s stream from %s failed: %s", protocol, peer, e)
                await _reset(stream)
            except AitbcError as e:  # the peer's request broke a rule of ours: its fault
                logger.info("%s from %s refused: %s: %s", protocol, peer, type(e).__name__, e)
                self._penalize(peer, f"a malformed {protocol} request")
                await _reset(stream)
            except Exception:  # a task edge: a bug of ours must not end the node either
                logger.exception("%s handler failed on a request from %s", protocol, peer)
                await _reset(stream)
            finally:
                self.limits.release(peer, protocol)

        self._host.set_stream_handler(TProtocol(protocol), on_stream)

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
        streaming = protocol in STREAMING_PROTOCOLS
        stream = None
        try:
            with trio.fail_after(timeout):
                stream = await self._host.new_stream(ID.from_base58(peer_id), [TProtocol(protocol)])
                await stream.write(frame(data))
                response = await read_frame(stream, max_response)
                while streaming and response[:1] == INTERIM:
                    if on_frame is not None:
                        on_frame(response[1:])
                    response = await read_frame(stream, max_response)
                if streaming:
                    if response[:1] != FINAL:
                        raise NetworkError(f"{protocol} from {peer_id}: a frame of unknown kind")
                    response = response[1:]
                await stream.close()
                return response
        except trio.TooSlowError as e:
            if stream is not None:
                await _reset(stream)
            raise NetworkError(f"{protocol} to {peer_id} timed out after {timeout} s") from e
        except (*_IO_ERRORS, ValueError) as e:
            if stream is not None:
                await _reset(stream)
            raise NetworkError(f"{protocol} to {peer_id} failed: {e}") from e


async def _reset(stream: Any) -> None:
    try:
        await stream.reset()
    except _IO_ERRORS:
        pass


@asynccontextmanager
async def open_libp2p_network(
    key: PrivateKey,
    listen: list[str],
    *,
    scoring: ScoringPolicy | None = None,
    requests: RequestPolicy | None = None,
    max_peers: int = 50,
    mdns: str | None = None,
    keepalive: Keepalive | None = Keepalive(),
) -> AsyncIterator[Libp2pNetwork]:
    """Start a libp2p host on ``listen`` multiaddrs (e.g. ``/ip4/127.0.0.1/tcp/0``).

    Only Noise (security) and Yamux (muxer) are offered: a peer that offers only
    plaintext or SECIO fails to negotiate. At most ``max_peers`` connections are held,
    inbound and outbound together. ``mdns``, when given, announces this host on the LAN
    under that name (at most 10 characters; peers of one chain share it) and records
    the peers it hears in :meth:`Libp2pNetwork.discovered`. ``keepalive`` pings every
    connected peer and drops the ones that stop answering (None: never). Everything stops
    when the context exits.
    """
    if max_peers < 1:
        raise NetworkError(f"max_peers must be at least 1, not {max_peers}")
    if mdns is not None and not (0 < len(mdns) <= 10 and mdns.isalnum()):
        raise NetworkError(f"mdns name must be 1 to 10 letters or digits, not {mdns!r}")
    _tune_libp2p()
    scores = PeerScores(scoring or ScoringPolicy(), trio.current_time)
    key_pair = create_new_key_pair(key.secret)
    host = new_host(
        key_pair=key_pair,
        sec_opt={
            TProtocol(NOISE_PROTOCOL_ID): NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
        },
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        connection_config=_connection_config(max_peers),
    )
    swarm: Any = host.get_network()  # a Swarm; typed as its interface
    swarm.auto_connector = _NoAutoConnector(swarm)
    # py-libp2p 0.8.1 holds an inbound slot until the swarm stops, not until the
    # connection closes, so its inbound limiter would refuse everyone after max_peers
    # inbound connections in a lifetime. The live count is capped at registration.
    swarm._inbound_limiter.total_tokens = INBOUND_SLOTS
    if mdns is not None:
        # BasicHost starts and stops what it holds here with the host.
        setattr(host, "mDNS", create_mdns_discovery(swarm, private_network_fingerprint=mdns, host=host))  # noqa: B010
    gossipsub = _ContentAddressedGossipSub(
        protocols=GOSSIP_PROTOCOLS,
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=1,
        # Spam protection counts our own publishes too and drops honest bursts; peer
        # scoring (REJECT penalties) replaces it.
        spam_protection_enabled=False,
        score_params=_score_params(scores),
    )
    running: list[Libp2pNetwork] = []

    def on_misbehaviour(peer: str, what: str) -> None:
        if running:
            running[0]._penalize(peer, what)

    pubsub = _GuardedPubsub(host, gossipsub, msg_id_constructor=_content_id, on_misbehaviour=on_misbehaviour)
    try:
        addrs = [multiaddr.Multiaddr(a) for a in listen]
    except (ValueError, BaseLibp2pError) as e:
        raise NetworkError(f"bad listen address: {e}") from e
    # py-libp2p 0.8.1's service contexts swallow an exception raised in the body (their
    # shutdown cancels the scope it travels through), so keep it and raise it after them.
    failure: BaseException | None = None
    discovered: dict[str, list[str]] = {}
    me = str(host.get_id())

    def on_discovered(info: PeerInfo) -> None:
        # Called from zeroconf's thread, for every host in this process: one atomic store.
        peer = str(info.peer_id)
        if mdns is not None and peer != me:
            discovered[peer] = [f"{a}/p2p/{peer}" for a in info.addrs if "/p2p/" not in str(a)]

    # Registered before the host runs, so what mDNS hears at once is not missed.
    peerDiscovery.register_peer_discovered_handler(on_discovered)
    try:
        async with (
            host.run(addrs),
            trio.open_nursery() as nursery,
            background_trio_service(pubsub),
            background_trio_service(gossipsub),
        ):
            await pubsub.wait_until_ready()
            limits = RequestLimits(requests or RequestPolicy(), trio.current_time)
            network = Libp2pNetwork(host, pubsub, nursery, scores, discovered, limits)
            running.append(network)
            try:
                # py-libp2p logs a failed bind and goes on without that address.
                unbound = [str(a) for a in addrs if str(a) not in swarm.listeners]
                if unbound:
                    raise NetworkError(f"cannot listen on {', '.join(unbound)}: address in use or unavailable")
                nursery.start_soon(network._enforce_bans)
                if keepalive is not None:
                    nursery.start_soon(network._keepalive, keepalive)
                yield network
            except BaseException as e:
                failure = e
                raise
            finally:
                nursery.cancel_scope.cancel()
                # Close the connections while pubsub still runs: a subscription message
                # that arrives after its service stopped makes py-libp2p 0.8.1 start a
                # task in a closed nursery, and that error tears down the host's exit.
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    for peer in network.connected_peers():
                        await network.disconnect(peer)
                    # py-libp2p 0.8.1 leaves its listening sockets open when the host
                    # stops, so a restart in the same process could not bind its port.
                    for listener in list(swarm.listeners.values()):
                        try:
                            await listener.close()
                        except (*_IO_ERRORS, BaseLibp2pError) as e:
                            logger.debug("closing listener: %s", e)
    finally:
        peerDiscovery.unregister_peer_discovered_handler(on_discovered)
    if failure is not None:
        raise failure
