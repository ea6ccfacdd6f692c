"""Discovery: peer exchange, mDNS, the peer floor and ceiling, redial with backoff.

Real libp2p hosts on 127.0.0.1 in this process; the multi-address and network-namespace
versions with separate processes are in test_multihost.py.
"""

import socket
from contextlib import AsyncExitStack

import pytest
import trio

from aitbc_p2p.exceptions import NetworkError
from aitbc_p2p.network import open_libp2p_network, peer_id_of
from aitbc_p2p.node import NodeConfig, open_node
from aitbc_p2p.node.peers import BACKOFF_MAX_S, MAX_ADDRS, MAX_BACKOFFS, MAX_KNOWN, MAX_SHARED, Backoff, PeerBook
from aitbc_p2p.testing import make_genesis, make_key

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
A = peer_id_of(make_key("a"))
B = peer_id_of(make_key("b"))


def test_backoff_doubles_to_a_cap_and_a_success_clears_it():
    now = [0.0]
    backoff = Backoff(lambda: now[0])
    assert backoff.ready("x")
    delays = [backoff.failed("x") for _ in range(9)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60] and BACKOFF_MAX_S == 60
    assert not backoff.ready("x") and backoff.ready("y")
    now[0] = 59.9
    assert not backoff.ready("x")
    now[0] = 60.0
    assert backoff.ready("x")
    backoff.succeeded("x")
    assert backoff.failed("x") == 1  # starts over


def test_backoff_forgets_addresses_long_since_due_once_it_holds_many():
    now = [0.0]
    backoff = Backoff(lambda: now[0])
    backoff.failed("old")
    backoff.failed("old")
    for i in range(MAX_BACKOFFS):
        backoff.failed(f"addr{i}")
    now[0] = 1000.0
    backoff.failed("trigger")  # over the limit: entries due for more than a minute go
    assert backoff.failed("old") == 1  # forgotten, so it starts over instead of doubling to 4


def test_the_book_keeps_only_dialable_addresses_that_name_their_peer():
    book = PeerBook(me=A)
    good = f"/ip4/10.0.0.2/tcp/4001/p2p/{B}"
    book.heard(B, [good, f"/ip4/10.0.0.3/tcp/1/p2p/{A}", f"/ip4/0.0.0.0/tcp/4001/p2p/{B}", 7, "x" * 300 + B])
    assert book.to_dial(skip=()) == [(B, [good])]
    book.heard(A, [f"/ip4/10.0.0.3/tcp/1/p2p/{A}"])  # ourselves: never dialled
    book.heard("Qm-nobody", "not a list")
    assert len(book) == 1
    book.heard(B, [f"/ip4/10.0.0.{i}/tcp/1/p2p/{B}" for i in range(10)])
    assert len(book.to_dial(skip=())[0][1]) == MAX_ADDRS
    assert book.share(exclude="") == []  # heard-of peers are not passed on


def test_only_verified_peers_are_shared_newest_first_and_the_book_is_bounded():
    book = PeerBook(me=A)
    peers = [f"peer{i}" for i in range(MAX_KNOWN + 5)]
    for p in peers:
        book.verified(p, [f"/ip4/10.0.0.1/tcp/1/p2p/{p}"])
    shared = book.share(exclude=peers[-1])
    assert len(shared) == MAX_SHARED and shared[0][0] == peers[-2]
    assert len(book) == MAX_KNOWN and "peer0" not in {p for p, _ in book.to_dial(skip=())}
    assert book.heard_all("junk") == 0
    assert book.heard_all([["new", ["/ip4/10.0.0.9/tcp/1/p2p/new"]], ["bad"], [1, []], "x"]) == 1
    book.forget("new")
    assert "new" not in {p for p, _ in book.to_dial(skip=())}


@pytest.mark.parametrize(("floor", "ceiling"), [(-1, 5), (6, 5), (0, 0)])
def test_a_floor_above_the_ceiling_is_refused(floor, ceiling):
    key = make_key("cfg")
    with pytest.raises(ValueError, match="peer_"):
        NodeConfig(key=key, genesis=make_genesis([key]), peer_floor=floor, peer_ceiling=ceiling)


async def _settled(condition, timeout=20.0):
    with trio.fail_after(timeout):
        while not condition():  # libp2p has no event to wait on
            await trio.sleep(0.1)


async def test_a_peer_that_knows_one_bootstrap_finds_the_rest():
    keys = [make_key(f"px{i}") for i in range(5)]
    genesis = make_genesis(keys[:1], block_time_ms=500)
    async with AsyncExitStack() as stack:
        nodes = []
        for key in keys:
            boot = tuple(nodes[0].network.listen_addrs()) if nodes else ()
            cfg = NodeConfig(key=key, genesis=genesis, bootstrap=boot, peer_interval_s=0.2, peer_floor=8)
            nodes.append(await stack.enter_async_context(open_node(cfg)))
        ids = {n.network.peer_id for n in nodes}

        def meshed():  # each knew only px0; exchange gave them each other, verified
            return all(
                set(n.network.connected_peers()) == ids - {n.network.peer_id} == {p for p, _ in n.peers.to_dial(())}
                for n in nodes
            )

        await _settled(meshed)


async def test_only_below_its_floor_does_a_peer_dial_exchanged_peers():
    keys = [make_key(f"fl{i}") for i in range(4)]
    genesis = make_genesis(keys[:1], block_time_ms=500)
    floors = [8, 2, 2, 1]  # fl1 and fl2 stop at each other and fl0; fl3 at fl0
    async with AsyncExitStack() as stack:
        nodes = []
        for key, floor in zip(keys, floors, strict=True):
            boot = tuple(nodes[0].network.listen_addrs()) if nodes else ()
            cfg = NodeConfig(key=key, genesis=genesis, bootstrap=boot, peer_interval_s=0.2, peer_floor=floor)
            nodes.append(await stack.enter_async_context(open_node(cfg)))
            if len(nodes) == 3:
                await _settled(lambda: all(len(n.network.connected_peers()) == 2 for n in nodes))
        first = nodes[0].network.peer_id
        await _settled(lambda: len(nodes[0].network.connected_peers()) == 3)
        await trio.sleep(2)  # ten rounds of every peer manager
        assert nodes[3].network.connected_peers() == [first]
        assert all(len(n.network.connected_peers()) == 2 for n in nodes[1:3])
        # fl0 would have told them of fl3, had they asked: a peer at its floor does not.
        assert nodes[3].network.peer_id in {p for p, _ in nodes[0].peers.to_dial(())}


async def test_the_ceiling_refuses_the_connection_past_it():
    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(open_libp2p_network(make_key("hub"), LOCAL, max_peers=2))
        spokes = [await stack.enter_async_context(open_libp2p_network(make_key(f"s{i}"), LOCAL)) for i in range(3)]
        addr = hub.listen_addrs()[0]
        await spokes[0].connect(addr)
        await spokes[1].connect(addr)
        with pytest.raises(NetworkError):
            await spokes[2].connect(addr)
        await trio.sleep(0.5)
        assert sorted(hub.connected_peers()) == sorted(s.peer_id for s in spokes[:2])
        await spokes[0].disconnect(hub.peer_id)
        await _settled(lambda: len(hub.connected_peers()) == 1)
        await spokes[2].connect(addr)  # room again
        assert spokes[2].peer_id in hub.connected_peers()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_peer_learnt_by_exchange_is_redialled_after_it_restarts():
    """C knows only B; B tells it of A. A goes down and comes back on its address: C
    dials it again, with backoff, although A is in no bootstrap list of C's (and A,
    with a floor of 0, dials no one)."""
    keys = {name: make_key(f"re-{name}") for name in "abc"}
    genesis = make_genesis([keys["a"]], block_time_ms=500)
    a_listen = f"/ip4/127.0.0.1/tcp/{_free_port()}"
    a_id = peer_id_of(keys["a"])

    def config(name, bootstrap=(), **kw):
        listen = (a_listen,) if name == "a" else tuple(LOCAL)
        return NodeConfig(
            key=keys[name], genesis=genesis, listen=listen, bootstrap=bootstrap, peer_interval_s=0.2, **kw
        )

    async with (
        open_node(config("b", (f"{a_listen}/p2p/{a_id}",))) as b,
        open_node(config("c", tuple(b.network.listen_addrs()))) as c,
    ):
        async with open_node(config("a", peer_floor=0)):
            await _settled(lambda: a_id in c.network.connected_peers())
        await _settled(lambda: a_id not in c.network.connected_peers())
        await trio.sleep(3)  # a few failed dials: C is backing off
        async with open_node(config("a", peer_floor=0)):
            await _settled(lambda: a_id in c.network.connected_peers(), timeout=30)


async def test_mdns_finds_peers_of_the_same_chain_without_bootstrap():
    keys = [make_key(f"md{i}") for i in range(2)]
    genesis = make_genesis(keys[:1], block_time_ms=500)
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                open_node(NodeConfig(key=k, genesis=genesis, mdns=True, peer_interval_s=0.2))
            )
            for k in keys
        ]
        await _settled(lambda: all(len(n.network.connected_peers()) == 1 for n in nodes))
        assert nodes[0].network.discovered().keys() >= {nodes[1].network.peer_id}


async def test_bad_mdns_names_and_ceilings_are_refused():
    for kwargs in ({"mdns": "has space"}, {"mdns": "x" * 11}, {"max_peers": 0}):
        with pytest.raises(NetworkError):
            async with open_libp2p_network(make_key("bad"), LOCAL, **kwargs):
                pass


async def test_a_peer_advertises_its_announce_addresses_in_place_of_its_listen_addresses():
    key = make_key("announcer")
    genesis = make_genesis([key])
    async with open_node(NodeConfig(key=key, genesis=genesis)) as plain:
        assert list(plain.peering.status().listen) == plain.network.listen_addrs()
    cfg = NodeConfig(key=key, genesis=genesis, announce=("/ip4/198.51.100.4/tcp/4001",))
    async with open_node(cfg) as node:
        assert list(node.peering.status().listen) == [f"/ip4/198.51.100.4/tcp/4001/p2p/{node.network.peer_id}"]
