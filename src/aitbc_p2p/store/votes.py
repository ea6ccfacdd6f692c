"""The validator's double-sign guard: it records every signature before it leaves.

For each step (proposal, prevote, precommit) the guard keeps the last signed
``(height, round, block)`` in the store, written with ``sync`` before the signature is
returned. It refuses to sign an earlier slot, or the same slot for another block; asking
again for the same slot and block returns the same signature. So a validator never
signs two conflicting messages, even across a crash (specs/consensus.md, "Safety").
"""

from __future__ import annotations

from typing import Any

from aitbc_p2p.chain.votes import Vote, VoteStep
from aitbc_p2p.codec import decode, encode
from aitbc_p2p.crypto import PrivateKey
from aitbc_p2p.exceptions import ConsensusError
from aitbc_p2p.store import schema
from aitbc_p2p.store.abc import KeyValueStore
from aitbc_p2p.store.crash import crash_point

PROPOSAL_STEP = "proposal"


class VoteGuard:
    def __init__(self, kv: KeyValueStore, key: PrivateKey, chain_id: str) -> None:
        self._kv = kv
        self._key = key
        self._chain_id = chain_id
        raw = kv.get(schema.vote_key(key.address))
        self._last: dict[str, list[Any]] = {} if raw is None else dict(decode(raw))

    def last(self, step: str) -> tuple[int, int, bytes, bytes] | None:
        """The last signed ``(height, round, block, signature)`` for a step, if any."""
        rec = self._last.get(step)
        return None if rec is None else (rec[0], rec[1], rec[2], rec[3])

    def _check(self, step: str, height: int, round: int, block: bytes) -> bytes | None:
        last = self.last(step)
        if last is None:
            return None
        lh, lr, lb, sig = last
        if (height, round) < (lh, lr):
            raise ConsensusError(f"refusing to sign {step} {height}/{round}: already signed {lh}/{lr}")
        if (height, round) == (lh, lr):
            if lb != block:
                raise ConsensusError(f"refusing to sign a conflicting {step} at {height}/{round}")
            return sig
        return None

    def _record(self, step: str, height: int, round: int, block: bytes, sig: bytes) -> None:
        crash_point("vote.before_persist")
        self._last[step] = [height, round, block, sig]
        self._kv.write([(schema.vote_key(self._key.address), encode(self._last))], sync=True)
        crash_point("vote.after_persist")

    def sign_vote(self, height: int, round: int, step: VoteStep, block: bytes) -> Vote:
        """Sign a vote, or raise :class:`ConsensusError` if it would conflict with a signed one."""
        vote = Vote(self._chain_id, height, round, step, block, self._key.address)
        again = self._check(str(step), height, round, block)
        if again is not None:
            return Vote(vote.chain_id, height, round, step, block, vote.validator, again)
        signed = vote.signed(self._key)
        self._record(str(step), height, round, block, signed.signature)
        return signed

    def sign_proposal(self, height: int, round: int, block: bytes, sign: Any) -> bytes:
        """Guard a proposal signature; ``sign()`` makes it when the slot is free."""
        again = self._check(PROPOSAL_STEP, height, round, block)
        if again is not None:
            return again
        sig: bytes = sign()
        self._record(PROPOSAL_STEP, height, round, block, sig)
        return sig
