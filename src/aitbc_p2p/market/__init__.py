"""L2: the job market's messages and the client's choice of provider (pure)."""

from aitbc_p2p.market.jobs import JobPayload, JobResult, params_hash, result_hash
from aitbc_p2p.market.messages import (
    Bid,
    CapabilityRecord,
    JobOffer,
    Load,
    escrow_amount,
    job_cost,
    quote,
    rank_bids,
    select_bid,
)

__all__ = [
    "Bid",
    "CapabilityRecord",
    "JobOffer",
    "JobPayload",
    "JobResult",
    "Load",
    "escrow_amount",
    "job_cost",
    "params_hash",
    "quote",
    "rank_bids",
    "result_hash",
    "select_bid",
]
