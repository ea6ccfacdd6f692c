"""The facade the RPC layer speaks to (a Protocol, so tests can give it a twin)."""

from __future__ import annotations

from typing import Any, Protocol

from aitbc_p2p.chain.models import Transaction
from aitbc_p2p.market.messages import JobOffer
from aitbc_p2p.types import Address, Hash32, JobId


class NodeAPI(Protocol):
    def status(self) -> dict[str, Any]: ...

    def supply(self) -> dict[str, Any]: ...

    def account(self, address: Address) -> dict[str, Any]: ...

    def history(self, address: Address, limit: int) -> list[dict[str, Any]]: ...

    async def submit_tx(self, tx: Transaction) -> Hash32:
        """Admit to the mempool and gossip. Raises TxRejected with a named reason."""
        ...

    def tx_status(self, tx_hash: Hash32) -> dict[str, Any] | None: ...

    def tx_proof(self, tx_hash: Hash32) -> dict[str, Any] | None:
        """The receipt of a committed transaction with its Merkle path and block header."""
        ...

    def account_proof(self, address: Address) -> dict[str, Any] | None:
        """An account record with its path to the head's state root."""
        ...

    def block(self, height: int) -> dict[str, Any] | None: ...

    async def submit_job(self, offer: JobOffer, workload: str, params: dict[str, Any]) -> JobId:
        """Publish a client's signed offer and keep its payload for the chosen provider."""
        ...

    def job_status(self, job: JobId | str) -> dict[str, Any] | None:
        """A job by its JobId, its id in hex, or a unique prefix of at least 4 hex digits
        of a tracked job's. Raises MarketError if the prefix is ambiguous."""
        ...

    def job_result(self, job: JobId | str) -> dict[str, Any] | None:
        """Same lookup as job_status."""
        ...

    def providers(self) -> list[dict[str, Any]]: ...
