"""Random operation sequences against a small reference model, on a real LevelDB store.

Each step is one transaction in its own block (or an empty block, or closing and
reopening the store). The model says whether the transaction must apply and what it
changes; after every step the invariants hold: supply is conserved, each account's
committed nonces run 0, 1, 2, ... with no gap, every escrow is released at most once and
matches the model, and the stored state hashes to the head's state root.
"""

import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aitbc_p2p.chain.blocks import build_block
from aitbc_p2p.chain.commitment import StateTree
from aitbc_p2p.chain.models import TxKind
from aitbc_p2p.chain.payloads import sign_release
from aitbc_p2p.chain.state import JobStatus, supply_of
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.store import ChainStore, LevelDBKV
from aitbc_p2p.testing import make_genesis, make_key, make_tx
from aitbc_p2p.types import MAX_AMOUNT

FEE = 1000
MIN_STAKE = 50_000
AUTH = make_key("stateful-authority")
USERS = [make_key(f"stateful-user{i}") for i in range(3)]
PROVIDER = make_key("stateful-provider")
ALL = [*USERS, PROVIDER]
GENESIS = make_genesis(
    [AUTH],
    {USERS[0].address: 10**9, USERS[1].address: 10**6, USERS[2].address: 5_000, PROVIDER.address: 10**5},
    providers=[PROVIDER.address],
    min_provider_stake=MIN_STAKE,
    unbonding_blocks=2,
    dispute_blocks=1,
)
RULES = ChainRules.of(GENESIS)

amounts = st.one_of(st.integers(1, 10**6), st.sampled_from([1, 2**32 - 1, 2**32, 2**63, MAX_AMOUNT]))
who = st.sampled_from(range(len(ALL)))


class Ledger(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "db"
        self.store = ChainStore(LevelDBKV(self.path), GENESIS)
        self.bal = dict(GENESIS.alloc)
        self.stake = dict.fromkeys(self.bal, 0) | dict(GENESIS.stakes)
        self.unbonding: dict[str, list[tuple[int, int]]] = {a: [] for a in self.bal}
        self.nonce = dict.fromkeys(self.bal, 0)
        self.jobs: dict[bytes, dict] = {}
        self.released: set[bytes] = set()
        self.committed_nonces: dict[str, list[int]] = {a: [] for a in self.bal}
        self.next_job = 0

    def teardown(self) -> None:
        self.store.close()
        self.dir.cleanup()

    # ------------------------------------------------------------ plumbing
    @property
    def height(self) -> int:
        return self.store.head.height

    def submit(self, key, kind, expect_ok, **payload):
        tx = make_tx(key, kind, nonce=self.nonce[key.address], fee=FEE, **payload)
        head = self.store.head
        applied, dropped = build_block(
            AUTH, head, self.store.state, [tx], RULES, timestamp_ms=head.timestamp_ms + 1, max_txs=10
        )
        assert (not dropped) == expect_ok, (kind, payload, dropped)
        self.store.commit(applied)
        if expect_ok:
            self.bal[key.address] -= FEE
            self.nonce[key.address] += 1
            self.committed_nonces[key.address].append(tx.nonce)
        return expect_ok

    def can_pay(self, address, amount=0):
        return self.bal[address] >= FEE + amount

    # ------------------------------------------------------------ rules
    @rule(i=who, j=who, amount=amounts)
    def transfer(self, i, j, amount):
        a, b = ALL[i].address, ALL[j].address
        ok = self.can_pay(a, amount) and self.bal[b] + amount - (FEE + amount if a == b else 0) <= MAX_AMOUNT
        if self.submit(ALL[i], TxKind.TRANSFER, ok, to=b, amount=amount):
            self.bal[a] -= amount
            self.bal[b] += amount

    @rule(i=who, amount=amounts)
    def stake_funds(self, i, amount):
        a = ALL[i].address
        if self.submit(ALL[i], TxKind.STAKE, self.can_pay(a, amount), amount=amount):
            self.bal[a] -= amount
            self.stake[a] += amount

    @rule(i=who, amount=amounts)
    def unstake(self, i, amount):
        a = ALL[i].address
        floor = MIN_STAKE if a == PROVIDER.address else 0
        ok = self.can_pay(a) and amount <= self.stake[a] - floor and len(self.unbonding[a]) < 16
        release = self.height + 1 + RULES.unbonding_blocks
        if self.submit(ALL[i], TxKind.UNSTAKE, ok, amount=amount):
            self.stake[a] -= amount
            self.unbonding[a].append((amount, release))

    @rule(i=who)
    def withdraw(self, i):
        a = ALL[i].address
        h = self.height + 1
        ripe = sum(x for x, r in self.unbonding[a] if r <= h)
        if self.submit(ALL[i], TxKind.WITHDRAW, self.can_pay(a) and ripe > 0):
            self.bal[a] += ripe
            self.unbonding[a] = [(x, r) for x, r in self.unbonding[a] if r > h]

    @rule(i=st.sampled_from(range(len(USERS))), amount=st.integers(1, 10**5), ttl=st.integers(1, 4))
    def job_open(self, i, amount, ttl):
        a = USERS[i].address
        job_id = self.next_job.to_bytes(32, "big")
        self.next_job += 1
        payload = dict(
            job_id=job_id, provider=PROVIDER.address, amount=amount, deadline=self.height + 1 + ttl, agent=a
        )
        if self.submit(USERS[i], TxKind.JOB_OPEN, self.can_pay(a, amount), **payload):
            self.bal[a] -= amount
            self.jobs[job_id] = dict(client=a, amount=amount, deadline=payload["deadline"], status="open")

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), cost_frac=st.integers(0, 100))
    def receipt(self, data, cost_frac):
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        job = self.jobs[job_id]
        cost = job["amount"] * cost_frac // 100
        h = self.height + 1
        in_grace = job["status"] == "cancelled" and h <= job["cancelled_h"] + RULES.dispute_blocks
        ok = self.can_pay(PROVIDER.address) and (job["status"] == "open" or in_grace) and h <= job["deadline"]
        payload = dict(job_id=job_id, result_hash=b"\x01" * 32, cost=cost, metrics={})
        if self.submit(PROVIDER, TxKind.JOB_RECEIPT, ok, **payload):
            job.update(status="receipted", cost=cost, receipt_h=h)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), by_client=st.booleans())
    def settle(self, data, by_client):
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        job = self.jobs[job_id]
        key = next(k for k in USERS if k.address == job["client"]) if by_client else PROVIDER
        h = self.height + 1
        window_ok = by_client or (job["status"] == "receipted" and h > job["receipt_h"] + RULES.dispute_blocks)
        ok = self.can_pay(key.address) and job["status"] == "receipted" and window_ok
        if self.submit(key, TxKind.JOB_SETTLE, ok, job_id=job_id, ack=b""):
            self._release(job_id, job["cost"])

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def refund(self, data):
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        job = self.jobs[job_id]
        key = data.draw(st.sampled_from(USERS))  # anyone may refund an expired escrow, to its client
        h = self.height + 1
        expired = job["status"] == "open" and h > job["deadline"]
        graced = job["status"] == "cancelled" and h > job["cancelled_h"] + RULES.dispute_blocks
        ok = self.can_pay(key.address) and (expired or graced)
        if self.submit(key, TxKind.JOB_REFUND, ok, job_id=job_id):
            self._release(job_id, 0)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), released=st.booleans())
    def cancel(self, data, released):
        """The client takes an open escrow back: at once with the provider's release, else
        after the provider's grace (in which it may still receipt)."""
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        job = self.jobs[job_id]
        key = next(k for k in USERS if k.address == job["client"])
        release = sign_release(PROVIDER, GENESIS.chain_id, job_id, 1) if released else b""
        ok = self.can_pay(key.address) and job["status"] == "open"
        if self.submit(key, TxKind.JOB_CANCEL, ok, job_id=job_id, release=release):
            if released:
                self._release(job_id, 0)
            else:
                job.update(status="cancelled", cancelled_h=self.height)

    def _release(self, job_id, to_provider):
        assert job_id not in self.released, "an escrow was released twice"
        self.released.add(job_id)
        job = self.jobs[job_id]
        self.bal[PROVIDER.address] += to_provider
        self.bal[job["client"]] += job["amount"] - to_provider
        job["status"] = "settled" if to_provider or job["status"] == "receipted" else "refunded"

    @rule()
    def empty_block(self):
        head = self.store.head
        applied, _ = build_block(AUTH, head, self.store.state, [], RULES, timestamp_ms=head.timestamp_ms + 1, max_txs=1)
        self.store.commit(applied)

    @rule()
    def reopen(self):
        head = self.store.head
        self.store.close()
        self.store = ChainStore(LevelDBKV(self.path), GENESIS)
        assert self.store.head == head

    # ------------------------------------------------------------ invariants
    @invariant()
    def supply_is_conserved(self):
        supply = supply_of(self.store.state, GENESIS.total_supply)
        assert supply.total == GENESIS.total_supply, supply

    @invariant()
    def accounts_match_the_model(self):
        for a in self.bal:
            acct = self.store.state.account(a)
            assert (acct.balance, acct.nonce, acct.stake) == (self.bal[a], self.nonce[a], self.stake[a])
            assert list(acct.unbonding) == self.unbonding[a]
            assert self.committed_nonces[a] == list(range(self.nonce[a]))  # no gap, no repeat

    @invariant()
    def escrows_match_the_model(self):
        for job_id, job in self.jobs.items():
            stored = self.store.state.job(job_id)
            assert stored is not None, "a modelled job is missing"
            assert str(stored.status) == job["status"]
            assert (job_id in self.released) == (stored.status in (JobStatus.SETTLED, JobStatus.REFUNDED))

    @invariant()
    def state_matches_the_committed_root(self):
        assert StateTree.from_records(self.store.state.leaves()).root == self.store.head.state_root


Ledger.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestLedger = Ledger.TestCase
