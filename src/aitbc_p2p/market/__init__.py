"""L2: the job market's messages and the client's choice of provider (pure)."""

from aitbc_p2p.market.jobs import JobPayload, JobResult, params_hash, result_hash
from aitbc_p2p.market.messages import Bid, CapabilityRecord, JobOffer, Load, job_cost, quote, select_bid

__all__ = [
    "Bid",
    "CapabilityRecord",
    "JobOffer",
    "JobPayload",
    "JobResult",
    "Load",
    "job_cost",
    "params_hash",
    "quote",
    "result_hash",
    "select_bid",
]
