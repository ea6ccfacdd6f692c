"""A child process for crash-point tests: ``python -m aitbc_p2p.testing.crashes MODE DIR``.

``commit``: commits the blocks of :func:`reference_chain` to a LevelDB store in DIR.
``vote``: signs precommits for heights 1..VOTE_HEIGHTS through a :class:`VoteGuard`,
printing each released vote as ``height hex(block) hex(signature)``.
With ``AITBC_CRASH_AT`` set, the process kills itself at that point (store/crash.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from aitbc_p2p.chain.blocks import AppliedBlock
from aitbc_p2p.chain.votes import VoteStep
from aitbc_p2p.crypto import sha256
from aitbc_p2p.store import ChainStore, LevelDBKV
from aitbc_p2p.store.crash import crash_point
from aitbc_p2p.store.votes import VoteGuard
from aitbc_p2p.testing.factories import ChainBuilder, make_genesis, make_key, make_tx

BLOCKS = 6
VOTE_HEIGHTS = 5
AUTHORITY = make_key("crash-authority")
VALIDATOR = make_key("crash-validator")
SENDERS = [make_key(f"crash-sender{i}") for i in range(3)]
GENESIS = make_genesis([AUTHORITY], {k.address: 10**12 for k in SENDERS})


def reference_chain() -> list[AppliedBlock]:
    """The same blocks every time: what the other peers of the crashed one hold."""
    builder = ChainBuilder(GENESIS, [AUTHORITY])
    for height in range(1, BLOCKS + 1):
        txs = [
            make_tx(k, nonce=height - 1, to=SENDERS[(i + 1) % 3].address, amount=height) for i, k in enumerate(SENDERS)
        ]
        builder.add_block(txs)
    return builder.blocks[1:]


def vote_block(height: int) -> bytes:
    return sha256(b"crash-test-block" + bytes([height]))


def main() -> None:
    mode, directory = sys.argv[1], Path(sys.argv[2])
    if mode == "commit":
        store = ChainStore(LevelDBKV(directory / "chain"), GENESIS)
        for applied in reference_chain():
            store.commit(applied)
        store.close()
    elif mode == "vote":
        kv = LevelDBKV(directory / "chain")
        guard = VoteGuard(kv, VALIDATOR, GENESIS.chain_id)
        for height in range(1, VOTE_HEIGHTS + 1):
            vote = guard.sign_vote(height, 0, VoteStep.PRECOMMIT, vote_block(height))
            print(height, vote.block.hex(), vote.signature.hex(), flush=True)
            crash_point("vote.after_release")
        kv.close()
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
