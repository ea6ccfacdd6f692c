"""Block production for fork-choice engines: propose when a round of the next height is
this node's and due (BFT engines have their driver instead, node/bft.py)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from aitbc_p2p.chain.models import Block
from aitbc_p2p.consensus import ForkChoiceEngine
from aitbc_p2p.node.abc import ChainView
from aitbc_p2p.types import Address

logger = logging.getLogger(__name__)


class ProducerChain(ChainView, Protocol):
    def recent_proposers(self) -> list[Address]:
        """The latest proposers the schedule of the head's child skips (signer recency)."""
        ...


class BlockProducer:
    def __init__(
        self,
        chain: ProducerChain,
        engine: ForkChoiceEngine,
        me: Address,
        clock_ms: Callable[[], int],
        *,
        propose: Callable[[int, int], Awaitable[Block | None]],
        publish: Callable[[Block], Awaitable[None]],
    ) -> None:
        self.chain = chain
        self.engine = engine
        self.me = me
        self.clock_ms = clock_ms
        self._propose = propose
        """``(height, round)``: build and commit this node's block (None: the head moved)."""
        self._publish = publish

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Round 0 is the first scheduled authority's; when it is late, backup rounds fall
        due one after another. An authority that proposed one of the last blocks is not
        scheduled at all (signer recency)."""
        task_status.started()
        while True:
            head = self.chain.head
            height = head.height + 1
            recent = self.chain.recent_proposers()
            mine = [r for r in range(self.engine.rounds) if self.engine.proposer(height, r, recent) == self.me]
            if not mine:
                with trio.move_on_after(1.0):
                    await self.chain.wait_head_change()
                continue
            now = self.clock_ms()
            due = [(self.engine.due_ms(head, r), r) for r in mine]
            ready = [r for t, r in due if t <= now]
            if not ready:
                with trio.move_on_after((min(due)[0] - now) / 1000):
                    await self.chain.wait_head_change()
                continue
            round = min(ready)
            block = await self._propose(height, round)
            if block is not None:
                logger.info("proposed block %d (round %d) with %d txs", block.height, round, len(block.txs))
                await self._publish(block)
