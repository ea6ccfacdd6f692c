"""Deterministic keys, genesis documents, transactions, chains and in-process networks."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from aitbc_p2p.chain.blocks import AppliedBlock, build_block, genesis_block
from aitbc_p2p.chain.models import Genesis, Transaction, TxKind
from aitbc_p2p.chain.state import StateView
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.crypto import PrivateKey
from aitbc_p2p.network.abc import ValidationResult, Validator, Verdict
from aitbc_p2p.network.memory import MemoryHub
from aitbc_p2p.node import Node, NodeConfig, ProviderConfig, open_node
from aitbc_p2p.node.config import MinersConfig, WalletConfig
from aitbc_p2p.node.offload import run_blocking_inline
from aitbc_p2p.store import MemoryKV, StoreStateView, schema
from aitbc_p2p.types import Address, aitbc

DEVNET_BALANCES = {"genesis": aitbc(1_000_000), "client": aitbc(10_000), "miner": aitbc(1_000)}
"""The seeds' devnet allocation: genesis 1,000,000 AITBC, client 10,000, miner 1,000."""


def virtual_clock_ms() -> int:
    """Trio's clock in milliseconds: the wall clock of peers that run under a MockClock
    (``open_test_network(clock_ms=virtual_clock_ms)``), so block timestamps, slots and
    timeouts all follow virtual time."""
    return int(trio.current_time() * 1000)


def make_key(label: str) -> PrivateKey:
    """A deterministic key for ``label`` (test use only: anyone can derive it)."""
    return PrivateKey(hashlib.sha256(b"aitbc-test-key:" + label.encode()).digest())


_GENESIS_RULES = (
    "unbonding_blocks",
    "dispute_blocks",
    "dispute_bond",
    "slash_bps",
    "challenger_bps",
    "arbiter_quorum",
    "challenge_blocks",
)


def make_genesis(
    authorities: Sequence[PrivateKey],
    alloc: Mapping[Address, int] | None = None,
    *,
    engine: str | None = None,
    chain_id: str = "ait-devnet",
    block_time_ms: int = 500,
    timestamp_ms: int = 0,
    min_fee: int = 1000,
    stakes: Mapping[Address, int] | None = None,
    providers: Sequence[Address] = (),
    arbiters: Sequence[Address] = (),
    **params: Any,
) -> Genesis:
    """A genesis for tests. Each of ``providers`` gets ``min_provider_stake`` bonded unless
    ``stakes`` says otherwise; ``params``: other Genesis fields and ``consensus`` extras."""
    min_provider_stake = params.pop("min_provider_stake", aitbc(100))
    genesis_fields = {k: params.pop(k) for k in _GENESIS_RULES if k in params}
    all_stakes = {a: min_provider_stake for a in providers} | dict(stakes or {})
    return Genesis(
        chain_id=chain_id,
        timestamp_ms=timestamp_ms,
        alloc=tuple((alloc or {}).items()),
        consensus={
            "engine": engine or ("solo" if len(authorities) == 1 else "poa"),
            "authorities": [k.address for k in authorities],
            "block_time_ms": block_time_ms,
            **params,
        },
        min_fee=min_fee,
        stakes=tuple(all_stakes.items()),
        providers=tuple(providers),
        arbiters=tuple(arbiters),
        min_provider_stake=min_provider_stake,
        **genesis_fields,
    )


def make_tx(
    key: PrivateKey,
    kind: TxKind | str = TxKind.TRANSFER,
    *,
    nonce: int = 0,
    fee: int = 1000,
    chain_id: str = "ait-devnet",
    **payload: Any,
) -> Transaction:
    if kind == TxKind.TRANSFER:
        payload.setdefault("to", make_key("someone").address)
        payload.setdefault("amount", 1)
    return Transaction.create(key, chain_id=chain_id, kind=kind, nonce=nonce, fee=fee, payload=payload)


class ChainBuilder:
    """Builds valid chains in memory: ``ChainBuilder(genesis, keys).add_block(txs)``."""

    def __init__(self, genesis: Genesis, authorities: Sequence[PrivateKey]) -> None:
        self.genesis = genesis
        self.rules = ChainRules.of(genesis)
        self._keys = {k.address: k for k in authorities}
        self.blocks: list[AppliedBlock] = [genesis_block(genesis)]
        self._states: list[StateView] = [_flatten(self.blocks[0])]

    @property
    def state(self) -> StateView:
        return self._states[-1]

    def add_block(self, txs: Sequence[Transaction] = (), *, step_ms: int | None = None, round: int = 0) -> AppliedBlock:
        """The next block, by ``round``'s authority (0: the primary) at the round's slot."""
        parent = self.blocks[-1].block.header
        height = parent.height + 1
        consensus = self.genesis.consensus
        authorities = consensus["authorities"]
        key = self._keys[authorities[(height + round) % len(authorities)]]
        step = step_ms if step_ms is not None else int(consensus.get("block_time_ms", 1000))
        step += round * int(consensus.get("backup_ms", 2 * int(consensus.get("block_time_ms", 1000))))
        applied, dropped = build_block(
            key, parent, self.state, txs, self.rules, timestamp_ms=parent.timestamp_ms + step, max_txs=10_000,
            round=round,
        )  # fmt: skip
        if dropped:
            raise AssertionError(f"transactions did not apply: {dropped}")
        self.blocks.append(applied)
        self._states.append(_flatten(applied))
        return applied


def _flatten(applied: AppliedBlock) -> StateView:
    """Detach a block's state from its base so that a long chain does not nest overlays."""
    kv = MemoryKV()
    kv.write([(schema.state_key(k), v) for k, v in applied.state.leaves()])
    return StoreStateView(kv, applied.tree)


PROVIDER_BALANCE = 100 * 10**9
"""What a test network's provider gets when the caller's alloc leaves it out (100 AITBC)."""


@asynccontextmanager
async def open_test_network(
    n: int,
    *,
    providers: Sequence[int] = (),
    alloc: Mapping[Address, int] | None = None,
    data_root: Path | None = None,
    block_time_ms: int = 300,
    absent: int = 0,
    authorities: int | None = None,
    genesis_params: Mapping[str, Any] | None = None,
    hub: MemoryHub | None = None,
    clock_ms: Callable[[], int] | None = None,
    miners: MinersConfig | None = None,
    wallet: WalletConfig | None = None,
    per_peer: Mapping[int, Mapping[str, Any]] | None = None,
    **config: Any,
) -> AsyncIterator[list[Node]]:
    """``n`` real peers in this process on 127.0.0.1 (authorities ``peer0..``), fully connected.

    Peers whose index is in ``providers`` sell compute (no start-up benchmark); a provider
    that ``alloc`` does not name gets :data:`PROVIDER_BALANCE` to pay its receipt and
    settle fees. ``absent`` more authorities are in the genesis but never start (a peer
    that is down). ``authorities``: only the first that many peers are authorities (one:
    a ``solo`` chain that cannot fork, whatever the load); default all. ``hub``: the peers
    meet on this in-memory network instead of libp2p on 127.0.0.1, and run their blocking
    work inline (:func:`~aitbc_p2p.node.offload.run_blocking_inline`: virtual time must not
    pass while a thread works); ``clock_ms``: the peers' wall clock (under Trio's
    MockClock, :func:`virtual_clock_ms`). ``miners``: the providers sell these external
    miners' compute (the v1 miner API) instead of running an executor. ``wallet``: peer 0
    holds this wallet for ``X-Api-Key`` clients (the seeds' client API). ``models`` (in
    ``config``): every peer checks generations with these, and the providers run them.
    ``per_peer``: more configuration for single peers (``{3: {"audit_rate": 1.0}}``; under
    ``"provider"``, its ``ProviderConfig``'s: ``{2: {"provider": {"price_per_s": 1}}}``).

    The peers check big batches of signatures in worker processes, which start by
    importing the program's main module: a script that calls this at import time must do
    so under ``if __name__ == "__main__":`` (as any multiprocessing program must).
    """
    keys = [make_key(f"peer{i}") for i in range(n + absent)]
    balances = dict(alloc or {})
    for i in providers:
        balances.setdefault(keys[i].address, PROVIDER_BALANCE)
    genesis = make_genesis(
        keys if authorities is None else keys[:authorities],
        balances,
        block_time_ms=block_time_ms,
        providers=[keys[i].address for i in providers],
        **dict(genesis_params or {}),
    )
    keys = keys[:n]
    if hub is not None:
        run_blocking_inline()
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        for i, key in enumerate(keys):
            own = dict((per_peer or {}).get(i, {}))
            selling = {"models": dict(config.get("models", {})), **own.pop("provider", {})}
            provider = (
                ProviderConfig(miner_id=f"peer{i}", benchmark=False, announce_interval_s=1.0, **selling)
                if i in providers
                else None
            )
            cfg = NodeConfig(
                key=key,
                genesis=genesis,
                data_dir=(data_root / f"peer{i}") if data_root else None,
                bootstrap=tuple(a for node in nodes for a in node.network.listen_addrs()),
                provider=provider,
                miners=miners if provider is not None else None,
                wallet=wallet if i == 0 else None,
                peer_interval_s=0.2,
                **{**config, **own},
            )
            options: dict[str, Any] = {}
            if hub is not None:
                options["network"] = hub.node_network
            if clock_ms is not None:
                options["clock_ms"] = clock_ms
            nodes.append(await stack.enter_async_context(open_node(cfg, **options)))
        with trio.fail_after(20):
            # libp2p has no "connected" event to wait on; poll its peer table.
            while any(len(node.network.connected_peers()) < n - 1 for node in nodes):  # noqa: ASYNC110
                await trio.sleep(0.05)
        yield nodes


def gate(check: Callable[[bytes], bool | ValidationResult]) -> Validator[bytes]:
    """A topic validator from a plain predicate, for network tests: True (or ACCEPT)
    accepts the message with its bytes as the value, False (or REJECT) rejects it."""

    async def validator(data: bytes) -> Verdict[bytes]:
        result = check(data)
        if result is True:
            result = ValidationResult.ACCEPT
        elif result is False:
            result = ValidationResult.REJECT
        return Verdict(result, data if result is ValidationResult.ACCEPT else None)

    return validator
