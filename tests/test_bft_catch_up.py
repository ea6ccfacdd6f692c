"""BFT recovers lost consensus messages by itself (round-state catch-up).

Four ``pos`` validators of equal stake over the in-memory network, in virtual time (the
round-state requests are the adapter's request/response, which the conformance suite
holds to libp2p's behaviour); two of them hear
nothing on the consensus topic (every message to them is lost). A quorum needs three, so
without catch-up no block is ever decided; with it the deaf validators ask their peers
for the height's proposals and votes once a round passes, and the chain goes on.
"""

from typing import Any

import trio

from aitbc_p2p.network.memory import MemoryHub
from aitbc_p2p.node import bft as bft_module
from aitbc_p2p.testing import make_key, open_test_network, virtual_clock_ms
from aitbc_p2p.types import aitbc

KEYS = [make_key(f"peer{i}") for i in range(4)]


async def test_validators_that_lose_every_consensus_message_still_reach_quorum(monkeypatch: Any, autojump_clock: Any):
    deaf = {KEYS[2].address, KEYS[3].address}
    real_receive = bft_module.BftDriver._receive

    async def receive(self, inbox):
        if self.account.key.address not in deaf:
            return await real_receive(self, inbox)
        async for _ in inbox:  # lost on the way
            pass

    monkeypatch.setattr(bft_module.BftDriver, "_receive", receive)
    params = {
        "engine": "pos",
        "validators": [k.address for k in KEYS],
        "stakes": {k.address: aitbc(100) for k in KEYS},
        "round_timeout_ms": 1000,
    }
    with trio.fail_after(120):
        hub = MemoryHub(latency_s=0.01)
        async with open_test_network(
            4, block_time_ms=300, genesis_params=params, hub=hub, clock_ms=virtual_clock_ms
        ) as nodes:
            while min(n.store.head.height for n in nodes) < 3:
                await trio.sleep(0.1)
            heads = {n.store.block(3).hash for n in nodes}
            assert len(heads) == 1  # one chain, final blocks agree
            for n in nodes:  # every decided block carries a quorum of precommits
                assert len(n.block(3).certificate.validators) >= 3
