"""The one exception tree of aitbc_p2p.

::

    AitbcError
    ├── CodecError                 malformed or non-canonical CBOR, size/depth limits
    ├── CryptoError
    │   ├── BadSignature           signature malformed, high-S, or not by the claimed key
    │   └── KeyFileError           wrong password, corrupt or unknown key file
    ├── ValidationError            a well-formed object that breaks a chain rule
    │   └── TxRejected             a transaction refused, with a named ``reason``
    ├── ConsensusError             header not acceptable to the engine
    ├── StoreError                 the store cannot open, read or commit
    ├── NetworkError               libp2p failures
    │   └── HandshakeRefused       the peer is on another chain (or sent a malformed status)
    ├── ComputeError               a workload failed or its parameters are bad
    ├── MarketError                job offers, bids and job tracking
    ├── ConfigError                a bad config file or genesis
    └── RpcError                   the RPC answered with an error envelope

Third-party exceptions are wrapped with ``raise X from e`` at the seam that calls them.
"""

from __future__ import annotations

from typing import Any


class AitbcError(Exception):
    """Root of every error this package raises on purpose."""


class CodecError(AitbcError):
    pass


class CryptoError(AitbcError):
    pass


class BadSignature(CryptoError):
    pass


class KeyFileError(CryptoError):
    pass


class ValidationError(AitbcError):
    pass


REJECTION_REASONS = (
    "Malformed",
    "BadSignature",
    "WrongChain",
    "Underpriced",
    "AmountOutOfRange",
    "NonceTooLow",
    "NonceTooHigh",
    "InsufficientFunds",
    "InsufficientStake",
    "NothingToWithdraw",
    "NotProvider",
    "UnknownJob",
    "NotJobParty",
    "NotArbiter",
    "JobState",
    "BadEvidence",
    "Duplicate",
    "PoolFull",
    "ReplacementUnderpriced",
)
"""Every reason a transaction can be refused for (specs/transactions.md, "Rejection reasons")."""


class TxRejected(ValidationError):
    """A transaction was refused. ``reason`` is one of :data:`REJECTION_REASONS`."""

    def __init__(self, reason: str, message: str, **details: Any) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        # Verifying worker processes send refusals back: keep reason, message and details.
        return (_rebuild_rejection, (type(self), self.reason, self.message, self.details))


def _rebuild_rejection(cls: type[TxRejected], reason: str, message: str, details: dict[str, Any]) -> TxRejected:
    return cls(reason, message, **details)


class ConsensusError(AitbcError):
    pass


class StoreError(AitbcError):
    pass


class NetworkError(AitbcError):
    pass


class HandshakeRefused(NetworkError):
    """A peer's status shows another chain id or genesis, or cannot be read."""


class ComputeError(AitbcError):
    pass


class MarketError(AitbcError):
    pass


class ConfigError(AitbcError):
    pass


class RpcError(AitbcError):
    """An error envelope returned by the RPC: ``{"error": {"code", "message", "details"}}``."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
