"""Block gossip: this node's blocks out, peers' blocks in.

A gossiped block passes the topic's stateless gate (decoded, proposer's and every
transaction's signature checked in a worker process, scheduled proposer) and reaches
the handler parsed; the handler gives it to the chain service, or notes that its
publisher is ahead (sync fills the gap). A block the chain refuses costs its publisher.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import trio

from aitbc_p2p.chain.models import Block
from aitbc_p2p.chain.votes import Vote
from aitbc_p2p.consensus import ConsensusEngine
from aitbc_p2p.consensus.tendermint import decode_certificate, encode_certificate
from aitbc_p2p.exceptions import CodecError, ConsensusError, NetworkError, ValidationError
from aitbc_p2p.network.abc import IGNORE, REJECT, GossipMessage, Network, Verdict, accept
from aitbc_p2p.node.abc import BlockImporter
from aitbc_p2p.node.verify import decode_block_message
from aitbc_p2p.node.wire import encode_block_message
from aitbc_p2p.types import Hash32

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GossipedBlock:
    """What the block topic's gate hands its handler."""

    block: Block
    certificate: tuple[Vote, ...]
    verified: AbstractSet[Hash32]
    """Hashes of its transactions, their signatures checked."""


class BlockRelay:
    def __init__(
        self,
        chain: BlockImporter,
        engine: ConsensusEngine,
        network: Network,
        topic: str,
        *,
        on_ahead: Callable[[str, int], None],
    ) -> None:
        self.chain = chain
        self.engine = engine
        self.network = network
        self.topic = topic
        self._on_ahead = on_ahead
        """Told ``(peer, height)`` when a peer publishes a block above our next height."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        inbox = await self.network.subscribe(self.topic, self.gate)
        task_status.started()
        await self.handle(inbox)

    async def publish(self, block: Block, certificate: Sequence[Vote] = ()) -> None:
        try:
            await self.network.publish(self.topic, encode_block_message(block, encode_certificate(certificate)))
        except NetworkError as e:
            logger.warning("could not gossip block %d: %s", block.height, e)

    async def check(self, data: bytes) -> GossipedBlock:
        """A block-topic message decoded, its header's and transactions' signatures
        checked, in a worker process (the event loop only unpickles the result).
        Raises ValidationError."""
        checked, certificate = await decode_block_message(data)
        if checked.block is None:
            raise ValidationError(checked.error)
        if checked.bad:
            raise ValidationError(f"block {checked.block.height} holds a badly signed transaction: {checked.bad[0][1]}")
        return GossipedBlock(checked.block, decode_certificate(certificate), checked.verified())

    async def gate(self, data: bytes) -> Verdict[GossipedBlock]:
        """Stateless gate of the block topic: a well-formed block for this chain, signed by
        its scheduled proposer, every transaction signed by its sender."""
        try:
            gossiped = await self.check(data)
        except ValidationError as e:
            logger.debug("rejected block message: %s", e)
            return REJECT
        block = gossiped.block
        if block.header.chain_id != self.chain.genesis.chain_id:
            return REJECT
        if not self.engine.may_have_proposed(block.header):
            # Signed by its proposer, but no schedule names it for its height and round
            # (an outsider, or a validator out of turn): no one honest could have made
            # it, so no one honest relays it (specs/topics.md). Under poa who is
            # scheduled depends on the branch below: checked here for a child of our
            # head, and by the import for any block.
            logger.debug("rejected block %d: %s is not its scheduled proposer", block.height, block.header.proposer)
            return REJECT
        if block.header.parent == self.chain.head.hash and not self.chain.schedules(block.header):
            logger.debug("rejected block %d: %s is not scheduled on our head", block.height, block.header.proposer)
            return REJECT
        if self.chain.height_of(block.hash) is not None:
            return IGNORE  # already have it
        return accept(gossiped)

    async def handle(self, inbox: trio.MemoryReceiveChannel[GossipMessage[GossipedBlock]]) -> None:
        async for msg in inbox:
            if msg.value is None:
                continue  # our own block: committed before it was published
            block = msg.value.block
            if block.height > self.chain.head.height + 1:
                self._on_ahead(msg.origin, block.height)
                continue  # sync fills the gap
            try:
                await self.chain.import_block(block, msg.value.certificate, verified=msg.value.verified)
            except (ValidationError, ConsensusError, CodecError) as e:
                logger.warning("rejected block from %s: %s", msg.origin, e)
                if msg.origin and msg.origin != self.network.peer_id:
                    # The publisher made a block the chain refuses; the peers that relayed
                    # it checked only what the gate can, so they are not at fault.
                    self.network.penalize(msg.origin, f"an invalid block ({e})")
