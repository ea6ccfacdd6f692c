"""L3 storage adapter: the chain store over LevelDB, with an in-memory twin."""

from aitbc_p2p.store.abc import KeyValueStore
from aitbc_p2p.store.chain import ChainStore, StoreStateView, TxLocation
from aitbc_p2p.store.leveldb import LevelDBKV
from aitbc_p2p.store.memory import MemoryKV

__all__ = ["ChainStore", "KeyValueStore", "LevelDBKV", "MemoryKV", "StoreStateView", "TxLocation"]
