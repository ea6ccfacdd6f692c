"""The libp2p adapter: TCP + Noise + Yamux, gossipsub, framed request/response streams.

This is the only module that imports libp2p and multiaddr. The host's identity key is
the peer's secp256k1 key, so a peer id names the same key as the peer's address.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from aitbc_p2p.crypto import PrivateKey
from aitbc_p2p.exceptions import NetworkError
from aitbc_p2p.network.abc import GossipMessage, RequestHandler, Validator
from aitbc_p2p.network.protocols import MAX_FRAME, MAX_SYNC_FRAME, SYNC_PROTOCOL, frame

logger = logging.getLogger(__name__)

GOSSIP_PROTOCOLS = [TProtocol("/meshsub/1.1.0"), TProtocol("/meshsub/1.0.0")]
INBOX_SIZE = 4096
_IO_ERRORS = (BaseLibp2pError, OSError, EOFError, trio.BrokenResourceError, trio.ClosedResourceError)


def peer_id_of(key: PrivateKey) -> str:
    """The libp2p peer id of ``key`` (the same key as its aitbc address)."""
    return str(ID.from_pubkey(create_new_key_pair(key.secret).public_key))


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
    size = int.from_bytes(await _read_exact(stream, 4), "big")
    if size > max_size:
        await stream.reset()
        raise NetworkError(f"frame of {size} bytes exceeds {max_size}")
    return await _read_exact(stream, size)


class Libp2pNetwork:
    """A running libp2p host with gossipsub. Open it with :func:`open_libp2p_network`."""

    def __init__(self, host: Any, pubsub: Any, nursery: trio.Nursery) -> None:
        self._host = host
        self._pubsub = pubsub
        self._nursery = nursery

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
            await self._host.connect(info)
        except (*_IO_ERRORS, ValueError) as e:
            raise NetworkError(f"cannot connect to {addr}: {e}") from e
        return str(info.peer_id)

    async def disconnect(self, peer_id: str) -> None:
        try:
            await self._host.disconnect(ID.from_base58(peer_id))
        except _IO_ERRORS as e:
            logger.debug("disconnect %s: %s", peer_id, e)

    async def subscribe(self, topic: str, validator: Validator) -> trio.MemoryReceiveChannel[GossipMessage]:
        def check(_peer: ID, msg: Any) -> bool:
            try:
                return bool(validator(bytes(msg.data)))
            except Exception:
                logger.exception("validator for %s raised", topic)
                return False

        self._pubsub.set_topic_validator(topic, check, False)
        sub = await self._pubsub.subscribe(topic)
        send, receive = trio.open_memory_channel[GossipMessage](INBOX_SIZE)
        self._nursery.start_soon(self._pump, topic, sub, send)
        return receive

    async def _pump(self, topic: str, sub: Any, send: trio.MemorySendChannel[GossipMessage]) -> None:
        # libp2p's subscription buffer is small (32); drain it at once into our own inbox.
        async with send:
            while True:
                msg = await sub.get()
                try:
                    origin = str(ID(msg.from_id)) if msg.from_id else ""
                except (ValueError, TypeError):
                    origin = ""
                item = GossipMessage(topic, bytes(msg.data), origin, origin)
                try:
                    send.send_nowait(item)
                except trio.WouldBlock:
                    logger.warning("inbox for %s full; message dropped (sync repairs gaps)", topic)

    async def publish(self, topic: str, data: bytes) -> None:
        try:
            await self._pubsub.publish(topic, data)
        except _IO_ERRORS as e:
            raise NetworkError(f"publish on {topic} failed: {e}") from e

    def set_request_handler(self, protocol: str, handler: RequestHandler) -> None:
        max_request = MAX_FRAME

        async def on_stream(stream: Any) -> None:
            peer = str(stream.muxed_conn.peer_id)
            try:
                request = await read_frame(stream, max_request)
                response = await handler(peer, request)
                await stream.write(frame(response))
                await stream.close()
            except NetworkError as e:
                logger.info("%s from %s refused: %s", protocol, peer, e)
                await _reset(stream)
            except _IO_ERRORS as e:
                logger.debug("%s stream from %s failed: %s", protocol, peer, e)
                await _reset(stream)

        self._host.set_stream_handler(TProtocol(protocol), on_stream)

    async def request(self, peer_id: str, protocol: str, data: bytes, *, timeout: float = 10.0) -> bytes:
        max_response = MAX_SYNC_FRAME if protocol == SYNC_PROTOCOL else MAX_FRAME
        stream = None
        try:
            with trio.fail_after(timeout):
                stream = await self._host.new_stream(ID.from_base58(peer_id), [TProtocol(protocol)])
                await stream.write(frame(data))
                response = await read_frame(stream, max_response)
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
async def open_libp2p_network(key: PrivateKey, listen: list[str]) -> AsyncIterator[Libp2pNetwork]:
    """Start a libp2p host on ``listen`` multiaddrs (e.g. ``/ip4/127.0.0.1/tcp/0``).

    Only Noise (security) and Yamux (muxer) are offered: a peer that offers only
    plaintext or SECIO fails to negotiate. Everything stops when the context exits.
    """
    key_pair = create_new_key_pair(key.secret)
    host = new_host(
        key_pair=key_pair,
        sec_opt={
            TProtocol(NOISE_PROTOCOL_ID): NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
        },
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
    )
    gossipsub = GossipSub(
        protocols=GOSSIP_PROTOCOLS,
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=1,
        # Spam protection counts our own publishes too and drops honest bursts; peer
        # scoring replaces it (issue: networking).
        spam_protection_enabled=False,
    )
    pubsub = Pubsub(host, gossipsub, msg_id_constructor=_content_id)
    try:
        addrs = [multiaddr.Multiaddr(a) for a in listen]
    except (ValueError, BaseLibp2pError) as e:
        raise NetworkError(f"bad listen address: {e}") from e
    # py-libp2p 0.8.1's service contexts swallow an exception raised in the body (their
    # shutdown cancels the scope it travels through), so keep it and raise it after them.
    failure: BaseException | None = None
    async with (
        host.run(addrs),
        trio.open_nursery() as nursery,
        background_trio_service(pubsub),
        background_trio_service(gossipsub),
    ):
        await pubsub.wait_until_ready()
        try:
            yield Libp2pNetwork(host, pubsub, nursery)
        except BaseException as e:
            failure = e
            raise
        finally:
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
