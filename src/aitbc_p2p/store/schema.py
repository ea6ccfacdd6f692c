"""Every key the chain store writes, in one versioned schema (specs/wire.md, "Storage").

=========================  =================================  =====================
key                        value                              written
=========================  =================================  =====================
meta:schema                uint8 schema version               at creation
meta:genesis               genesis hash                       at creation
meta:head                  height (8 bytes BE) + block hash   every block
b:<height8>                canonical block (main chain)       every block
h:<hash>                   height8 (main chain)               every block
s:<bucket2><state key>     state record (chain/state.py)      changed records
t:<tx hash>                height8 + index4                   every transaction
x:<address>:<h8><i4>       tx hash                            history, per party
r:<height8>                the block's receipts               every block
u:<height8>                undo: prior value of each record   every block
c:<height8>                commit certificate (pos)           with the block
f:<hash>                   a block off the main chain         fork seen / reverted
v:<validator>              last signed vote per step          before a vote leaves
j:c:<job id>               a client job this peer tracks      market journal
j:p:<job id>               a job this peer holds as provider  market journal
j:m:<job id>               a miner's payout, until committed  market journal
w:s:<client name>          what an API key has escrowed       the peer's wallet
w:j:<job id>               the API key that submitted it      the peer's wallet
=========================  =================================  =====================
"""

from __future__ import annotations

from aitbc_p2p.chain.commitment import bucket_of, bucket_prefix

SCHEMA_VERSION = 3
"""3: escrow records name the client's agent (job_open's ``agent``)."""

SCHEMA = b"meta:schema"
GENESIS = b"meta:genesis"
HEAD = b"meta:head"
BLOCK = b"b:"
HASH = b"h:"
STATE = b"s:"
TX = b"t:"
HISTORY = b"x:"
RECEIPTS = b"r:"
UNDO = b"u:"
CERT = b"c:"
FORK = b"f:"
VOTE = b"v:"
JOURNAL = b"j:"
WALLET = b"w:"


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def block_key(height: int) -> bytes:
    return BLOCK + u64(height)


def hash_key(block_hash: bytes) -> bytes:
    return HASH + block_hash


def state_key(key: bytes) -> bytes:
    return STATE + bucket_prefix(bucket_of(key)) + key


def state_bucket_prefix(bucket: int) -> bytes:
    return STATE + bucket_prefix(bucket)


def tx_key(tx_hash: bytes) -> bytes:
    return TX + tx_hash


def history_prefix(address: str) -> bytes:
    return HISTORY + address.encode() + b":"


def history_key(address: str, height: int, index: int) -> bytes:
    return history_prefix(address) + u64(height) + u32(index)


def receipts_key(height: int) -> bytes:
    return RECEIPTS + u64(height)


def undo_key(height: int) -> bytes:
    return UNDO + u64(height)


def cert_key(height: int) -> bytes:
    return CERT + u64(height)


def fork_key(block_hash: bytes) -> bytes:
    return FORK + block_hash


def vote_key(validator: str) -> bytes:
    return VOTE + validator.encode()
