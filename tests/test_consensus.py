"""Consensus engines, the BFT round machine, commit certificates and the vote guard."""

import pytest

from aitbc_p2p.chain.models import Block, BlockHeader
from aitbc_p2p.chain.votes import NIL, Vote, VoteStep
from aitbc_p2p.consensus import (
    CertifiedFinality,
    ForkChoiceFinality,
    PoaEngine,
    PosEngine,
    SoloEngine,
    engine_for,
    finality_for,
)
from aitbc_p2p.consensus.tendermint import (
    ArmTimeout,
    BuildAndPropose,
    CastVote,
    Commit,
    HeightMachine,
    Proposal,
    Propose,
    Step,
    verify_certificate,
)
from aitbc_p2p.exceptions import ConsensusError
from aitbc_p2p.store import LevelDBKV
from aitbc_p2p.store.votes import VoteGuard
from aitbc_p2p.testing import make_genesis, make_key

Z = b"\x00" * 32


def header(height, proposer, ts, round=0):
    return BlockHeader("c", height, Z, ts, proposer, Z, Z, Z, round)


def test_poa_round_robin_with_backup_rounds():
    keys = [make_key(f"a{i}") for i in range(3)]
    engine = PoaEngine([k.address for k in keys], block_time_ms=1000, backup_ms=500)
    assert [engine.proposer(h) for h in range(4)] == [keys[i % 3].address for i in range(4)]
    assert engine.proposer(5, 1) == keys[0].address  # the backup for height 5
    parent = header(4, keys[1].address, 10_000)
    engine.validate_header(header(5, keys[2].address, 11_000), parent)
    engine.validate_header(header(5, keys[0].address, 11_500, round=1), parent)
    recent = [keys[1].address]  # the parent's proposer
    engine.check_recency(header(5, keys[2].address, 11_000), recent)
    engine.check_recency(header(5, keys[0].address, 11_500, round=1), recent)
    with pytest.raises(ConsensusError, match="proposed by"):  # round 0 is keys[2]'s
        engine.check_recency(header(5, keys[0].address, 11_000), recent)
    with pytest.raises(ConsensusError, match="not an authority"):
        engine.validate_header(header(5, make_key("outsider").address, 11_000), parent)
    with pytest.raises(ConsensusError, match="slot"):
        engine.validate_header(header(5, keys[2].address, 10_999), parent)
    with pytest.raises(ConsensusError, match="slot"):  # a backup must wait for its round
        engine.validate_header(header(5, keys[0].address, 11_499, round=1), parent)
    primary, backup = header(5, keys[2].address, 11_000), header(5, keys[0].address, 11_500, round=1)
    assert engine.fork_score(primary) > engine.fork_score(backup)
    assert engine.fork_score(header(6, keys[0].address, 12_000, round=2)) > engine.fork_score(primary)


def test_poa_finality_needs_depth_and_a_majority_of_distinct_proposers():
    a, b, c, d, e = (make_key(f"f{i}").address for i in range(5))
    poa = PoaEngine([a, b, c, d, e])  # n = 5; a majority is three
    assert poa.final_depth([]) == 0
    rotation = [a, b, c, d, e] * 4
    assert poa.final_depth(rotation) == 5  # a majority at depth 2, but five deep first
    assert poa.final_depth([a, b, c, d]) == 4  # a short chain: nothing final yet
    assert poa.final_depth([a, a, b, a, a, a, c, *rotation]) == 6  # repeats count once
    # A minority (two of five) proposing alone makes nothing final, however deep it goes.
    assert poa.final_depth([a, b] * 50) == 100
    assert SoloEngine([a]).final_depth([a, a]) == 0
    assert PoaEngine([a]).final_depth([a, a]) == 1  # one authority: one block deep, as before
    two = PoaEngine([a, b])  # both are needed, two deep
    assert two.final_depth([a, a, a]) == 3 and two.final_depth([a, a, b, a]) == 2


def test_poa_signer_recency_needs_a_majority_of_distinct_proposers_to_grow():
    """Clique's rule: an authority proposes at most one of any floor(n/2)+1 consecutive
    blocks; the schedule skips the authorities that proposed the last floor(n/2)."""
    a, b, c, d, e = (make_key(f"r{i}").address for i in range(5))
    assert [PoaEngine([a, b, c, d, e][:n]).recency for n in range(1, 6)] == [0, 1, 1, 2, 2]
    assert SoloEngine([a]).recency == 0
    poa = PoaEngine([a, b, c, d, e])
    # Height 10: rotation from a (10 % 5 = 0). With a and b recent, round 0 is c's.
    assert [poa.proposer(10, r) for r in range(5)] == [a, b, c, d, e]
    assert [poa.proposer(10, r, [b, a]) for r in range(5)] == [c, d, e, c, d]
    assert poa.proposer(10, 0, [c, d, a]) == a  # only the last two count: a proposed three down
    poa.check_recency(header(10, c, 0), [b, a])
    poa.check_recency(header(10, a, 0), [c, d, a])
    with pytest.raises(ConsensusError, match="proposed one of the 2 blocks below it"):
        poa.check_recency(header(10, a, 0), [b, a])
    with pytest.raises(ConsensusError, match="must be proposed by"):
        poa.check_recency(header(10, d, 0), [b, a])  # d's turn is round 1
    solo = SoloEngine([a])
    solo.check_recency(header(9, a, 0), [a, a])  # one authority signs every block
    assert solo.proposer(9, 0, [a]) == a
    # A backup's block costs the next height nothing: the authority it bars is skipped.
    three = PoaEngine([a, b, c])
    assert three.proposer(3, 1, [c]) == b  # height 3: a's turn; a backup round: b
    assert three.proposer(4, 0, [b]) == c  # height 4 is b's turn, but b just proposed: c's at once

    finality = ForkChoiceFinality(three)  # recency 1
    chain = {1: b, 2: c}
    assert finality.recent(2, chain.get) == [c]
    finality.check_proposer(header(3, a, 0), chain.get)
    with pytest.raises(ConsensusError):
        finality.check_proposer(header(3, c, 0, round=2), chain.get)
    assert finality.recent(0, chain.get) == []  # nothing below block 1 but the genesis
    finality.check_proposer(header(1, b, 0), chain.get)
    pos = engine_for(make_genesis([make_key("r0")], engine="pos", stakes={a: 1}, validators=[a]))
    certified = finality_for(pos)  # BFT: the certificate commits, not who proposed below
    certified.check_proposer(header(3, a, 0), {1: a, 2: a}.get)
    assert certified.recent(2, {1: a, 2: a}.get) == []


def test_each_kind_of_engine_gets_its_finality_policy():
    a, b, c = (make_key(f"f{i}").address for i in range(3))
    poa, solo = PoaEngine([a, b, c]), SoloEngine([a])
    pos = engine_for(make_genesis([make_key("f0")], engine="pos", stakes={a: 1}, validators=[a]))
    assert (poa.kind, solo.kind, pos.kind) == ("fork_choice", "fork_choice", "bft")
    assert (poa.rounds, solo.rounds) == (3, 1)

    certified = finality_for(pos)
    assert isinstance(certified, CertifiedFinality)
    assert certified.final_depth(100, lambda h: None) == 0  # a committed block carries its quorum
    tip, head = header(5, a, 0), header(5, b, 0, round=1)
    assert not certified.better(tip, head) and not certified.better(head, tip)  # BFT never forks
    unsigned = Block(header(1, a, 0), ())
    with pytest.raises(ConsensusError, match="no commit certificate"):
        certified.check(unsigned, ())

    chain = {h: [a, b, c][h % 3] for h in range(1, 21)}
    fork_choice = finality_for(poa)
    assert isinstance(fork_choice, ForkChoiceFinality)
    assert fork_choice.final_depth(0, chain.get) == 0
    assert fork_choice.final_depth(20, chain.get) == 3  # three deep, three distinct proposers
    assert fork_choice.better(tip, head)  # the primary's round wins
    fork_choice.check(unsigned, ())  # fork choice reads no certificate
    assert fork_choice.certificate_bytes(()) is None

    lone = {h: a for h in range(1, 21)}  # one authority of three alone: never final
    assert finality_for(poa).final_depth(20, lone.get) == 20


def test_fork_choice_finality_keeps_what_it_was_told_and_stays_bounded():
    a, b, c = (make_key(f"f{i}").address for i in range(3))
    finality = ForkChoiceFinality(PoaEngine([a, b, c]), window=8)
    for h in range(1, 101):
        finality.committed(Block(header(h, [a, b, c][h % 3], 0), ()))
        assert len(finality) <= 16
    asked: list[int] = []

    def from_store(h):
        asked.append(h)
        return [a, b, c][h % 3]

    assert finality.final_depth(100, from_store) == 3 and asked == []  # what it was told answers
    finality.reverted(100)  # a reverted head is forgotten: a new block there is asked for
    assert finality.final_depth(100, from_store) == 3 and asked == [100]


def test_engine_selection_by_genesis():
    a, b = make_key("a"), make_key("b")
    assert isinstance(engine_for(make_genesis([a])), SoloEngine)
    assert engine_for(make_genesis([a, b])).name == "poa"
    stakes = {a.address: 3, b.address: 1}
    pos = engine_for(make_genesis([a, b], engine="pos", stakes=stakes, validators=[a.address, b.address]))
    assert isinstance(pos, PosEngine) and pos.total == 4 and pos.quorum() == 3
    with pytest.raises(ConsensusError, match="unknown"):
        engine_for(make_genesis([a], engine="nakamoto"))
    with pytest.raises(ConsensusError, match="exactly one"):
        engine_for(make_genesis([a, b], engine="solo"))
    with pytest.raises(ConsensusError, match="positive"):
        engine_for(make_genesis([a, b], engine="pos", validators=[a.address]))


def test_pos_proposers_follow_stake():
    heavy, light = make_key("heavy"), make_key("light")
    engine = PosEngine("c", {heavy.address: 9, light.address: 1})
    picks = [engine.proposer(h, r) for h in range(500) for r in range(2)]
    share = picks.count(heavy.address) / len(picks)
    assert 0.85 < share < 0.95


# ------------------------------------------------------------------ the round machine
KEYS = [make_key(f"v{i}") for i in range(4)]
ENGINE = PosEngine("c", {k.address: 10 for k in KEYS}, block_time_ms=100, round_timeout_ms=100)


def block_for(round, proposer):
    head = BlockHeader("c", 1, Z, 100, proposer.address, Z, Z, Z, round).signed(proposer)
    return Block(head, ())


class Net:
    """Four machines passing messages in memory; ``down`` never speak."""

    def __init__(self, down=()):
        self.down = {KEYS[i].address for i in down}
        self.machines = {k.address: HeightMachine(ENGINE, 1, k.address) for k in KEYS}
        self.keys = {k.address: k for k in KEYS}
        self.timeouts: list[tuple[str, ArmTimeout]] = []
        self.commits: dict[str, Commit] = {}

    def run(self, rounds_of_timeouts=6):
        for m in self.machines.values():
            m.start(0)
        for _ in range(rounds_of_timeouts):
            self.flush()
            pending, self.timeouts = self.timeouts, []
            for who, t in pending:
                if who not in self.commits:
                    self.machines[who].on_timeout(t.step, t.round)
        self.flush()

    def flush(self):
        busy = True
        while busy:
            busy = False
            for who, m in self.machines.items():
                for action in m.take_actions():
                    busy = True
                    self.act(who, action)

    def act(self, who, action):
        if who in self.down:
            return
        key = self.keys[who]
        if isinstance(action, BuildAndPropose | Propose):
            block = block_for(action.round, key) if isinstance(action, BuildAndPropose) else action.block
            vr = -1 if isinstance(action, BuildAndPropose) else action.valid_round
            p = Proposal("c", 1, action.round, vr, block, key.address).signed(key)
            p.verify(ENGINE)
            for m in self.machines.values():
                m.on_proposal(p, valid=True)
        elif isinstance(action, CastVote):
            vote = Vote("c", 1, action.round, action.step, action.block, key.address).signed(key)
            for m in self.machines.values():
                m.on_vote(vote)
        elif isinstance(action, ArmTimeout):
            self.timeouts.append((who, action))
        elif isinstance(action, Commit):
            self.commits[who] = action


def test_four_validators_decide_one_block():
    net = Net()
    net.run()
    assert len(net.commits) == 4
    decided = {c.block.hash for c in net.commits.values()}
    assert len(decided) == 1
    for c in net.commits.values():
        assert verify_certificate(ENGINE, c.block.hash, 1, c.certificate) == c.round


@pytest.mark.parametrize("down", range(4))
def test_one_validator_down_still_decides(down):
    net = Net(down=[down])
    net.run()
    live = {k.address for i, k in enumerate(KEYS) if i != down}
    assert live <= set(net.commits)
    assert len({net.commits[a].block.hash for a in live}) == 1
    if ENGINE.proposer(1, 0) == KEYS[down].address:
        assert all(net.commits[a].round >= 1 for a in live)  # round 0's proposer was silent


def test_two_down_never_decides():
    net = Net(down=[0, 1])
    net.run()
    assert not net.commits


def test_lock_keeps_a_validator_on_its_precommitted_block():
    m = HeightMachine(ENGINE, 1, KEYS[0].address)
    m.start(0)
    proposer = next(k for k in KEYS if k.address == ENGINE.proposer(1, 0))
    b0 = block_for(0, proposer)
    m.on_proposal(Proposal("c", 1, 0, -1, b0, proposer.address).signed(proposer), valid=True)
    for k in KEYS[1:]:
        m.on_vote(Vote("c", 1, 0, VoteStep.PREVOTE, b0.hash, k.address).signed(k))
    assert m.locked is b0 and m.locked_round == 0
    m.on_timeout(Step.PRECOMMIT, 0)  # no decision: round 1 with another proposal
    p1 = next(k for k in KEYS if k.address == ENGINE.proposer(1, 1))
    other = block_for(1, p1)
    m.take_actions()
    m.on_proposal(Proposal("c", 1, 1, -1, other, p1.address).signed(p1), valid=True)
    votes = [a for a in m.take_actions() if isinstance(a, CastVote) and a.step is VoteStep.PREVOTE]
    if other.hash != b0.hash:
        assert votes and votes[0].block == NIL  # locked on b0: never prevotes the other block


def test_certificate_checks():
    b = block_for(0, KEYS[0])
    votes = [Vote("c", 1, 0, VoteStep.PRECOMMIT, b.hash, k.address).signed(k) for k in KEYS]
    stranger = make_key("x")
    assert verify_certificate(ENGINE, b.hash, 1, votes[:3]) == 0
    for bad, why in [
        (votes[:2], "quorum"),
        ([*votes[:2], votes[0]], "repeated"),
        ([*votes[:2], Vote("c", 1, 0, VoteStep.PRECOMMIT, Z, KEYS[2].address).signed(KEYS[2])], "something else"),
        ([*votes[:2], Vote("c", 1, 0, VoteStep.PRECOMMIT, b.hash, stranger.address).signed(stranger)], "unknown"),
        ([], "no commit"),
    ]:
        with pytest.raises(ConsensusError, match=why):
            verify_certificate(ENGINE, b.hash, 1, bad)


def test_vote_guard_never_signs_conflicting_votes_across_reopen(tmp_path):
    key = KEYS[0]
    kv = LevelDBKV(tmp_path / "db")
    guard = VoteGuard(kv, key, "c")
    a = guard.sign_vote(5, 0, VoteStep.PRECOMMIT, b"\x01" * 32)
    assert guard.sign_vote(5, 0, VoteStep.PRECOMMIT, b"\x01" * 32).signature == a.signature
    with pytest.raises(ConsensusError, match="conflicting"):
        guard.sign_vote(5, 0, VoteStep.PRECOMMIT, b"\x02" * 32)
    kv.close()
    kv = LevelDBKV(tmp_path / "db")
    again = VoteGuard(kv, key, "c")
    with pytest.raises(ConsensusError, match="conflicting"):
        again.sign_vote(5, 0, VoteStep.PRECOMMIT, NIL)
    with pytest.raises(ConsensusError, match="already signed"):
        again.sign_vote(4, 3, VoteStep.PRECOMMIT, NIL)
    again.sign_vote(5, 1, VoteStep.PRECOMMIT, NIL)  # a later round is a new slot
    kv.close()


def _a_proposal_wire():
    from aitbc_p2p.testing import ChainBuilder

    key = make_key("p-author")
    genesis = make_genesis([key])
    block = ChainBuilder(genesis, [key]).add_block().block
    return Proposal(genesis.chain_id, 1, 0, -1, block, key.address).signed(key).to_wire()


@pytest.mark.parametrize(
    "change",
    [
        {"sig": 2**27},  # bytes(2**27) would allocate 128 MiB from five bytes
        {"sig": -1},
        {"sig": b"\x01" * 200},
        {"height": "1"},  # int("1") would coerce
        {"height": True},
        {"round": -1},
        {"valid_round": -2},
        {"chain_id": 5},
        {"proposer": "not an address"},
        {"block": 7},
        {"extra": 1},
    ],
)
def test_a_malformed_proposal_is_a_validation_error(change):
    from aitbc_p2p.exceptions import ValidationError

    wire = _a_proposal_wire()
    assert Proposal.from_wire(wire).to_wire() == wire
    with pytest.raises(ValidationError, match=r"malformed proposal|block"):
        Proposal.from_wire({**wire, **change})
