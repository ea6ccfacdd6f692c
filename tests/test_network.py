"""The libp2p adapter with real hosts on 127.0.0.1."""

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

from aitbc_p2p.exceptions import NetworkError
from aitbc_p2p.network import ValidationResult, Verdict, open_libp2p_network, peer_id_of
from aitbc_p2p.network.protocols import topic
from aitbc_p2p.testing import gate, make_key

LOCAL = ["/ip4/127.0.0.1/tcp/0"]


async def test_request_response_and_gossip_validation():
    with trio.fail_after(30):
        async with open_libp2p_network(make_key("n1"), LOCAL) as n1, open_libp2p_network(make_key("n2"), LOCAL) as n2:
            assert n1.peer_id == peer_id_of(make_key("n1"))

            async def upper(peer, data):
                assert peer == n1.peer_id
                return data.upper()

            n2.set_request_handler("/test/1", upper)
            t = topic("ait-devnet", "tx")
            inbox = await n1.subscribe(t, gate(lambda data: not data.startswith(b"bad")))
            await n2.subscribe(t, gate(lambda data: not data.startswith(b"bad")))
            assert await n1.connect(n2.listen_addrs()[0]) == n2.peer_id
            assert await n1.request(n2.peer_id, "/test/1", b"ping") == b"PING"
            # Gossip: keep publishing until the mesh forms; the invalid message never arrives.
            while True:
                await n2.publish(t, b"bad message")
                await n2.publish(t, b"good message")
                with trio.move_on_after(0.5):
                    msg = await inbox.receive()
                    break
            assert msg.data == b"good message" and msg.origin == n2.peer_id


async def test_oversized_frame_resets_the_stream():
    with trio.fail_after(30):
        async with open_libp2p_network(make_key("n1"), LOCAL) as n1, open_libp2p_network(make_key("n2"), LOCAL) as n2:
            called = []

            async def handler(peer, data):
                called.append(data)
                return b"ok"

            n2.set_request_handler("/test/1", handler)
            await n1.connect(n2.listen_addrs()[0])
            stream = await n1._host.new_stream(n2._host.get_id(), [TProtocol("/test/1")])
            await stream.write((256 << 20).to_bytes(4, "big"))  # claims 256 MiB
            with pytest.raises(Exception):  # noqa: B017 - reset or EOF, depending on timing
                data = await stream.read(4)
                if not data:
                    raise EOFError
            assert called == []


async def test_plaintext_only_peer_is_refused():
    kp = create_new_key_pair(make_key("plain").secret)
    plain = new_host(key_pair=kp, sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(kp)})
    with trio.fail_after(30):
        async with open_libp2p_network(make_key("n1"), LOCAL) as n1, plain.run([multiaddr.Multiaddr(LOCAL[0])]):
            with pytest.raises(Exception):  # noqa: B017 - libp2p raises its own negotiation errors
                await plain.connect(info_from_p2p_addr(multiaddr.Multiaddr(n1.listen_addrs()[0])))
            assert n1.connected_peers() == []


async def test_connect_to_nowhere_is_a_network_error():
    with trio.fail_after(30):
        async with open_libp2p_network(make_key("n1"), LOCAL) as n1:
            with pytest.raises(NetworkError):
                await n1.connect(f"/ip4/127.0.0.1/tcp/1/p2p/{peer_id_of(make_key('x'))}")
            with pytest.raises(NetworkError):
                await n1.connect("not a multiaddr")


async def test_a_peer_flooding_invalid_gossip_is_graylisted_then_banned_while_honest_gossip_flows():
    """REJECT penalizes the forwarder, IGNORE does not; a flooder is graylisted within
    seconds, then disconnected and kept off, and every honest message still arrives."""
    from aitbc_p2p.network import ValidationResult

    def judge(data: bytes) -> ValidationResult:
        if data.startswith(b"good"):
            return ValidationResult.ACCEPT
        if data.startswith(b"later"):
            return ValidationResult.IGNORE
        return ValidationResult.REJECT

    def accept_all(data: bytes) -> ValidationResult:
        return ValidationResult.ACCEPT

    t = topic("ait-devnet", "tx")
    with trio.fail_after(60):
        async with (
            open_libp2p_network(make_key("receiver"), LOCAL) as receiver,
            open_libp2p_network(make_key("honest"), LOCAL) as honest,
            open_libp2p_network(make_key("flooder"), LOCAL) as flooder,
        ):
            inbox = await receiver.subscribe(t, gate(judge))
            await honest.subscribe(t, gate(accept_all))
            await flooder.subscribe(t, gate(accept_all))
            await honest.connect(receiver.listen_addrs()[0])
            await flooder.connect(receiver.listen_addrs()[0])
            # Wait for both meshes: each peer's messages reach the receiver.
            for sender in (honest, flooder):
                n = 0
                while receiver.verdicts["accept"] + receiver.verdicts["ignore"] == 0 or sender is flooder:
                    n += 1
                    await sender.publish(t, (b"good-mesh-%d" if sender is honest else b"later-%d") % n)
                    await trio.sleep(0.1)
                    if sender is flooder and receiver.verdicts["ignore"]:
                        break
            while True:  # drain the mesh-forming messages
                with trio.move_on_after(0.3):
                    await inbox.receive()
                    continue
                break

            # IGNORE costs nothing.
            for i in range(30):
                await flooder.publish(t, b"later-%d" % (1000 + i))
            while receiver.verdicts["ignore"] < 30:
                await trio.sleep(0.05)
            assert receiver.scores.score(flooder.peer_id) == 0.0

            # The flood, with honest traffic interleaved.
            received: list[bytes] = []
            sent: list[bytes] = []

            async def collect() -> None:
                async for msg in inbox:
                    received.append(msg.data)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(collect)
                start = trio.current_time()
                graylisted_after = banned_after = None
                i = 0
                while banned_after is None or len(received) < len(sent):
                    i += 1
                    if banned_after is None:
                        try:
                            await flooder.publish(t, b"forged-%d" % i)
                        except NetworkError:
                            pass
                    sent.append(b"good-%d" % i)
                    await honest.publish(t, sent[-1])
                    await trio.sleep(0.02)
                    if graylisted_after is None and receiver.scores.graylisted(flooder.peer_id):
                        graylisted_after = trio.current_time() - start
                    if banned_after is None and receiver.scores.banned(flooder.peer_id):
                        banned_after = trio.current_time() - start
                nursery.cancel_scope.cancel()
            assert graylisted_after is not None and graylisted_after < 5
            assert banned_after is not None and banned_after < 10
            assert received == sent  # every honest message, in order, none lost
            assert receiver.scores.score(honest.peer_id) == 0.0
            with trio.fail_after(5):
                while flooder.peer_id in receiver.connected_peers():
                    await trio.sleep(0.1)
            await trio.sleep(1.5)  # a dial back is cut again by the ban
            with pytest.raises(NetworkError):
                await flooder.connect(receiver.listen_addrs()[0])
                await trio.sleep(1.5)
                if flooder.peer_id not in receiver.connected_peers():
                    raise NetworkError("cut")


async def test_a_copy_that_arrives_while_the_first_is_checked_is_checked_and_delivered_once():
    """py-libp2p marks a message seen only after its validator returns; copies relayed by
    other peers meanwhile must not be checked (signatures) and delivered again."""
    t = topic("ait-devnet", "tx")
    calls: list[bytes] = []

    async def slow_gate(data):
        calls.append(data)
        await trio.sleep(0.3)  # a bundle's signature checks, say
        return Verdict(ValidationResult.ACCEPT, data)

    with trio.fail_after(60):
        async with (
            open_libp2p_network(make_key("dup-a"), LOCAL) as a,
            open_libp2p_network(make_key("dup-b"), LOCAL) as b,
            open_libp2p_network(make_key("dup-x"), LOCAL) as x,
        ):
            inbox = await x.subscribe(t, slow_gate)
            await a.subscribe(t, gate(lambda data: True))
            await b.subscribe(t, gate(lambda data: True))
            for dialer, target in ((a, x), (a, b), (b, x)):  # x hears a directly and through b
                await dialer.connect(target.listen_addrs()[0])
            await trio.sleep(2.5)  # subscriptions travel; the mesh grafts on the 1 s heartbeat
            sent = [f"message {i}".encode() for i in range(5)]
            for data in sent:
                await a.publish(t, data)
            got = []
            with trio.move_on_after(3):
                async for msg in inbox:
                    got.append(msg.data)
            assert sorted(got) == sorted(sent)  # each once
            assert sorted(calls) == sorted(sent)  # each checked once
            assert x.verdicts["duplicate"] > 0  # copies did arrive, and were dropped


def test_a_peer_record_is_checked_once_until_it_changes_or_ages():
    """py-libp2p verifies the sender's signed peer record on every pubsub RPC; the memo
    checks the same bytes from the same peer once a minute, anything new at once, and
    never remembers a record that failed."""
    from aitbc_p2p.network.host import _SignedRecordMemo

    calls: list[bytes] = []
    now = [0.0]

    class Rpc:
        def __init__(self, record: bytes | None) -> None:
            self.senderRecord = record

        def HasField(self, name: str) -> bool:
            return self.senderRecord is not None

    class Host:
        def get_id(self) -> str:
            return "me"

    def consume(msg, host, peer):
        calls.append(msg.senderRecord)
        return not msg.senderRecord.startswith(b"forged")

    import aitbc_p2p.network.host as host_module

    memo = _SignedRecordMemo(consume, ttl_s=60, size=2)
    real_monotonic = host_module.time.monotonic
    host_module.time.monotonic = lambda: now[0]
    try:
        assert memo(Rpc(None), Host(), "p1") and calls == []
        assert memo(Rpc(b"rec-a"), Host(), "p1") and memo(Rpc(b"rec-a"), Host(), "p1")
        assert calls == [b"rec-a"]
        assert memo(Rpc(b"rec-a"), Host(), "p2")  # another sender: its own check
        assert memo(Rpc(b"rec-b"), Host(), "p1")  # new addresses: checked again
        assert calls == [b"rec-a", b"rec-a", b"rec-b"]
        assert not memo(Rpc(b"forged"), Host(), "p1") and not memo(Rpc(b"forged"), Host(), "p1")
        assert calls[-2:] == [b"forged", b"forged"]  # a failure is never remembered
        now[0] = 61.0
        assert memo(Rpc(b"rec-b"), Host(), "p1") and calls[-1] == b"rec-b"  # aged out: checked again
        assert len(memo._accepted) <= 2  # bounded
    finally:
        host_module.time.monotonic = real_monotonic


async def test_opening_a_network_installs_the_py_libp2p_tuning():
    from libp2p.pubsub import gossipsub, pubsub
    from libp2p.stream_muxer.yamux import yamux

    from aitbc_p2p.network.host import _SignedRecordMemo

    async with open_libp2p_network(make_key("tuned"), LOCAL):
        assert isinstance(pubsub.maybe_consume_signed_record, _SignedRecordMemo)
        assert gossipsub.maybe_consume_signed_record is pubsub.maybe_consume_signed_record
        assert yamux._yamux_release_on_read() is False  # window updates at half the window, as go-yamux


def test_topic_names_carry_each_topic_s_version():
    """A topic whose messages changed shape has a new version: peers of two versions never
    meet on it (each would REJECT the other's messages and score it down)."""
    assert [topic("ait-devnet", n) for n in ("tx", "block", "consensus", "job", "provider")] == [
        "/aitbc/ait-devnet/tx/1", "/aitbc/ait-devnet/block/1", "/aitbc/ait-devnet/consensus/1",
        "/aitbc/ait-devnet/job/2", "/aitbc/ait-devnet/provider/3",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown topic"):
        topic("ait-devnet", "jobs")
