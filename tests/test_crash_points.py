"""SIGKILL at every named crash point, in a real subprocess, then reopen and check.

After a crash in a block commit the store is at the last whole block (never half of
one), its state hashes to that block's state root, and it goes on to the same head as
the peers that did not crash. After a crash in a vote, the validator never signs a vote
that conflicts with one it may have released.
"""

import os
import signal
import subprocess
import sys

import pytest

from aitbc_p2p.chain.votes import NIL, Vote, VoteStep
from aitbc_p2p.exceptions import ConsensusError
from aitbc_p2p.store import ChainStore, LevelDBKV
from aitbc_p2p.store.crash import CRASH_ENV, CRASH_POINTS
from aitbc_p2p.store.votes import VoteGuard
from aitbc_p2p.testing.crashes import GENESIS, VALIDATOR, reference_chain, vote_block

HIT = 3  # crash on the third time the point is reached: the genesis and block 1 are whole


def run_child(mode, tmp_path, point):
    env = {**os.environ, CRASH_ENV: f"{point}:{HIT}"}
    return subprocess.run(
        [sys.executable, "-m", "aitbc_p2p.testing.crashes", mode, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_crash_point_is_enumerated_here():
    assert {p.split(".")[0] for p in CRASH_POINTS} == {"commit", "vote", "market", "payouts"}
    # market's: tests/test_devnet_persistence.py and tests/test_devnet_lifecycle.py;
    # payouts': tests/test_devnet_miner.py
    assert len(CRASH_POINTS) == len(set(CRASH_POINTS)) == 10


@pytest.mark.parametrize("point", [p for p in CRASH_POINTS if p.startswith("commit.")])
def test_block_commit_crash_leaves_a_whole_block(tmp_path, point):
    child = run_child("commit", tmp_path, point)
    assert child.returncode == -signal.SIGKILL, child.stderr
    reference = reference_chain()
    store = ChainStore(LevelDBKV(tmp_path / "chain"), GENESIS)  # checks the state root on opening
    head = store.head.height
    expected = {"commit.before_batch": HIT - 2, "commit.after_batch": HIT - 1, "commit.after_head": HIT - 1}[point]
    assert head == expected
    assert store.head == reference[head - 1].block.header  # the same block the peers hold
    assert store.block(head + 1) is None
    for applied in reference[:head]:
        assert len(store.receipts(applied.block.height)) == len(applied.block.txs)
        assert all(store.find_tx(tx.hash) is not None for tx in applied.block.txs)
    for applied in reference[head:]:
        assert all(store.find_tx(tx.hash) is None for tx in applied.block.txs)  # no index of a lost block
        store.commit(applied)  # the restarted peer catches up ...
    assert store.head == reference[-1].block.header  # ... to the peers' head
    store.close()


@pytest.mark.parametrize("point", [p for p in CRASH_POINTS if p.startswith("vote.")])
def test_vote_crash_never_leads_to_a_conflicting_signature(tmp_path, point):
    child = run_child("vote", tmp_path, point)
    assert child.returncode == -signal.SIGKILL, child.stderr
    released = [line.split() for line in child.stdout.splitlines()]
    kv = LevelDBKV(tmp_path / "chain")
    guard = VoteGuard(kv, VALIDATOR, GENESIS.chain_id)
    for height, _block, _sig in released:  # nothing else is ever signed for a released slot
        with pytest.raises(ConsensusError):
            guard.sign_vote(int(height), 0, VoteStep.PRECOMMIT, NIL)
    crashed_height = HIT
    signed_before_crash = point != "vote.before_persist"
    if signed_before_crash:
        # Recorded (maybe released): the same vote is given again, never another one.
        vote = guard.sign_vote(crashed_height, 0, VoteStep.PRECOMMIT, vote_block(crashed_height))
        vote.verify()
        with pytest.raises(ConsensusError, match="conflicting"):
            guard.sign_vote(crashed_height, 0, VoteStep.PRECOMMIT, NIL)
    else:
        # Never recorded, so never released: the slot is still free.
        assert len(released) == HIT - 1
        Vote.verify(guard.sign_vote(crashed_height, 0, VoteStep.PRECOMMIT, NIL))
    kv.close()


def test_crash_points_are_armed_once_and_an_unknown_one_is_refused(monkeypatch):
    from aitbc_p2p.store import crash

    monkeypatch.setenv(CRASH_ENV, "commit.after_batch")  # read at start-up, not on every call
    crash.crash_point("commit.after_batch")  # not armed in this process: nothing happens
    with pytest.raises(ValueError, match="unknown crash point"):
        crash.arm("commit.sometime")
    crash.arm("vote.after_release", 2)
    try:
        crash.crash_point("commit.after_batch")  # another point: nothing
        assert crash._hits == {}
        crash.crash_point("vote.after_release")  # first hit of two: still alive
        assert crash._hits == {"vote.after_release": 1}
    finally:
        crash.arm(None)
    crash.crash_point("vote.after_release")
    assert crash._hits == {}
