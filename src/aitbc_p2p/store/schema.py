"""Every key the chain store writes, in one versioned schema (specs/wire.md, "Storage").

=====================  =================================  =====================
key                    value                              written
=====================  =================================  =====================
meta:schema            uint8 schema version               at creation
meta:genesis           genesis hash                       at creation
meta:head              height (8 bytes BE) + block hash   every block
b:<height8>            canonical block                    every block
h:<hash>               height8                            every block
s:<state key>          state record (chain/state.py)      changed records
t:<tx hash>            height8 + index4                   every transaction
x:<address>:<h8><i4>   tx hash                            history, per party
=====================  =================================  =====================
"""

from __future__ import annotations

SCHEMA_VERSION = 1

SCHEMA = b"meta:schema"
GENESIS = b"meta:genesis"
HEAD = b"meta:head"
BLOCK = b"b:"
HASH = b"h:"
STATE = b"s:"
TX = b"t:"
HISTORY = b"x:"


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def block_key(height: int) -> bytes:
    return BLOCK + u64(height)


def hash_key(block_hash: bytes) -> bytes:
    return HASH + block_hash


def state_key(key: bytes) -> bytes:
    return STATE + key


def tx_key(tx_hash: bytes) -> bytes:
    return TX + tx_hash


def history_prefix(address: str) -> bytes:
    return HISTORY + address.encode() + b":"


def history_key(address: str, height: int, index: int) -> bytes:
    return history_prefix(address) + u64(height) + u32(index)
