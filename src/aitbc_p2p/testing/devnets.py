"""Devnets of real ``aitbc-peer`` processes with a genesis of their own, for end-to-end
tests and benches that need more than ``nodes/devnet`` gives: several providers, each
with its own price, slots and limits, and a client's peer with a balance.

``write_devnet`` writes a nodes directory that ``aitbc_p2p.cli.devnet.start`` runs as it
runs ``nodes/devnet``. Peer 1 is the client's peer: the chain's one authority, funded so
that it can pay for what it posts as the client's agent (a cancel, a reassignment, a
refund, a dispute). Peers 2, 3, ... sell compute, staked and registered in the genesis.
The devnet's wallets (client, genesis) and keys of peers 1 to 3 are reused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aitbc_p2p.crypto import PrivateKey
from aitbc_p2p.testing.factories import make_key
from aitbc_p2p.types import aitbc


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One provider peer's ``[provider]`` settings."""

    price_per_s: int = 20_000_000
    slots: int = 1
    max_queue: int = 8
    max_ram_mb: int | None = None
    cheat: str = ""
    """A cheating provider (node/cheats.py): a test fixture."""
    miners: tuple[tuple[str, str], ...] = ()
    """``(MINER_ID, API_KEY)`` of external miners it sells the compute of (``[miners]``)."""
    miner_timeout_s: float = 60.0
    payout_percent: int = 100


@dataclass(frozen=True, slots=True)
class Devnet:
    nodes: Path
    """The directory to pass as ``nodes_dir``."""
    providers: tuple[str, ...]
    """The providers' addresses: peer 2's first."""
    agent: str
    """Peer 1's address: the client's peer, its agent."""
    arbiter: str = ""
    """The last peer's address where the devnet has an arbiter (a genesis arbiter's peer)."""
    auditor: str = ""
    """The third-party auditor's address (the peer after the providers), where it has one."""


def _key(base: Path, i: int) -> PrivateKey:
    path = base / "keys" / f"peer{i}.key"
    if path.exists():
        return PrivateKey.from_hex(path.read_text())
    return make_key(f"devnet-peer{i}")


def write_devnet(
    root: Path,
    base: Path,
    providers: Sequence[ProviderSpec],
    *,
    agent_balance: int = aitbc(10),
    arbiter: bool = False,
    rules: dict[str, int] | None = None,
    models: dict[str, str] | None = None,
    auditor: bool = False,
) -> Devnet:
    """Write a devnet of ``1 + len(providers)`` peers into ``root`` (created), from the
    devnet in ``base`` (``nodes/devnet``); with ``arbiter``, one more peer, the chain's one
    arbiter. ``rules``: genesis rules to set (``dispute_blocks``, ``slash_bps``, ...).
    ``models`` (name -> directory): every peer checks generations with them (``[node]
    models``) and the providers run them (``[provider] models``). ``auditor``: one more peer
    after the providers, a funded third-party auditor of every receipt (``audit_rate`` 1)."""
    genesis = json.loads((base / "genesis.json").read_text())
    root.mkdir(parents=True)
    (root / "keys").mkdir()
    (root / "wallets").symlink_to((base / "wallets").resolve())
    keys = [_key(base, i) for i in range(1, len(providers) + 2 + auditor + arbiter)]
    for i, key in enumerate(keys, start=1):
        (root / "keys" / f"peer{i}.key").write_text(key.secret.hex())
    agent, sellers = keys[0].address, [k.address for k in keys[1 : 1 + len(providers)]]
    judge = keys[-1].address if arbiter else ""
    watcher = keys[1 + len(providers)].address if auditor else ""
    genesis["alloc"] = [
        *(a for a in genesis["alloc"] if not a.get("provider")),
        *({"address": a, "balance": aitbc(1_000), "stake": genesis["min_provider_stake"], "provider": True}
          for a in sellers),
        {"address": agent, "balance": agent_balance},
        *([{"address": judge, "balance": aitbc(10)}] if judge else []),
        *([{"address": watcher, "balance": aitbc(10)}] if watcher else []),
    ]  # fmt: skip
    if judge:
        genesis["arbiters"] = [judge]
    genesis.update(rules or {})
    # One authority: tests of the market are not tests of forks among authorities.
    genesis["consensus"]["authorities"] = [agent]
    (root / "genesis.json").write_text(json.dumps(genesis, indent=2))
    pairs = ", ".join(f"{json.dumps(name)} = {json.dumps(str(path))}" for name, path in (models or {}).items())
    model_table = "{ " + pairs + " }"
    for i in range(1, len(keys) + 1):
        text = f'data_dir = "data/peer{i}"\nkey_file = "keys/peer{i}.key"\ngenesis = "genesis.json"\n'
        text += 'listen = ["/ip4/127.0.0.1/tcp/0"]\n'
        if 1 < i <= len(providers) + 1:
            spec = providers[i - 2]
            text += (
                f'\n[provider]\nminer_id = "peer{i}"\nprice_per_s = {spec.price_per_s}\naccel_mode = "cpu"\n'
                f"max_concurrency = {spec.slots}\nmax_queue = {spec.max_queue}\nbenchmark = false\n"
                "announce_interval_s = 2.0\n"
            )
            if spec.max_ram_mb is not None:
                text += f"max_ram_mb = {spec.max_ram_mb}\n"
            if spec.cheat:
                text += f'cheat = "{spec.cheat}"\n'
            if models:
                text += f"models = {model_table}\n"
            if spec.miners:
                table = ", ".join(f'"{miner}" = "{key}"' for miner, key in spec.miners)
                text += f"\n[miners]\nkeys = {{ {table} }}\nheartbeat_timeout_s = {spec.miner_timeout_s}\n"
                text += f"payout_percent = {spec.payout_percent}\n"
        node = f"models = {model_table}\n" if models else ""
        if watcher and i == len(providers) + 2:
            node += "audit_rate = 1.0\n"
        if node:
            text += f"\n[node]\n{node}"
        (root / f"peer{i}.toml").write_text(text)
    return Devnet(root, tuple(sellers), agent, judge, watcher)
