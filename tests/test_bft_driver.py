"""The BFT driver (node/bft.py) tested directly over the in-memory network, in virtual
time: what a validator does with an equivocating validator, with consensus messages for
heights it has not reached, with junk on the consensus topic, and after a restart.

Three honest validators run whole nodes; the fourth validator's key is held by the test,
which speaks for it on the consensus topic through a bare network on the same hub.
"""

from __future__ import annotations

from typing import Any

import trio

from aitbc_p2p.chain.models import TxKind
from aitbc_p2p.chain.votes import NIL, Vote, VoteStep
from aitbc_p2p.codec import encode
from aitbc_p2p.network.memory import MemoryHub
from aitbc_p2p.node import NodeConfig, open_node
from aitbc_p2p.testing import gate, make_key, open_test_network, virtual_clock_ms
from aitbc_p2p.types import aitbc

KEYS = [make_key(f"peer{i}") for i in range(4)]
ROGUE = KEYS[3]
PARAMS = {
    "engine": "pos",
    "validators": [k.address for k in KEYS],
    "stakes": {k.address: aitbc(100) for k in KEYS},
    "round_timeout_ms": 1000,
}
FEES = {k.address: aitbc(10) for k in KEYS[:3]}
"""A liquid balance for the honest validators: slash evidence is a transaction that pays a fee."""


def vote(height: int, block: bytes, *, round: int = 0, step: VoteStep = VoteStep.PREVOTE) -> Vote:
    return Vote("ait-devnet", height, round, step, block, ROGUE.address).signed(ROGUE)


def honest_network(hub: MemoryHub) -> Any:
    """Three of the four validators as whole nodes (three quarters of the stake: live)."""
    return open_test_network(
        3, hub=hub, clock_ms=virtual_clock_ms, block_time_ms=300, absent=1, genesis_params=PARAMS, alloc=FEES
    )


async def test_an_equivocating_validator_is_slashed_by_the_others(autojump_clock: Any) -> None:
    hub = MemoryHub(latency_s=0.01)
    async with honest_network(hub) as nodes, hub.open_network(ROGUE) as rogue:
        topic = nodes[0].topics.consensus
        await rogue.subscribe(topic, gate(lambda data: True))
        await rogue.connect(nodes[0].network.listen_addrs()[0])
        await nodes[0].wait_height(2)
        height = nodes[0].head.height + 1
        # Two prevotes of one slot for different blocks: a double sign.
        await rogue.publish(topic, encode({"vote": vote(height, b"\x01" * 32).to_wire()}))
        await rogue.publish(topic, encode({"vote": vote(height, b"\x02" * 32).to_wire()}))
        with trio.fail_after(60):
            while nodes[0].store.state.account(ROGUE.address).stake:
                await nodes[0].wait_head_change()
        slashes = [
            tx
            for h in range(1, nodes[0].head.height + 1)
            for tx in nodes[0].store.block(h).txs
            if tx.kind is TxKind.SLASH
        ]
        assert len(slashes) == 1  # each honest validator saw it; the offence is slashed once
        assert {n.store.state.account(ROGUE.address).stake for n in nodes} == {0}
        await nodes[0].wait_height(nodes[0].head.height + 2)  # and the chain goes on


async def test_votes_for_future_heights_wait_and_junk_costs_its_sender(autojump_clock: Any) -> None:
    hub = MemoryHub(latency_s=0.01)
    async with honest_network(hub) as nodes, hub.open_network(ROGUE) as rogue:
        topic = nodes[0].topics.consensus
        await rogue.subscribe(topic, gate(lambda data: True))
        await rogue.connect(nodes[0].network.listen_addrs()[0])
        await nodes[0].wait_height(2)
        driver = nodes[0].bft
        # A nil prevote for a height far ahead is held (bounded), not refused and not lost.
        ahead = nodes[0].head.height + 50
        await rogue.publish(topic, encode({"vote": vote(ahead, NIL).to_wire()}))
        # Junk on the consensus topic: not a one-key map, a vote with a bad signature.
        await rogue.publish(topic, encode({"vote": 1, "proposal": 2}))
        forged = Vote("ait-devnet", ahead, 0, VoteStep.PREVOTE, NIL, ROGUE.address, b"\x00" * 65)
        await rogue.publish(topic, encode({"vote": forged.to_wire()}))
        await trio.sleep(1)
        assert any(h == ahead for h, _ in driver._buffer)
        assert nodes[0].network.scores.score(rogue.peer_id) < 0  # the gate refused the junk
        start = nodes[0].head.height
        await nodes[0].wait_height(start + 5)  # consensus never stopped for any of it
        assert len({n.store.block(start + 5).hash for n in nodes}) == 1


async def test_a_restarted_validator_keeps_its_signatures_and_rejoins(autojump_clock: Any, tmp_path: Any) -> None:
    """A validator stopped mid-height (its caller's scope cancelled, as a supervisor
    stops it) restarts from its LevelDB: its vote guard remembers what it signed, so it
    never signs a conflicting vote, and it is back deciding blocks with the others."""
    hub = MemoryHub(latency_s=0.01)
    async with open_test_network(
        3, hub=hub, clock_ms=virtual_clock_ms, block_time_ms=300, absent=1, genesis_params=PARAMS,
        data_root=tmp_path,
    ) as nodes:  # fmt: skip
        await nodes[0].wait_height(3)
        genesis = nodes[0].genesis
        config = NodeConfig(
            key=ROGUE,
            genesis=genesis,
            data_dir=tmp_path / "validator3",
            bootstrap=tuple(a for n in nodes for a in n.network.listen_addrs()),
            verify_in_workers=False,
            peer_interval_s=0.2,
        )
        with trio.CancelScope() as scope:
            async with open_node(config, clock_ms=virtual_clock_ms, network=hub.node_network) as v3:
                await v3.wait_height(nodes[0].head.height + 3)
                signed = v3.bft.guard.last("precommit")
                assert signed is not None
                scope.cancel()
        async with open_node(config, clock_ms=virtual_clock_ms, network=hub.node_network) as v3:
            assert v3.bft is None or v3.bft.guard.last("precommit")[0] >= signed[0]
            target = max(n.head.height for n in nodes) + 5
            with trio.fail_after(120):
                await v3.wait_height(target)
            block = v3.store.block(target)
            assert block.hash == nodes[0].store.block(target).hash
            precommits = {v for h in range(target - 3, target + 1) for v in v3.block(h).certificate.validators}
            assert ROGUE.address in precommits  # it votes again
