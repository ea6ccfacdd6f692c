"""Genesis documents: JSON text <-> :class:`Genesis` (specs/transactions.md, "Genesis")."""

from __future__ import annotations

import json
from typing import Any

from aitbc_p2p.chain.models import Genesis
from aitbc_p2p.crypto.keys import validate_address
from aitbc_p2p.exceptions import ConfigError, CryptoError
from aitbc_p2p.types import MAX_AMOUNT, Address


def genesis_from_json(text: str) -> Genesis:
    """Parse a genesis document.

    Raises:
        ConfigError: invalid JSON, missing fields, bad addresses or amounts.
    """
    try:
        doc = json.loads(text)
        alloc: list[tuple[Address, int]] = []
        labels: dict[str, str] = {}
        for entry in doc["alloc"]:
            address = validate_address(entry["address"])
            units = entry["balance"]
            if not isinstance(units, int) or isinstance(units, bool) or not 0 <= units <= MAX_AMOUNT:
                raise ConfigError(f"balance of {address} must be an integer of base units")
            alloc.append((address, units))
            if "label" in entry:
                labels[address] = str(entry["label"])
        consensus = doc["consensus"]
        if not isinstance(consensus, dict) or not isinstance(consensus.get("engine"), str):
            raise ConfigError("consensus must name an engine")
        for a in consensus.get("authorities", []):
            validate_address(a)
        genesis = Genesis(
            chain_id=str(doc["chain_id"]),
            timestamp_ms=int(doc["timestamp_ms"]),
            alloc=tuple(alloc),
            consensus=consensus,
            min_fee=int(doc.get("min_fee", 1000)),
            labels=labels,
        )
    except (ValueError, KeyError, TypeError, CryptoError) as e:
        raise ConfigError(f"bad genesis document: {e}") from e
    if len({a for a, _ in alloc}) != len(alloc):
        raise ConfigError("genesis allocates to the same address twice")
    return genesis


def genesis_to_json(genesis: Genesis) -> str:
    doc: dict[str, Any] = {
        "chain_id": genesis.chain_id,
        "timestamp_ms": genesis.timestamp_ms,
        "min_fee": genesis.min_fee,
        "consensus": dict(genesis.consensus),
        "alloc": [
            {"address": a, "balance": units, **({"label": genesis.labels[a]} if a in genesis.labels else {})}
            for a, units in genesis.alloc
        ],
    }
    return json.dumps(doc, indent=2) + "\n"
