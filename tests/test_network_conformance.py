"""One contract, two adapters: every test here runs against libp2p on 127.0.0.1 and
against the in-memory network (network/abc.py, specs/wire.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio

from aitbc_p2p.exceptions import MarketError, NetworkError
from aitbc_p2p.network import JOB_PROTOCOL, MAX_FRAME, ValidationResult, Verdict, accept, open_libp2p_network
from aitbc_p2p.network.memory import MemoryHub
from aitbc_p2p.network.protocols import topic
from aitbc_p2p.network.scoring import ScoringPolicy
from aitbc_p2p.testing import gate, make_key

T = topic("ait-devnet", "tx")
Opener = Callable[[int], Any]


@pytest.fixture(params=["libp2p", "memory"])
def open_peers(request: pytest.FixtureRequest) -> Opener:
    """``open_peers(n)``: n networks, not yet connected (a fast ban policy for both)."""
    scoring = ScoringPolicy(ban_s=600)

    @asynccontextmanager
    async def opener(n: int) -> AsyncIterator[list[Any]]:
        async with AsyncExitStack() as stack:
            if request.param == "libp2p":
                nets = [
                    await stack.enter_async_context(
                        open_libp2p_network(make_key(f"c{i}"), ["/ip4/127.0.0.1/tcp/0"], scoring=scoring)
                    )
                    for i in range(n)
                ]
            else:
                hub = MemoryHub(scoring=scoring)
                nets = [await stack.enter_async_context(hub.open_network(make_key(f"c{i}"))) for i in range(n)]
            yield nets

    return opener


async def receive_while_publishing(sender: Any, inbox: Any, data: bytes, *, also: bytes | None = None) -> Any:
    """Publish until the message arrives (libp2p's mesh forms within a heartbeat or two)."""
    attempt = 0
    while True:
        attempt += 1
        if also is not None:
            await sender.publish(T, also + attempt.to_bytes(4, "big"))
        await sender.publish(T, data + attempt.to_bytes(4, "big"))
        with trio.move_on_after(0.5):
            return await inbox.receive()


async def test_gossip_is_delivered_with_its_publisher_and_a_rejected_message_is_not(open_peers: Opener) -> None:
    with trio.fail_after(30):
        async with open_peers(2) as (a, b):
            inbox = await b.subscribe(T, gate(lambda data: not data.startswith(b"bad")))
            await a.subscribe(T, gate(lambda data: True))
            assert await a.connect(b.listen_addrs()[0]) == b.peer_id
            assert b.peer_id in a.connected_peers() and a.peer_id in b.connected_peers()
            msg = await receive_while_publishing(a, inbox, b"good", also=b"bad")
            assert msg.data.startswith(b"good") and msg.origin == a.peer_id and msg.topic == T
            assert b.scores.score(a.peer_id) < 0  # each "bad" copy was a REJECT against a


async def test_a_delivered_message_carries_its_gate_s_value_and_an_own_publish_none(open_peers: Opener) -> None:
    """The validator's parsed value reaches the subscriber on the message, so nothing is
    parsed twice; each peer parses for itself (a relayed message carries nobody's value)."""
    seen: list[bytes] = []

    async def parse(data: bytes) -> Verdict[tuple[str, int]]:
        seen.append(data)
        return accept(("parsed", len(data)))

    with trio.fail_after(30):
        async with open_peers(2) as (a, b):
            inbox_b = await b.subscribe(T, parse)
            inbox_a = await a.subscribe(T, gate(lambda data: True))
            await a.connect(b.listen_addrs()[0])
            msg = await receive_while_publishing(a, inbox_b, b"payload")
            assert msg.value == ("parsed", len(msg.data)) and msg.data in seen
            own = await inbox_a.receive()
            assert own.origin == a.peer_id and own.value is None  # a's own publish: no gate ran


async def test_an_ignored_message_costs_nothing_and_goes_no_further(open_peers: Opener) -> None:
    with trio.fail_after(30):
        async with open_peers(3) as (a, b, c):
            await a.subscribe(T, gate(lambda data: True))
            await b.subscribe(T, gate(lambda data: ValidationResult.IGNORE if data.startswith(b"skip") else True))
            inbox_c = await c.subscribe(T, gate(lambda data: True))
            await a.connect(b.listen_addrs()[0])
            await b.connect(c.listen_addrs()[0])
            # a and c are not connected: c hears a only through b, which relays what it accepts.
            msg = await receive_while_publishing(a, inbox_c, b"relayed", also=b"skip")
            assert msg.data.startswith(b"relayed") and msg.origin == a.peer_id
            await trio.sleep(0.5)
            while True:
                try:
                    late = inbox_c.receive_nowait()
                except trio.WouldBlock:
                    break
                assert not late.data.startswith(b"skip"), "b relayed a message it ignored"
            assert b.scores.score(a.peer_id) == 0


async def test_a_peer_that_keeps_sending_invalid_gossip_is_banned_and_cut_off(open_peers: Opener) -> None:
    with trio.fail_after(60):
        async with open_peers(2) as (a, b):
            await a.subscribe(T, gate(lambda data: True))
            inbox = await b.subscribe(T, gate(lambda data: ValidationResult.REJECT))
            await a.connect(b.listen_addrs()[0])
            n = 0
            while not b.banned(a.peer_id):
                n += 1
                await a.publish(T, b"junk %d" % n)
                await trio.sleep(0.05)
            assert inbox.statistics().current_buffer_used == 0
            with trio.fail_after(10):
                while a.peer_id in b.connected_peers():
                    await trio.sleep(0.05)
            with pytest.raises(NetworkError):
                await a.connect(b.listen_addrs()[0])
                # libp2p may complete the dial before b drops it: a banned peer gets no service.
                await a.request(b.peer_id, "/test/1", b"x", timeout=2)


async def test_requests_are_answered_and_a_handler_refusing_input_costs_the_requester(open_peers: Opener) -> None:
    with trio.fail_after(30):
        async with open_peers(2) as (a, b):

            async def upper(peer: str, data: bytes) -> bytes:
                assert peer == a.peer_id
                if data == b"bad":
                    raise MarketError("not a job")
                if data == b"busy":
                    raise NetworkError("try later")
                return data.upper()

            b.set_request_handler("/test/1", upper)
            await a.connect(b.listen_addrs()[0])
            assert await a.request(b.peer_id, "/test/1", b"ping") == b"PING"
            with pytest.raises(NetworkError):
                await a.request(b.peer_id, "/test/1", b"busy")
            assert b.scores.score(a.peer_id) == 0  # a NetworkError from a handler is no one's fault
            with pytest.raises(NetworkError):
                await a.request(b.peer_id, "/test/1", b"bad")
            assert b.scores.score(a.peer_id) < 0
            with pytest.raises(NetworkError):
                await a.request(b.peer_id, "/test/unknown", b"ping")
            assert await a.request(b.peer_id, "/test/1", b"again") == b"AGAIN"


async def test_an_oversized_request_or_a_slow_handler_is_a_network_error(open_peers: Opener) -> None:
    with trio.fail_after(30):
        async with open_peers(2) as (a, b):
            calls: list[int] = []

            async def slow(peer: str, data: bytes) -> bytes:
                calls.append(len(data))
                await trio.sleep(5)
                return b"late"

            b.set_request_handler("/test/slow", slow)
            await a.connect(b.listen_addrs()[0])
            with pytest.raises(NetworkError):
                await a.request(b.peer_id, "/test/slow", bytes(MAX_FRAME + 1))
            assert calls == []  # refused before the handler saw it
            with pytest.raises(NetworkError, match="timed out"):
                await a.request(b.peer_id, "/test/slow", b"x", timeout=0.5)


async def test_requests_over_the_per_peer_concurrency_are_refused(open_peers: Opener) -> None:
    with trio.fail_after(30):
        async with open_peers(2) as (a, b):
            release = trio.Event()

            async def hold(peer: str, data: bytes) -> bytes:
                await release.wait()
                return b"done"

            b.set_request_handler("/test/hold", hold, concurrent=1)
            await a.connect(b.listen_addrs()[0])
            results: list[bytes | str] = []

            async def ask() -> None:
                try:
                    results.append(await a.request(b.peer_id, "/test/hold", b"x", timeout=10))
                except NetworkError:
                    results.append("refused")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                await trio.sleep(0.5)  # the first is in service
                nursery.start_soon(ask)
                await trio.sleep(0.5)
                release.set()
            assert sorted(results, key=str) == [b"done", "refused"]


async def test_a_streaming_protocol_sends_interim_frames_in_order_before_its_answer(open_peers: Opener) -> None:
    """The job protocol's answer may be preceded by interim frames (a job's progress);
    a requester that gave up makes the handler's next emit fail, and the handler goes on."""
    with trio.fail_after(30):
        async with open_peers(2) as (a, b):
            left: list[str] = []
            gone = trio.Event()

            async def count(peer: str, data: bytes, emit: Any) -> bytes:
                n = int(data)
                for i in range(n):
                    await emit(b"frame %d" % i)
                if n == 0:  # the requester gives up after one frame
                    await emit(b"first")
                    await trio.sleep(1)
                    try:
                        await emit(b"second")
                    except NetworkError:
                        left.append("refused")
                    gone.set()
                return b"done %d" % n

            b.set_stream_handler(JOB_PROTOCOL, count)
            with pytest.raises(ValueError, match="set_stream_handler"):
                b.set_request_handler(JOB_PROTOCOL, lambda peer, data: data)
            with pytest.raises(ValueError, match="set_request_handler"):
                b.set_stream_handler("/test/1", count)
            await a.connect(b.listen_addrs()[0])
            frames: list[bytes] = []
            assert await a.request(b.peer_id, JOB_PROTOCOL, b"50", on_frame=frames.append) == b"done 50"
            assert frames == [b"frame %d" % i for i in range(50)]
            assert await a.request(b.peer_id, JOB_PROTOCOL, b"3") == b"done 3"  # frames nobody asked for are skipped
            first: list[bytes] = []
            with pytest.raises(NetworkError, match="timed out"):
                await a.request(b.peer_id, JOB_PROTOCOL, b"0", timeout=0.5, on_frame=first.append)
            await gone.wait()
            assert first == [b"first"] and left == ["refused"]


async def test_requests_to_a_peer_not_connected_or_unreachable_fail(open_peers: Opener) -> None:
    with trio.fail_after(30):
        async with open_peers(2) as (a, b):

            async def echo(peer: str, data: bytes) -> bytes:
                return data

            b.set_request_handler("/test/1", echo)
            with pytest.raises(NetworkError):
                await a.request(b.peer_id, "/test/1", b"x", timeout=2)
            await a.connect(b.listen_addrs()[0])
            await a.disconnect(b.peer_id)
            with trio.fail_after(5):
                while b.peer_id in a.connected_peers():
                    await trio.sleep(0.05)


# ----------------------------------------------------------- memory network only
async def test_a_partition_cuts_links_until_healed_and_loss_drops_transmissions() -> None:
    hub = MemoryHub(latency_s=0.01)
    async with hub.open_network(make_key("p0")) as a, hub.open_network(make_key("p1")) as b:
        inbox = await b.subscribe(T, gate(lambda data: True))
        await a.connect(b.listen_addrs()[0])
        hub.partition([a.peer_id], [b.peer_id])
        assert a.connected_peers() == [] and b.connected_peers() == []
        with pytest.raises(NetworkError, match="unreachable"):
            await a.connect(b.listen_addrs()[0])
        hub.heal()
        await a.connect(b.listen_addrs()[0])
        await a.publish(T, b"after the heal")
        with trio.fail_after(1):
            assert (await inbox.receive()).data == b"after the heal"
        assert a.sent.messages == 1 and a.sent.by_topic == {T: 1}

    lossy = MemoryHub(loss=0.5, seed=7)
    async with lossy.open_network(make_key("p0")) as a, lossy.open_network(make_key("p1")) as b:
        inbox = await b.subscribe(T, gate(lambda data: True))
        await a.connect(b.listen_addrs()[0])
        for i in range(200):
            await a.publish(T, b"%d" % i)
        await trio.sleep(0.1)
        got = inbox.statistics().current_buffer_used
        assert 60 < got < 140  # about half, drawn from the seed


async def test_memory_time_is_virtual_under_an_autojump_clock(autojump_clock: Any) -> None:
    hub = MemoryHub(latency_s=2.0)  # two seconds a hop
    start = trio.current_time()
    async with hub.open_network(make_key("p0")) as a, hub.open_network(make_key("p1")) as b:
        inbox = await b.subscribe(T, gate(lambda data: True))
        await a.connect(b.listen_addrs()[0])
        await a.publish(T, b"slow link")
        assert (await inbox.receive()).data == b"slow link"
    assert trio.current_time() - start >= 6.0  # a round trip to connect, one hop to deliver
