"""Genesis documents: JSON text <-> :class:`Genesis` (specs/transactions.md, "Genesis")."""

from __future__ import annotations

import json
from typing import Any

from aitbc_p2p.chain.models import (
    DEFAULT_ARBITER_QUORUM,
    DEFAULT_CHALLENGE_BLOCKS,
    DEFAULT_CHALLENGER_BPS,
    DEFAULT_DISPUTE_BLOCKS,
    DEFAULT_DISPUTE_BOND,
    DEFAULT_MIN_PROVIDER_STAKE,
    DEFAULT_SLASH_BPS,
    DEFAULT_UNBONDING_BLOCKS,
    Genesis,
)
from aitbc_p2p.crypto.keys import validate_address
from aitbc_p2p.exceptions import ConfigError, CryptoError
from aitbc_p2p.types import MAX_AMOUNT, MAX_CHAIN_ID, Address


def genesis_from_json(text: str) -> Genesis:
    """Parse a genesis document.

    Raises:
        ConfigError: invalid JSON, missing fields, bad addresses or amounts.
    """
    try:
        doc = json.loads(text)
        alloc: list[tuple[Address, int]] = []
        stakes: list[tuple[Address, int]] = []
        providers: list[Address] = []
        labels: dict[str, str] = {}
        for entry in doc["alloc"]:
            address = validate_address(entry["address"])
            alloc.append((address, _units(entry, "balance", address)))
            if "stake" in entry:
                stakes.append((address, _units(entry, "stake", address)))
            if entry.get("provider", False) is True:
                providers.append(address)
            if "label" in entry:
                labels[address] = str(entry["label"])
        consensus = doc["consensus"]
        if not isinstance(consensus, dict) or not isinstance(consensus.get("engine"), str):
            raise ConfigError("consensus must name an engine")
        for a in consensus.get("authorities", []):
            validate_address(a)
        chain_id = doc["chain_id"]
        if not isinstance(chain_id, str) or not 1 <= len(chain_id) <= MAX_CHAIN_ID:
            raise ConfigError(f"chain_id must be text of 1 to {MAX_CHAIN_ID} characters")
        genesis = Genesis(
            chain_id=chain_id,
            timestamp_ms=int(doc["timestamp_ms"]),
            alloc=tuple(alloc),
            consensus=consensus,
            min_fee=_units(doc, "min_fee", "the chain", 1000),
            stakes=tuple(stakes),
            providers=tuple(providers),
            arbiters=tuple(validate_address(a) for a in doc.get("arbiters", [])),
            unbonding_blocks=_units(doc, "unbonding_blocks", "the chain", DEFAULT_UNBONDING_BLOCKS),
            dispute_blocks=_units(doc, "dispute_blocks", "the chain", DEFAULT_DISPUTE_BLOCKS),
            min_provider_stake=_units(doc, "min_provider_stake", "the chain", DEFAULT_MIN_PROVIDER_STAKE),
            dispute_bond=_units(doc, "dispute_bond", "the chain", DEFAULT_DISPUTE_BOND),
            slash_bps=_units(doc, "slash_bps", "the chain", DEFAULT_SLASH_BPS),
            challenger_bps=_units(doc, "challenger_bps", "the chain", DEFAULT_CHALLENGER_BPS),
            arbiter_quorum=_units(doc, "arbiter_quorum", "the chain", DEFAULT_ARBITER_QUORUM),
            challenge_blocks=_units(doc, "challenge_blocks", "the chain", DEFAULT_CHALLENGE_BLOCKS),
            labels=labels,
        )
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, CryptoError) as e:
        raise ConfigError(f"bad genesis document: {e}") from e
    for name in ("slash_bps", "challenger_bps"):
        if getattr(genesis, name) > 10_000:
            raise ConfigError(f"{name} is in basis points: at most 10000")
    if not 1 <= genesis.arbiter_quorum <= max(1, len(set(genesis.arbiters))):
        raise ConfigError(f"arbiter_quorum must be 1 to the number of arbiters, not {genesis.arbiter_quorum}")
    if len({a for a, _ in alloc}) != len(alloc):
        raise ConfigError("genesis allocates to the same address twice")
    for address in genesis.providers:
        if genesis.stake_of(address) < genesis.min_provider_stake:
            raise ConfigError(f"provider {address} stakes less than min_provider_stake")
    return genesis


def _units(doc: Any, name: str, who: str, default: int | None = None) -> int:
    value = doc.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_AMOUNT:
        raise ConfigError(f"{name} of {who} must be an integer in [0, 2^64-1]")
    return value


def genesis_to_json(genesis: Genesis) -> str:
    stakes = dict(genesis.stakes)

    def entry(a: Address, units: int) -> dict[str, Any]:
        out: dict[str, Any] = {"address": a, "balance": units}
        if a in stakes:
            out["stake"] = stakes[a]
        if a in genesis.providers:
            out["provider"] = True
        if a in genesis.labels:
            out["label"] = genesis.labels[a]
        return out

    doc: dict[str, Any] = {
        "chain_id": genesis.chain_id,
        "timestamp_ms": genesis.timestamp_ms,
        "min_fee": genesis.min_fee,
        "unbonding_blocks": genesis.unbonding_blocks,
        "dispute_blocks": genesis.dispute_blocks,
        "min_provider_stake": genesis.min_provider_stake,
        "dispute_bond": genesis.dispute_bond,
        "slash_bps": genesis.slash_bps,
        "challenger_bps": genesis.challenger_bps,
        "arbiters": list(genesis.arbiters),
        **({"arbiter_quorum": genesis.arbiter_quorum} if genesis.arbiter_quorum != DEFAULT_ARBITER_QUORUM else {}),
        **({"challenge_blocks": genesis.challenge_blocks} if genesis.challenge_blocks else {}),
        "consensus": dict(genesis.consensus),
        "alloc": [entry(a, units) for a, units in genesis.alloc],
    }
    return json.dumps(doc, indent=2) + "\n"
