"""Who to dial: an address book fed by the status handshake, peer exchange and mDNS,
with per-address backoff (specs/wire.md, "Discovery").

Pure bookkeeping, no I/O: the node's peer manager dials and asks; this decides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

MAX_SHARED = 32
"""Peers in one ``/aitbc/peers/1`` response."""
MAX_ADDRS = 4
"""Addresses kept (and shared) per peer."""
MAX_ADDR_LEN = 256
MAX_KNOWN = 512
"""Peers remembered in each of the book's two tables; the oldest go first."""
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
MAX_BACKOFFS = 4096
_UNDIALABLE = ("/ip4/0.0.0.0/", "/ip6/::/")


def dialable_addrs(peer: str, addrs: Any) -> list[str]:
    """The usable part of what a peer says about ``peer``'s addresses: full multiaddrs
    that name ``peer`` itself, not unspecified (0.0.0.0), bounded in count and length.
    Anything else is dropped, not an error: addresses are hints, checked by dialling."""
    if not isinstance(addrs, list):
        return []
    suffix = f"/p2p/{peer}"
    good = [
        a
        for a in addrs
        if isinstance(a, str) and len(a) <= MAX_ADDR_LEN and a.endswith(suffix) and not a.startswith(_UNDIALABLE)
    ]
    return good[:MAX_ADDRS]


class Backoff:
    """Per-address exponential backoff: after a failed dial wait 1 s, then 2, 4, ... 60 s;
    a successful dial clears it."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._until: dict[str, tuple[float, float]] = {}  # addr -> (retry at, last delay)

    def ready(self, addr: str) -> bool:
        entry = self._until.get(addr)
        return entry is None or self._clock() >= entry[0]

    def failed(self, addr: str) -> float:
        """Record a failed dial; returns the delay before the next try."""
        now = self._clock()
        if len(self._until) >= MAX_BACKOFFS:  # forget addresses long since due (the book evicts peers)
            self._until = {a: e for a, e in self._until.items() if e[0] > now - BACKOFF_MAX_S}
        last = self._until.get(addr, (0.0, 0.0))[1]
        delay = min(BACKOFF_MAX_S, last * 2 if last else BACKOFF_FIRST_S)
        self._until[addr] = (now + delay, delay)
        return delay

    def succeeded(self, addr: str) -> None:
        self._until.pop(addr, None)


class PeerBook:
    """Peers this node knows of. *Verified* peers passed the status handshake (same
    chain) and advertised their addresses; only they are shared with others.
    *Heard-of* peers came from an exchange or mDNS and are only dialled."""

    def __init__(self, me: str) -> None:
        self._me = me
        self._verified: dict[str, list[str]] = {}
        self._heard: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self._verified.keys() | self._heard.keys())

    def verified(self, peer: str, addrs: Any) -> None:
        """``peer`` passed the handshake and says it listens on ``addrs``."""
        good = dialable_addrs(peer, addrs)
        self._heard.pop(peer, None)
        if good:
            _put(self._verified, peer, good)

    def heard(self, peer: str, addrs: Any) -> bool:
        """Note ``peer``'s addresses from an exchange or mDNS; True if it is new to us."""
        good = dialable_addrs(peer, addrs)
        if peer == self._me or not good or peer in self._verified:
            return False
        new = peer not in self._heard
        _put(self._heard, peer, good)
        return new

    def heard_all(self, entries: Any) -> int:
        """Learn from a ``/aitbc/peers/1`` response: ``[[peer id, [addr, ...]], ...]``.
        Malformed entries are skipped; returns how many peers were new."""
        if not isinstance(entries, list):
            return 0
        return sum(
            self.heard(entry[0], entry[1])
            for entry in entries[:MAX_SHARED]
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
        )

    def forget(self, peer: str) -> None:
        self._verified.pop(peer, None)
        self._heard.pop(peer, None)

    def share(self, exclude: str) -> list[list[Any]]:
        """Up to :data:`MAX_SHARED` verified peers, newest first, for a peer exchange."""
        out: list[list[Any]] = []
        for peer in reversed(self._verified):
            if peer != exclude:
                out.append([peer, list(self._verified[peer])])
                if len(out) == MAX_SHARED:
                    break
        return out

    def to_dial(self, skip: Iterable[str]) -> list[tuple[str, list[str]]]:
        """Peers worth dialling (not in ``skip``: connected, banned, being dialled),
        verified ones first, each with its addresses."""
        skipped = set(skip) | {self._me}
        return [(p, a) for table in (self._verified, self._heard) for p, a in table.items() if p not in skipped]


def _put(table: dict[str, list[str]], peer: str, addrs: list[str]) -> None:
    table.pop(peer, None)
    table[peer] = addrs
    while len(table) > MAX_KNOWN:
        del table[next(iter(table))]
