"""The wallet's books, read from the chain: what it earned selling compute, what it spent
buying it, how its jobs ended (the seed simulation's ``earn`` and ``stats``), and its key
files (``list``, ``import``, ``export``).

The seed kept these books by hand (``earn 50 --job abc123`` recorded a payment). Here the
chain keeps them: ``earn`` lists what settled receipts paid, and ``earn AMOUNT --job ID``
checks that claim against the chain instead of recording it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aitbc_p2p.crypto import PrivateKey, key_file_address
from aitbc_p2p.exceptions import AitbcError, CryptoError, RpcError
from aitbc_p2p.rpc import RpcClient
from aitbc_p2p.types import format_aitbc

HISTORY_LIMIT = 500
"""Transactions read back per account (the RPC's most): the books cover these."""


@dataclass(frozen=True, slots=True)
class Deal:
    """One job this wallet bought or sold, as its escrow stands."""

    job_id: str
    height: int
    status: str
    cost: int
    amount: int
    other: str
    """The provider of a job bought, the client of one sold."""


async def _deals(rpc: RpcClient, txs: Iterable[dict[str, Any]], kind: str, other: str) -> list[Deal]:
    deals = []
    seen: set[str] = set()
    for tx in txs:
        if tx["kind"] != kind or tx["payload"]["job_id"] in seen:
            continue
        job_id = tx["payload"]["job_id"]
        seen.add(job_id)
        try:
            escrow = (await rpc.job(job_id))["escrow"] or {}
        except RpcError as e:
            if e.code != "NOT_FOUND":
                raise
            escrow = {}
        status = str(escrow.get("status", "unknown"))
        deals.append(Deal(job_id, tx["height"], status, int(escrow.get("cost", 0)), int(escrow.get("amount", 0)),
                          str(escrow.get(other, ""))))  # fmt: skip
    return deals


async def books(rpc: RpcClient, address: str) -> tuple[list[Deal], list[Deal], list[dict[str, Any]]]:
    """``(bought, sold, history)``: the jobs this address escrowed as a client, those it
    receipted as a provider, and the transactions they were read from."""
    history = await rpc.history(address, HISTORY_LIMIT)
    txs = [tx for tx in history if tx["from"] == address]
    bought = await _deals(rpc, txs, "job_open", "provider")
    sold = await _deals(rpc, txs, "job_receipt", "client")
    return bought, sold, history


def earnings(sold: list[Deal]) -> dict[str, Any]:
    paid = [d for d in sold if d.status == "settled"]
    total = sum(d.cost for d in paid)
    return {
        "jobs": [{"job_id": d.job_id, "height": d.height, "earned": d.cost, "client": d.other} for d in paid],
        "total": total,
        "total_aitbc": format_aitbc(total),
    }


def check_earning(sold: list[Deal], job: str, amount: int) -> dict[str, Any]:
    """The seed's ``earn AMOUNT --job ID``, checked: the job is one this wallet sold and
    settled, and it paid ``amount``. Raises AitbcError saying what the chain holds instead."""
    matches = [d for d in sold if d.job_id.startswith(job.lower())]
    if not matches:
        raise AitbcError(f"job {job} was not receipted by this wallet (in its last {HISTORY_LIMIT} transactions)")
    if len(matches) > 1:
        raise AitbcError(f"job id {job} is ambiguous: {len(matches)} jobs this wallet sold start with it")
    deal = matches[0]
    if deal.status != "settled":
        raise AitbcError(f"job {deal.job_id[:16]} is {deal.status}, not settled: it has paid nothing yet")
    if deal.cost != amount:
        raise AitbcError(
            f"job {deal.job_id[:16]} paid {format_aitbc(deal.cost)} AITBC, not {format_aitbc(amount)} "
            f"({deal.cost} base units)"
        )
    return {"job_id": deal.job_id, "earned": deal.cost, "earned_aitbc": format_aitbc(deal.cost), "verified": True}


def stats(address: str, bought: list[Deal], sold: list[Deal], reputation: dict[str, int]) -> dict[str, Any]:
    """Jobs bought and sold, what they cost and earned, and how they ended."""

    def side(deals: list[Deal], money: str) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        for d in deals:
            by_status[d.status] = by_status.get(d.status, 0) + 1
        settled = [d for d in deals if d.status == "settled"]
        total = sum(d.cost for d in settled)
        ended = by_status.get("settled", 0) + by_status.get("refunded", 0)
        rate = None if not ended else round(by_status.get("settled", 0) / ended, 4)
        return {"jobs": len(deals), "by_status": by_status, money: total, f"{money}_aitbc": format_aitbc(total),
                "success_rate": rate}  # fmt: skip

    sold_side = side(sold, "earned")
    record = reputation
    tried = record.get("settled", 0) + record.get("failed", 0) + record.get("lost", 0)
    if tried:  # as a provider, the chain's own record counts the jobs that failed before any receipt
        sold_side["success_rate"] = round(record.get("settled", 0) / tried, 4)
    return {"address": address, "bought": side(bought, "spent"), "sold": sold_side, "reputation": record}


def wallet_files(directory: Path) -> list[dict[str, str]]:
    """The key files in ``directory`` with the addresses they name (no password needed)."""
    found = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            found.append({"name": path.stem, "address": key_file_address(path), "file": str(path)})
        except CryptoError:
            continue  # not a key file
    return found


def read_secret(source: str) -> PrivateKey:
    """A private key as 64 hex digits, from a file or ``-`` (stdin)."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        return PrivateKey.from_hex(text.strip())
    except (OSError, UnicodeDecodeError) as e:
        raise AitbcError(f"cannot read the key from {source}: {e}") from e
    except CryptoError as e:
        raise AitbcError(f"{source} holds no private key (64 hex digits): {e}") from e


def write_secret(path: Path, key: PrivateKey) -> None:
    """The key in clear (64 hex digits), to a new file only its owner can read."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as e:
        raise AitbcError(f"{path} exists; refusing to overwrite it") from e
    with os.fdopen(fd, "w") as f:
        f.write(key.secret.hex() + "\n")


__all__ = ["Deal", "books", "check_earning", "earnings", "read_secret", "stats", "wallet_files", "write_secret"]
