"""Whole nodes over the in-memory network, in virtual time (Trio's autojump MockClock).

The same open_node as the daemon's, on a MemoryHub: block production, gossip gates, sync,
reorgs and BFT rounds run as they do over libp2p, and a simulated minute takes well under
a second of wall time. Real-socket tests keep covering the adapter (test_network*.py) and
the end-to-end flows (test_devnet.py, test_pos_devnet.py, test_multihost.py).
"""

from __future__ import annotations

import time
from typing import Any

import trio

from aitbc_p2p.chain.models import Transaction
from aitbc_p2p.network.memory import MemoryHub
from aitbc_p2p.node import NodeConfig, open_node
from aitbc_p2p.testing import make_genesis, make_key, open_test_network, virtual_clock_ms
from aitbc_p2p.types import aitbc

WALLET = make_key("memory-wallet")
SINK = make_key("memory-sink").address


def transfer(nonce: int, genesis: Any) -> Transaction:
    return Transaction.create(
        WALLET, chain_id=genesis.chain_id, kind="transfer", nonce=nonce, fee=genesis.min_fee,
        payload={"to": SINK, "amount": 5},
    )  # fmt: skip


def agree(nodes: list[Any], height: int) -> bool:
    return len({n.store.block(height).hash for n in nodes}) == 1


def one_chain(nodes: list[Any]) -> bool:
    """Every head the same block, and every chain the same below it."""
    return len({n.store.head.hash for n in nodes}) == 1 and agree(nodes, min(n.head.height for n in nodes))


async def test_a_poa_network_produces_one_chain_and_carries_transactions(autojump_clock: Any) -> None:
    wall = time.monotonic()
    hub = MemoryHub(latency_s=0.03)
    async with open_test_network(4, hub=hub, clock_ms=virtual_clock_ms, alloc={WALLET.address: aitbc(100)}) as nodes:
        genesis = nodes[0].genesis
        for nonce in range(5):
            await nodes[nonce % 4].submit_tx(transfer(nonce, genesis))
        with trio.fail_after(120):  # virtual seconds
            while any(n.account(SINK).account.balance < 25 for n in nodes):
                await nodes[0].wait_head_change()
            await nodes[0].wait_height(nodes[0].head.height + 3)
        low = min(n.head.height for n in nodes)
        assert low >= 3 and agree(nodes, low)
        assert all(n.supply().total == n.supply().genesis_total for n in nodes)
    assert time.monotonic() - wall < 30  # virtual time: no real block interval was waited out


async def test_an_authority_cut_off_for_long_rejoins_the_majority_chain(autojump_clock: Any) -> None:
    """Alone, an authority may add one block (signer recency: one of any three consecutive
    blocks of four authorities), then it stalls instead of growing a fork; none of its
    blocks is final. The majority goes on and finalizes; when the network heals the lone
    peer reverts onto the majority's chain. (Before the recency rule it went on proposing
    on its turns and as everyone's backup, a fork as deep as the partition was long.)"""
    hub = MemoryHub(latency_s=0.02)
    async with open_test_network(4, hub=hub, clock_ms=virtual_clock_ms) as nodes:
        await nodes[0].wait_height(3)
        ids = [n.network.peer_id for n in nodes]
        hub.partition(ids[:3], ids[3:])
        start = nodes[3].head.height
        await trio.sleep(30)  # sixty block times
        assert nodes[3].head.height <= start + 1  # stalled: no fork past one block
        lonely = nodes[3].store.head
        assert nodes[3].final_height() <= start  # alone, nothing it proposed is final
        assert nodes[0].head.height >= start + 8  # three of four are a majority: they go on
        assert nodes[0].final_height() > start  # and finalize
        hub.heal()  # the peer managers dial their bootstrap peers again
        with trio.fail_after(120):
            while not one_chain(nodes):
                await trio.sleep(0.3)
        if lonely.height > start and lonely.proposer == nodes[3].key.address:  # a block of its own
            assert nodes[3].store.height_of(lonely.hash) is None  # reverted now


async def test_a_network_split_in_two_halves_heals_onto_one_chain(autojump_clock: Any) -> None:
    """Two halves of four authorities: neither is a majority, so each adds at most two
    blocks (signer recency) and then stalls, finalizing nothing. Once healed they agree on
    one chain and finality resumes."""
    hub = MemoryHub(latency_s=0.02)
    async with open_test_network(4, hub=hub, clock_ms=virtual_clock_ms) as nodes:
        await nodes[0].wait_height(3)
        ids = [n.network.peer_id for n in nodes]
        hub.partition(ids[:2], ids[2:])
        at_split = max(n.head.height for n in nodes)
        await trio.sleep(20)
        assert max(n.head.height for n in nodes) <= at_split + 2  # both halves stalled
        assert max(n.final_height() for n in nodes) <= at_split  # nothing made since is final
        hub.heal()
        with trio.fail_after(120):
            while not one_chain(nodes):
                await trio.sleep(0.3)
        await nodes[0].wait_height(nodes[0].head.height + 4)
        assert min(n.final_height() for n in nodes) > at_split  # together they finalize again


async def test_poa_peers_each_on_its_own_block_at_one_height_agree_on_the_better_tip(autojump_clock: Any) -> None:
    """Three authorities cut off from each other: each adds at most one block of its own
    (signer recency), so they may end at one height on three different blocks, each the
    last proposer of its own branch and barred from the next height. No one is ahead, so
    nothing syncs; healed, they must still agree: each compares its tip with the peers'
    at its height and fork choice takes the better one. (Without the comparison they
    waited on each other for good: a start-up race left the in-memory market tests at
    height 1.)"""
    hub = MemoryHub(latency_s=0.02)
    async with open_test_network(3, hub=hub, clock_ms=virtual_clock_ms) as nodes:
        await nodes[0].wait_height(2)
        ids = [n.network.peer_id for n in nodes]
        hub.partition([ids[0]], [ids[1]], [ids[2]])
        await trio.sleep(10)  # twenty block times alone: at most one block each
        heads = [n.head for n in nodes]
        hub.heal()
        with trio.fail_after(60):
            while not one_chain(nodes):
                await trio.sleep(0.3)
            await nodes[0].wait_height(max(h.height for h in heads) + 5)  # and the chain goes on
        assert one_chain(nodes)


async def test_pos_validators_decide_blocks_and_go_on_without_one_of_four(autojump_clock: Any) -> None:
    keys = [make_key(f"peer{i}") for i in range(4)]
    params = {
        "engine": "pos",
        "validators": [k.address for k in keys],
        "stakes": {k.address: aitbc(100) for k in keys},
        "round_timeout_ms": 1000,
    }
    hub = MemoryHub(latency_s=0.02)
    async with open_test_network(
        4, hub=hub, clock_ms=virtual_clock_ms, block_time_ms=300, genesis_params=params
    ) as nodes:
        await nodes[0].wait_height(5)
        assert agree(nodes, 5)
        for n in nodes:  # each decided block carries a quorum of precommits
            assert len(n.block(5).certificate.validators) >= 3
        # One validator is cut off (its own side of a partition): the other three hold
        # three quarters of the stake, so rounds it would propose time out and the next
        # round's proposer takes over.
        silent = nodes[3].network.peer_id
        hub.partition([silent], [n.network.peer_id for n in nodes[:3]])
        start = nodes[0].head.height
        with trio.fail_after(120):
            await nodes[0].wait_height(start + 10)
        rounds = {nodes[0].store.block(h).header.round for h in range(start + 1, start + 11)}
        assert max(rounds) >= 1 or nodes[3].engine.proposer(start + 1, 0) != nodes[3].key.address
        assert agree(nodes[:3], start + 10)
        stuck = nodes[3].head.height
        assert stuck <= start + 1  # alone it has a quarter of the stake: it decides nothing
        hub.heal()
        with trio.fail_after(120):
            await nodes[3].wait_height(start + 10)  # it syncs by certificate
        assert agree(nodes, start + 10)


async def test_a_node_cancelled_from_outside_closes_its_store_for_a_restart(tmp_path: Any) -> None:
    key = make_key("restarted")
    genesis = make_genesis([key], block_time_ms=200)
    config = NodeConfig(key=key, genesis=genesis, data_dir=tmp_path / "peer", verify_in_workers=False)
    hub = MemoryHub()
    with trio.CancelScope() as scope:
        async with open_node(config, network=hub.node_network) as node:
            await node.wait_height(2)
            scope.cancel()  # as a supervisor stops it: not the context's own exit
            await trio.sleep_forever()
    # Before, the cancelled exit skipped closing LevelDB: reopening found its lock held.
    async with open_node(config, network=hub.node_network) as node:
        assert node.head.height >= 2


async def test_the_proposers_kept_for_finality_stay_bounded(autojump_clock: Any) -> None:
    from aitbc_p2p.consensus import FINALITY_WINDOW

    async with open_test_network(1, hub=MemoryHub(), clock_ms=virtual_clock_ms, block_time_ms=100) as (node,):
        await node.wait_height(2 * FINALITY_WINDOW + 50)  # nobody asks for finality meanwhile
        assert len(node.chain.finality) <= 2 * FINALITY_WINDOW
        assert node.final_height() == node.head.height  # solo: final at once


async def test_the_node_api_returns_typed_views_that_the_rpc_renders_to_its_spec(autojump_clock: Any) -> None:
    """NodeAPI speaks in dataclasses of domain values; rpc/render.py alone makes JSON of
    them, with the keys specs/rpc.md lists, so a view field renamed shows up here."""
    import dataclasses
    import json

    from aitbc_p2p.chain.state import Account
    from aitbc_p2p.rpc import render

    alloc = {WALLET.address: aitbc(100)}
    async with open_test_network(2, hub=MemoryHub(), clock_ms=virtual_clock_ms, alloc=alloc) as nodes:
        node = nodes[0]
        tx = transfer(0, node.genesis)
        await node.submit_tx(tx)
        pending = node.tx_status(tx.hash)
        assert dataclasses.is_dataclass(pending) and pending.status == "pending" and pending.tx == tx
        with trio.fail_after(60):
            while node.tx_status(tx.hash).status != "committed":
                await node.wait_head_change()
        views = {
            "status": node.status(),
            "supply": node.supply(),
            "account": node.account(WALLET.address),
            "tx_status": node.tx_status(tx.hash),
            "tx_proof": node.tx_proof(tx.hash),
            "account_proof": node.account_proof(WALLET.address),
            "block": node.block(node.tx_status(tx.hash).height),
        }
        assert all(dataclasses.is_dataclass(v) for v in views.values())
        assert isinstance(views["account"].account, Account) and views["account"].account.nonce == 1
        assert [loc.tx for loc in node.history(SINK, 10)] == [tx]
        status = render.status(views["status"])
        assert set(status) == {
            "chain_id", "genesis_hash", "height", "head_hash", "head_timestamp_ms", "consensus", "next_proposer",
            "final_height", "address", "peer_id", "listen", "peers", "mempool", "min_fee", "provider", "version",
            "uptime_s", "sync",
        }  # fmt: skip
        assert status["height"] == node.head.height and status["head_hash"] == node.head.hash.hex()
        account = render.account(views["account"])
        assert account["balance"] == aitbc(100) - 5 - node.genesis.min_fee and account["balance_aitbc"]
        assert render.supply(views["supply"])["total"] == node.genesis.total_supply
        committed = render.tx_status(views["tx_status"])
        assert committed["status"] == "committed" and committed["tx"]["hash"] == tx.hash.hex()
        assert render.block(views["block"])["txs"][0]["payload"] == {"to": SINK, "amount": 5}
        for name, view in views.items():  # every rendering is plain JSON
            json.dumps(getattr(render, name)(view))
