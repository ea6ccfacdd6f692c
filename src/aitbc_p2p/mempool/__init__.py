"""L2: the transaction pool."""

from aitbc_p2p.mempool.pool import Mempool, PoolStats

__all__ = ["Mempool", "PoolStats"]
