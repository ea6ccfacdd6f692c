"""The small seams the node's services depend on, instead of on the node.

Each service (node/chain.py, relay.py, blockrelay.py, producer.py, peering.py, sync.py,
bft.py, market.py) is given what it needs as one of these, by the composition root
(node/node.py), which no service imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Protocol

from aitbc_p2p.chain.blocks import AppliedBlock
from aitbc_p2p.chain.models import Block, BlockHeader, Genesis, Transaction
from aitbc_p2p.chain.payloads import Payload
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.chain.votes import Vote
from aitbc_p2p.crypto.keys import PrivateKey
from aitbc_p2p.network import topic
from aitbc_p2p.store.chain import StoreStateView, TxLocation
from aitbc_p2p.types import Hash32


@dataclass(frozen=True, slots=True)
class Topics:
    """The chain's gossip topic names (specs/topics.md)."""

    tx: str
    block: str
    job: str
    provider: str
    consensus: str

    @classmethod
    def of(cls, chain_id: str) -> Topics:
        return cls(*(topic(chain_id, name) for name in ("tx", "block", "job", "provider", "consensus")))


class ChainView(Protocol):
    """The main chain as every service but the chain service sees it: read only."""

    genesis: Genesis
    rules: ChainRules

    @property
    def head(self) -> BlockHeader: ...

    @property
    def state(self) -> StoreStateView:
        """The head's state (published: it changes only between checkpoints)."""
        ...

    def block(self, height: int) -> Block | None: ...

    def height_of(self, block_hash: bytes) -> int | None:
        """The height of a main-chain block, None if it is not on the main chain."""
        ...

    def find_tx(self, tx_hash: bytes) -> TxLocation | None:
        """Where a committed transaction is, None if it is not committed."""
        ...

    async def wait_head_change(self) -> None:
        """Return once the head has moved (a commit or a reorg)."""
        ...

    def final_height(self) -> int: ...


class BlockImporter(ChainView, Protocol):
    async def import_block(
        self, block: Block, certificate: Sequence[Vote] = (), *, verified: AbstractSet[Hash32] = frozenset()
    ) -> bool:
        """Commit ``block`` if it extends the head (or is a better tip); False if it does
        not apply. Raises ValidationError / ConsensusError: the block is invalid."""
        ...

    def schedules(self, header: BlockHeader) -> bool:
        """Whether the main chain schedules ``header``'s proposer at its height and round,
        ``header`` being a child of the head (signer recency; always True under BFT)."""
        ...

    async def reorg(self, ancestor: int, blocks: list[Block], verified: AbstractSet[Hash32] = frozenset()) -> bool:
        """Switch to ``blocks`` (extending block ``ancestor``) if their tip is better and
        no final block would be reverted; False if not switched."""
        ...


class StoredBlocks(Protocol):
    """Committed blocks as the store keeps them, for serving them to peers."""

    def encoded_blocks(self, start: int, end: int, *, max_bytes: int | None = None) -> list[bytes]: ...

    def certificate(self, height: int) -> bytes | None: ...


class BlockAuthor(ChainView, Protocol):
    """What a consensus driver needs to build, check and commit blocks."""

    async def build(self, round: int) -> AppliedBlock:
        """A block on the head from the pool, signed by this node, in ``round``.
        Transactions the state refuses are dropped from the pool."""
        ...

    async def validate_proposal(self, block: Block) -> AppliedBlock:
        """``block`` checked as a child of the head, its certificate aside.
        Raises ValidationError / ConsensusError."""
        ...

    async def commit_decided(
        self, block: Block, certificate: Sequence[Vote], applied: AppliedBlock | None = None
    ) -> bool:
        """Commit a block consensus decided; False if it no longer extends the head."""
        ...

    async def remember_proposal(self, block: Block) -> None:
        """Keep a proposed block off the main chain, to restore a lock after a crash."""
        ...

    def proposal(self, block_hash: bytes) -> Block | None: ...


class PeerHeads(Protocol):
    """What peering knows of the other peers' chains, for sync."""

    async def wait_round(self) -> None:
        """Return after the next round of status exchanges."""
        ...

    def ahead(self) -> list[tuple[int, str]]:
        """``(height, peer)`` of the handshaken peers whose head is above ours."""
        ...

    def level(self) -> list[str]:
        """The handshaken peers whose head is at our height but another block."""
        ...

    def forget_head(self, peer: str) -> None:
        """``peer``'s reported head proved wrong: do not sync from it until it says again."""
        ...


class OwnAccount(Protocol):
    """The node's own key and the way it sends its own transactions."""

    @property
    def key(self) -> PrivateKey: ...

    async def send_own_tx(self, payload: Payload) -> Hash32:
        """Sign a transaction of ``payload``'s kind at the next pending nonce, pool and
        gossip it. Raises TxRejected."""
        ...


class OwnWallet(OwnAccount, Protocol):
    """The node's account as a service that must send a transaction exactly once (a
    payout) sees it: signing, submitting and the pool apart."""

    def sign_own_tx(self, payload: Payload) -> Transaction:
        """Signed at the next pending nonce; not submitted."""
        ...

    async def submit_tx(self, tx: Transaction) -> Hash32:
        """Pool and gossip. Raises TxRejected."""
        ...

    def pending(self, tx_hash: Hash32) -> bool: ...
