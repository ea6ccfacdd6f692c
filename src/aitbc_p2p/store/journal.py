"""The market's journal: the jobs a peer is still answerable for, kept beside the chain so
that a restart (or a SIGKILL) resumes them (specs/market.md, "Persistence").

Three kinds of record, each one value per job, written whole:

- ``j:c:<job id>``: a job this peer tracks for a client (its offer, payload, bids, phase,
  the result once delivered, the failover's state);
- ``j:p:<job id>``: a job this peer accepted as a provider (the client's peer, the result
  it holds, the cost it receipted, the client's delivery ack);
- ``j:m:<job id>``: a job an external miner proved, until its payout is committed (the
  miner, its wallet, the signed transfer once there is one).

The journal stores bytes; what they mean is the market's (node/market.py). Records are
written in one batch per flush, synced, so a record is either whole on disk or absent.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum

from aitbc_p2p.store import schema
from aitbc_p2p.store.abc import KeyValueStore
from aitbc_p2p.types import Hash32, JobId


class Side(Enum):
    CLIENT = b"c:"
    PROVIDER = b"p:"
    PAYOUT = b"m:"
    """What this peer owes an external miner for a job (node/payouts.py)."""


def journal_key(side: Side, job_id: JobId) -> bytes:
    return schema.JOURNAL + side.value + job_id


class MarketJournal:
    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    def records(self, side: Side) -> Iterator[tuple[JobId, bytes]]:
        """Every record of one side, in job id order; keys of another length are skipped."""
        prefix = schema.JOURNAL + side.value
        for key, value in self._kv.iterate(prefix):
            job_id = key[len(prefix) :]
            if len(job_id) == 32:
                yield JobId(Hash32(job_id)), value

    def write(self, puts: list[tuple[Side, JobId, bytes]], deletes: list[tuple[Side, JobId]]) -> None:
        """Put and delete records in one synced batch (blocking: run it off the Trio thread)."""
        self._kv.write(
            [(journal_key(side, job_id), value) for side, job_id, value in puts],
            [journal_key(side, job_id) for side, job_id in deletes],
            sync=True,
        )
