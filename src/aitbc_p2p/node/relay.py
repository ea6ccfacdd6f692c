"""Transaction relay: the pool's way in and out over gossip.

Transactions this node admits (from the RPC, from the node's own services) are queued
and gossiped in bundles, one message per ``bundle_interval_s``; what is still pending is
re-announced every ``reannounce_s``. Bundles peers gossip pass the topic's stateless gate
(decoding and signatures in worker processes); the handler admits what the gate parsed.
"""

from __future__ import annotations

import logging

import trio

from aitbc_p2p.chain.batch import Checked
from aitbc_p2p.chain.models import Transaction
from aitbc_p2p.chain.payloads import Payload
from aitbc_p2p.crypto.keys import PrivateKey
from aitbc_p2p.exceptions import CodecError, NetworkError, TxRejected
from aitbc_p2p.mempool import Mempool
from aitbc_p2p.network import REJECT, GossipMessage, Network, Verdict, accept
from aitbc_p2p.node.abc import ChainView
from aitbc_p2p.node.bundles import decode_bundle, split_bundles
from aitbc_p2p.node.verify import decode_and_verify
from aitbc_p2p.types import Hash32

logger = logging.getLogger(__name__)


class TxRelay:
    def __init__(
        self,
        chain: ChainView,
        mempool: Mempool,
        network: Network,
        topic: str,
        key: PrivateKey,
        *,
        bundle_interval_s: float,
        reannounce_s: float,
    ) -> None:
        self.chain = chain
        self.mempool = mempool
        self.network = network
        self.topic = topic
        self._key = key
        self._bundle_interval_s = bundle_interval_s
        self._reannounce_s = reannounce_s
        self._outbox: list[bytes] = []
        self._outbox_ready = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        inbox = await self.network.subscribe(self.topic, self.gate)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._admit, inbox)
            nursery.start_soon(self._gossip_bundles)
            nursery.start_soon(self._reannounce)
            task_status.started()

    # ---------------------------------------------------------------- OwnAccount
    @property
    def key(self) -> PrivateKey:
        return self._key

    async def submit_tx(self, tx: Transaction) -> Hash32:
        """Admit to the pool and gossip. Raises TxRejected with a named reason."""
        if self.chain.find_tx(tx.hash) is not None:
            raise TxRejected("Duplicate", "transaction is already committed")
        self.mempool.add(tx, self.chain.state, height=self.chain.head.height)
        self.queue([tx])
        return tx.hash

    def sign_own_tx(self, payload: Payload) -> Transaction:
        """A transaction of ``payload``'s kind signed with the node's key at its next
        pending nonce, not yet submitted."""
        return Transaction.create(
            self._key,
            chain_id=self.chain.genesis.chain_id,
            nonce=self.mempool.pending_nonce(self._key.address, self.chain.state),
            fee=self.chain.genesis.min_fee,
            payload=payload,
        )

    async def send_own_tx(self, payload: Payload) -> Hash32:
        """Sign a transaction of ``payload``'s kind with the node's key at its next pending
        nonce and submit it."""
        return await self.submit_tx(self.sign_own_tx(payload))

    def pending(self, tx_hash: Hash32) -> bool:
        """Whether the transaction is in this peer's pool."""
        return tx_hash in self.mempool

    # ---------------------------------------------------------------- outbound
    def queue(self, txs: list[Transaction]) -> None:
        """Gossip ``txs`` with the next bundle."""
        self._outbox.extend(tx.encode() for tx in txs)
        self._outbox_ready.set()

    async def _gossip_bundles(self) -> None:
        """Publish queued transactions in bundles: one message per ``bundle_interval_s``
        (or per MAX_BUNDLE transactions), since gossip costs per message, not per byte."""
        while True:
            await self._outbox_ready.wait()
            await trio.sleep(self._bundle_interval_s)
            self._outbox_ready = trio.Event()
            pending, self._outbox = self._outbox, []
            for bundle in split_bundles(pending):
                try:
                    await self.network.publish(self.topic, bundle)
                except NetworkError as e:
                    logger.warning("could not gossip a bundle of transactions: %s", e)

    async def _reannounce(self) -> None:
        """Gossip what is still pending again: a peer that missed it (down, partitioned,
        joined late) gets it; peers that saw the same bundle drop it as seen."""
        while True:
            await trio.sleep(self._reannounce_s)
            pending = list(self.mempool.candidates())
            if pending:
                logger.debug("re-announcing %d pending transactions", len(pending))
                self.queue(pending)

    # ---------------------------------------------------------------- inbound
    async def gate(self, data: bytes) -> Verdict[Checked]:
        """Stateless gate of the tx topic: a well-formed bundle whose every transaction
        decodes, is for this chain, pays the fee floor and is signed by its sender
        (decoding and signatures in worker processes). Honest peers relay only bundles
        they checked, so one bad transaction makes the whole bundle a REJECT."""
        try:
            checked = await decode_and_verify(decode_bundle(data), self.chain.rules)
        except CodecError as e:
            logger.debug("rejected tx bundle: %s", e)
            return REJECT
        if checked.rejected:
            i, reason = checked.rejected[0]
            logger.debug("rejected tx bundle: tx %d: %s", i, reason)
            return REJECT
        return accept(checked)

    async def _admit(self, inbox: trio.MemoryReceiveChannel[GossipMessage[Checked]]) -> None:
        """The stateful stage: admit each transaction of an accepted bundle. A refusal
        here (a used nonce, a short balance) is not the sender's fault: it is dropped."""
        async for msg in inbox:
            if msg.value is None:
                continue  # our own bundle: its transactions are pooled already
            for tx in msg.value.txs:
                if tx.hash in self.mempool or self.chain.find_tx(tx.hash) is not None:
                    continue
                try:
                    self.mempool.add(tx, self.chain.state, height=self.chain.head.height, verified=True)
                except TxRejected as e:
                    logger.debug("gossiped tx ignored: %s", e)
