"""Test helpers that ship with the library: keys, genesis, a chain builder, test networks."""

from aitbc_p2p.testing.factories import (
    DEVNET_BALANCES,
    ChainBuilder,
    gate,
    make_genesis,
    make_key,
    make_tx,
    open_test_network,
    virtual_clock_ms,
)

__all__ = [
    "DEVNET_BALANCES",
    "ChainBuilder",
    "gate",
    "make_genesis",
    "make_key",
    "make_tx",
    "open_test_network",
    "virtual_clock_ms",
]
