"""Peer penalties for provably bad gossip, with decay, graylist and ban thresholds.

Each REJECT verdict costs the forwarding peer ``reject_penalty`` points; the total
halves every ``half_life_s``. Below ``graylist_below`` the peer's messages are dropped
unread and gossipsub neither grafts nor gossips with it (its application score feeds
the router's gates), and each message it still sends costs ``graylisted_message_penalty``;
below ``disconnect_below`` it is disconnected and refused for ``ban_s``. IGNORE verdicts
cost nothing. Honest peers never reach a threshold: they
forward only what they validated themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

MAX_TRACKED = 4096
"""Peers whose scores are kept; past it, the ones closest to zero are forgotten first
(a banned peer is never forgotten before its ban is served)."""


@dataclass(frozen=True, slots=True)
class ScoringPolicy:
    reject_penalty: float = 10.0
    graylisted_message_penalty: float = 5.0
    """Each message a graylisted peer still sends (dropped unread): one that keeps
    sending goes on to the disconnect threshold instead of waiting out the decay."""
    half_life_s: float = 60.0
    graylist_below: float = -40.0
    """About four bad messages in quick succession."""
    disconnect_below: float = -100.0
    """About ten bad messages in quick succession."""
    ban_s: float = 600.0


class PeerScores:
    """Decaying penalty scores per peer id. ``clock`` returns seconds (monotonic)."""

    def __init__(self, policy: ScoringPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self._clock = clock
        self._scores: dict[str, tuple[float, float]] = {}
        self._banned_until: dict[str, float] = {}
        self.rejected: dict[str, int] = {}
        """REJECT verdicts per peer since start (not decayed), for status and metrics."""

    def score(self, peer: str) -> float:
        entry = self._scores.get(peer)
        if entry is None:
            return 0.0
        value, at = entry
        decay: float = 0.5 ** ((self._clock() - at) / self.policy.half_life_s)
        return value * decay

    def penalize(self, peer: str, amount: float | None = None) -> float:
        """Add a penalty (default: one REJECT, counted in ``rejected``); returns the new score."""
        value = self.score(peer) - (self.policy.reject_penalty if amount is None else amount)
        self._scores[peer] = (value, self._clock())
        if amount is None:
            self.rejected[peer] = self.rejected.get(peer, 0) + 1
        if value < self.policy.disconnect_below:
            self._banned_until[peer] = self._clock() + self.policy.ban_s
        if len(self._scores) > MAX_TRACKED:
            self._forget_mildest()
        return value

    def ban(self, peer: str) -> None:
        """Refuse ``peer`` for ``ban_s`` whatever its score (e.g. a handshake for another chain)."""
        self._banned_until[peer] = self._clock() + self.policy.ban_s

    def _forget_mildest(self) -> None:
        keep = MAX_TRACKED * 3 // 4
        ranked = sorted(
            (p for p in self._scores if p not in self._banned_until), key=lambda p: abs(self.score(p))
        )
        for peer in ranked[: len(self._scores) - keep]:
            del self._scores[peer]
            self.rejected.pop(peer, None)

    def graylisted(self, peer: str) -> bool:
        return self.score(peer) < self.policy.graylist_below or self.banned(peer)

    def banned(self, peer: str) -> bool:
        until = self._banned_until.get(peer)
        if until is None:
            return False
        if self._clock() >= until:
            del self._banned_until[peer]
            self._scores.pop(peer, None)  # a ban served starts afresh
            return False
        return True

    def banned_peers(self) -> list[str]:
        return [p for p in list(self._banned_until) if self.banned(p)]

    def snapshot(self) -> dict[str, dict[str, float | int | bool]]:
        peers = set(self._scores) | set(self.rejected)
        return {
            p: {"score": round(self.score(p), 3), "rejected": self.rejected.get(p, 0), "banned": self.banned(p)}
            for p in sorted(peers)
        }


class Banning:
    """The ban list's half of a network adapter: ``ban``, ``banned`` and ``penalize`` of the
    :class:`~aitbc_p2p.network.Network` protocol over the adapter's :class:`PeerScores`.
    The adapter says how a banned peer is cut off (:meth:`_cut_off`)."""

    scores: PeerScores

    def _cut_off(self, peer_id: str) -> None:
        raise NotImplementedError

    def ban(self, peer_id: str, reason: str) -> None:
        if not self.scores.banned(peer_id):
            logger.warning("peer %s banned for %.0f s: %s", peer_id, self.scores.policy.ban_s, reason)
        self.scores.ban(peer_id)
        self._cut_off(peer_id)

    def banned(self, peer_id: str) -> bool:
        return self.scores.banned(peer_id)

    def penalize(self, peer_id: str, reason: str) -> None:
        self._penalize(peer_id, reason)

    def _penalize(self, peer: str, what: str, amount: float | None = None) -> None:
        """Lower ``peer``'s score for ``what`` it did; ban and cut it off below the floor."""
        was_banned = self.scores.banned(peer)
        score = self.scores.penalize(peer, amount)
        if self.scores.banned(peer) and not was_banned:
            logger.warning("peer %s banned for %.0f s: score %.1f after %s",
                           peer, self.scores.policy.ban_s, score, what)  # fmt: skip
            self._cut_off(peer)
