"""Per-peer limits on inbound requests (specs/wire.md, "Request limits").

Every request protocol serves each peer at most ``concurrent_per_peer`` requests at a
time (the rest are refused: the stream is reset; a protocol whose requests last long, such
as a job that runs for minutes, may allow more) and, all protocols together, at
``rate_per_s`` on average with bursts of ``burst``. A peer over its rate is slowed: its request waits for its turn. One
that asks for more than that (more in service than allowed, or a turn too far off) is
refused, and each refusal costs it ``over_rate_penalty`` score points, so a peer that
keeps flooding is graylisted and then banned, while an honest burst is only slowed and an
honest sync (one request at a time, a batch of blocks each) never meets the limit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestPolicy:
    concurrent_per_peer: int = 4
    """Requests of one peer on one protocol in service (or waiting for their turn) at once."""
    rate_per_s: float = 20.0
    burst: int = 40
    max_wait_s: float = 5.0
    """A request that would wait longer than this for its turn is refused instead."""
    over_rate_penalty: float = 2.0
    """Score points a refused request costs its peer."""
    max_peers_tracked: int = 4096
    """Peers whose counters are kept (least recently seen dropped first)."""


@dataclass(slots=True)
class _Peer:
    tokens: float
    at: float
    active: dict[str, int] = field(default_factory=dict)
    """Requests in service per protocol."""


class Refused(Exception):
    """Raised by :meth:`RequestLimits.admit` for a request over the concurrency limit."""


class RequestLimits:
    """Token buckets and in-flight counts per peer. ``clock`` returns seconds."""

    def __init__(self, policy: RequestPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self._clock = clock
        self._peers: OrderedDict[str, _Peer] = OrderedDict()
        self.refused = 0
        self.slowed = 0

    def admit(self, peer: str, protocol: str = "", *, concurrent: int | None = None) -> float:
        """Take a slot for one request of ``peer`` on ``protocol`` (at most ``concurrent``
        at once, default the policy's); returns how long it must wait first (0.0 within
        its rate). Every admitted request must be :meth:`release`-d.

        Raises:
            Refused: too many of its requests in service, or its turn is too far off.
        """
        p = self.policy
        now = self._clock()
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = _Peer(float(p.burst), now)
            while len(self._peers) > p.max_peers_tracked:
                oldest = next(iter(self._peers))
                if any(self._peers[oldest].active.values()):
                    break  # never forget a peer with requests in service
                del self._peers[oldest]
        self._peers.move_to_end(peer)
        active = state.active.get(protocol, 0)
        if active >= (p.concurrent_per_peer if concurrent is None else concurrent):
            self.refused += 1
            raise Refused(f"{active} requests of this peer in service already")
        state.tokens = min(float(p.burst), state.tokens + (now - state.at) * p.rate_per_s)
        state.at = now
        wait = 0.0 if state.tokens >= 1 else (1 - state.tokens) / p.rate_per_s
        if wait > p.max_wait_s:
            self.refused += 1
            raise Refused(f"over the request rate ({p.rate_per_s:g}/s)")
        state.tokens -= 1
        state.active[protocol] = active + 1
        if wait:
            self.slowed += 1
        return wait

    def release(self, peer: str, protocol: str = "") -> None:
        state = self._peers.get(peer)
        if state is not None and state.active.get(protocol):
            state.active[protocol] -= 1
            if not state.active[protocol]:
                del state.active[protocol]

    def tracked(self) -> int:
        return len(self._peers)
