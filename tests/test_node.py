"""Peers in this process over real libp2p on 127.0.0.1: blocks, sync, handshake, market."""

from functools import partial

import pytest
import trio

from aitbc_p2p.chain import Block, BlockHeader, Transaction
from aitbc_p2p.chain.blocks import build_block
from aitbc_p2p.chain.state import JobStatus
from aitbc_p2p.chain.transition import ChainRules
from aitbc_p2p.codec import decode, encode
from aitbc_p2p.exceptions import ConsensusError, NetworkError, ValidationError
from aitbc_p2p.market import JobOffer, JobResult, params_hash, select_bid
from aitbc_p2p.network import GossipMessage, ValidationResult, protocols
from aitbc_p2p.network.memory import MemoryHub, memory_peer_id
from aitbc_p2p.node import NodeConfig, open_node
from aitbc_p2p.node.wire import decode_sync_item, encode_block_message, encode_sync_item
from aitbc_p2p.testing import ChainBuilder, make_genesis, make_key, make_tx, open_test_network
from aitbc_p2p.types import aitbc

CLIENT = make_key("client")
PROVIDER = make_key("peer2")
ALLOC = {CLIENT.address: aitbc(10_000), PROVIDER.address: aitbc(1_000)}


async def wait_for(predicate, timeout=30):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


async def test_peers_agree_and_gossip_transactions(tmp_path):
    async with open_test_network(3, alloc=ALLOC, data_root=tmp_path) as nodes:
        tx = make_tx(CLIENT, to=make_key("dest").address, amount=12345)
        await nodes[1].submit_tx(tx)
        await wait_for(lambda: all(n.store.find_tx(tx.hash) for n in nodes))
        found = nodes[0].tx_status(tx.hash)
        assert found.final == (found.height <= nodes[0].final_height())  # poa: n deep and a majority
        await wait_for(lambda: nodes[0].tx_status(tx.hash).final, timeout=30)
        target = max(n.store.head.height for n in nodes) + 1
        await wait_for(lambda: all(n.store.head.height >= target for n in nodes))
        hashes = {n.store.block(target).hash for n in nodes}
        assert len(hashes) == 1
        assert nodes[2].account(make_key("dest").address).account.balance == 12345
        # Round robin, once all three are up (the first blocks may be backups: the peers
        # start one after another). Any six heights in a row hold every authority.
        later = target + 6
        await wait_for(lambda: all(n.store.head.height >= later for n in nodes))
        proposers = {nodes[0].store.block(h).header.proposer for h in range(target + 1, later + 1)}
        assert len(proposers) == 3


async def test_late_peer_catches_up_by_sync(tmp_path):
    async with open_test_network(2, alloc=ALLOC) as nodes:
        await wait_for(lambda: nodes[0].store.head.height >= 6)
        late = NodeConfig(
            key=make_key("late"),
            genesis=nodes[0].genesis,
            data_dir=tmp_path / "late",
            bootstrap=tuple(nodes[0].network.listen_addrs()),
            peer_interval_s=0.2,
        )
        async with open_node(late) as node:
            await wait_for(lambda: node.store.head.height >= 6)
            h = node.store.head.height
            assert node.store.block(h).hash == nodes[0].store.block(h).hash
            assert node.store.block(1).hash == nodes[0].store.block(1).hash


async def test_sync_refuses_a_forged_or_malformed_block_and_keeps_the_blocks_before_it(tmp_path, monkeypatch):
    hub = MemoryHub()  # the logic under test is the sync service's; no socket needed
    async with open_test_network(1, alloc=ALLOC, hub=hub) as nodes:
        source = nodes[0]
        tx = make_tx(CLIENT, to=make_key("dest").address, amount=5)
        await source.submit_tx(tx)
        await wait_for(lambda: source.store.find_tx(tx.hash) is not None)
        at = source.store.find_tx(tx.hash).height
        await wait_for(lambda: source.store.head.height >= at + 2)
        # What the source's sync server sends for blocks 1..at+2, as it sends it.
        request = encode({"from": 1, "to": at + 2})
        served = [decode_sync_item(item) for item in decode(await source.sync.serve("", request))]
        assert [Block.decode(b).height for b, _ in served] == list(range(1, at + 3))
        # A response stops before the block that would take it past the frame limit.
        two = sum(len(encode_sync_item(b)) for b, _ in served[:2])
        for limit, count in ((16 + two, 2), (16 + two - 1, 1), (1, 1)):
            monkeypatch.setattr(protocols, "MAX_SYNC_FRAME", limit)
            assert len(decode(await source.sync.serve("", request))) == count
        monkeypatch.undo()

        config = NodeConfig(key=make_key("late"), genesis=source.genesis, data_dir=tmp_path / "late")
        async with open_node(config, network=hub.node_network) as late:
            monkeypatch.setattr(late.sync, "fetch", partial(served_from, served))
            await late.sync.sync_from("source", at - 1)
            # Block ``at`` as its proposer could sign it, but holding the client's transfer
            # signed by someone else: every root matches, only the signature is wrong.
            signed_by_forger = make_tx(make_key("forger"), to=make_key("dest").address, amount=5)
            body = {**signed_by_forger.body(), "from": CLIENT.address}
            forged = Transaction.from_wire({"body": body, "sig": signed_by_forger.signature})
            stamp = Block.decode(served[at - 1][0]).header.timestamp_ms
            applied, _ = build_block(
                make_key("peer0"), late.store.head, late.store.state, [forged], late.rules,
                timestamp_ms=stamp, max_txs=10, verified={forged.hash},
            )  # fmt: skip
            assert applied.block.txs == (forged,)
            for bad, error in ((applied.block.encode(), ValidationError), (b"\x00not a block", NetworkError)):
                items = [*served[: at - 1], (bad, served[at - 1][1]), *served[at:]]
                monkeypatch.setattr(late.sync, "fetch", partial(served_from, items))
                with pytest.raises(error):
                    await late.sync.sync_from("source", at + 2)
                assert late.store.head.hash == source.store.block(at - 1).hash  # up to the block before it
                assert late.account(CLIENT.address).account.nonce == 0
            monkeypatch.setattr(late.sync, "fetch", partial(served_from, served))
            await late.sync.sync_from("source", at + 2)
            assert late.store.head.hash == source.store.block(at + 2).hash
            assert late.store.state.tree().root == source.store.block(at + 2).header.state_root


async def test_the_block_gate_refuses_forged_blocks_and_an_accepted_one_is_decoded_once(tmp_path, monkeypatch):
    """A gossiped block is decoded and all its signatures checked in a worker by the
    topic's gate; a bad header or transaction signature is a REJECT, and the import uses
    the gate's result instead of decoding the block again."""
    hub = MemoryHub()  # the gate and the handler are under test; no socket needed
    async with open_test_network(1, alloc=ALLOC, absent=1, hub=hub) as nodes:
        config = NodeConfig(key=make_key("late"), genesis=nodes[0].genesis, data_dir=tmp_path / "late")
        async with open_node(config, network=hub.node_network) as late:
            proposer, head = make_key("peer0"), late.store.head

            # Two authorities, peer1 absent: height 1 is peer1's in round 0 and peer0's in round 1.
            def block_with(tx, key=proposer, round=1):
                applied, _ = build_block(
                    key, head, late.store.state, [tx], late.rules, timestamp_ms=late.engine.due_ms(head, round),
                    max_txs=10, verified={tx.hash}, round=round,
                )  # fmt: skip
                assert applied.block.txs == (tx,)
                return applied.block

            honest = block_with(make_tx(CLIENT, to=make_key("dest").address, amount=5))
            signed_by_forger = make_tx(make_key("forger"), to=make_key("dest").address, amount=5)
            forged_tx = Transaction.from_wire(
                {"body": {**signed_by_forger.body(), "from": CLIENT.address}, "sig": signed_by_forger.signature}
            )
            renamed = BlockHeader(**{**honest.header._fields(), "proposer": make_key("peer1").address})
            elsewhere = BlockHeader(**{**honest.header._fields(), "chain_id": "ait-elsewhere"}).signed(proposer)
            outsider, authority1 = make_key("outsider"), make_key("peer1")
            junk = [make_tx(CLIENT, nonce=n, to=make_key("dest").address, amount=1) for n in range(500)]
            by_outsider, _ = build_block(
                outsider, head, late.store.state, junk, late.rules, timestamp_ms=late.engine.due_ms(head, 1),
                max_txs=1000, verified={tx.hash for tx in junk}, round=1,
            )  # fmt: skip
            assert len(encode_block_message(by_outsider.block)) > 100_000  # ~121 KB of validly signed junk
            for message in (
                encode_block_message(by_outsider.block),  # an outsider naming itself proposer
                encode_block_message(block_with(make_tx(CLIENT, to=make_key("dest").address, amount=5), outsider)),
                encode_block_message(block_with(honest.txs[0], authority1)),  # an authority out of turn
                encode_block_message(block_with(forged_tx)),  # a transaction not signed by its sender
                encode_block_message(Block(renamed, honest.txs)),  # a header not signed by its proposer
                encode_block_message(Block(elsewhere, honest.txs)),  # another chain
                encode_block_message(honest)[:-3],  # truncated
                b"\x82\x01\x02",  # not a block
            ):
                verdict = await late.blocks.gate(message)
                assert verdict.result is ValidationResult.REJECT and verdict.value is None

            message = encode_block_message(honest)
            verdict = await late.blocks.gate(message)
            assert verdict.result is ValidationResult.ACCEPT and verdict.value.block.hash == honest.hash

            async def must_not_decode(data):
                raise AssertionError("the gate's result was not used")

            monkeypatch.setattr(late.blocks, "check", must_not_decode)
            send, receive = trio.open_memory_channel(1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(late.blocks.handle, receive)
                await send.send(GossipMessage("block", message, origin="peer0", via="peer0", value=verdict.value))
                await wait_for(lambda: late.store.head.height == 1)
                nursery.cancel_scope.cancel()
            assert late.store.head.hash == honest.hash
            assert late.account(CLIENT.address).account.nonce == 1
            monkeypatch.undo()
            assert (await late.blocks.gate(message)).result is ValidationResult.IGNORE  # already have it

            # A block that passes the gate (its scheduled proposer signed it) but that the
            # chain refuses costs its publisher a REJECT; the relaying peers are not at fault.
            # peer0 proposed height 1, so height 2 is peer1's alone (signer recency).
            head = late.store.head
            again = block_with(make_tx(CLIENT, nonce=1, to=make_key("dest").address, amount=5), proposer, 0)
            assert (await late.blocks.gate(encode_block_message(again))).result is (ValidationResult.REJECT)
            future, _ = build_block(
                authority1, head, late.store.state, [], late.rules, timestamp_ms=late.clock_ms() + 60_000, max_txs=10
            )
            message = encode_block_message(future.block)
            verdict = await late.blocks.gate(message)
            assert verdict.result is ValidationResult.ACCEPT
            publisher = memory_peer_id(authority1)
            send, receive = trio.open_memory_channel(1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(late.blocks.handle, receive)
                await send.send(GossipMessage("block", message, origin=publisher, via="relay", value=verdict.value))
                await wait_for(lambda: late.network.scores.rejected.get(publisher) == 1)
                nursery.cancel_scope.cancel()
            assert late.store.head == head and late.network.scores.score("relay") == 0.0


async def served_from(items, peer, start, end):
    """A sync peer that serves ``items`` (blocks 1, 2, ...) as they are."""
    return items[start - 1 : end]


async def test_peer_with_another_genesis_is_disconnected():
    async with open_test_network(1) as nodes:
        stranger_key = make_key("stranger")
        other = make_genesis([stranger_key], chain_id="not-ait-devnet")
        cfg = NodeConfig(
            key=stranger_key, genesis=other, bootstrap=tuple(nodes[0].network.listen_addrs()), peer_interval_s=0.2
        )
        async with open_node(cfg) as stranger:
            me, them = nodes[0].network, stranger.network
            await wait_for(lambda: them.banned(me.peer_id) or me.banned(them.peer_id))
            await wait_for(lambda: stranger.network.peer_id not in nodes[0].network.connected_peers())
            assert nodes[0].store.head.height >= 0 and stranger.store.head.height >= 0


async def run_job(node, workload, params, *, max_price=None):
    max_price = aitbc(5) if max_price is None else max_price
    offer = JobOffer.create(
        CLIENT, node.genesis.chain_id, workload=workload, params_hash=params_hash(workload, params),
        max_price=max_price, max_runtime_s=30, verification="none", timestamp_ms=node.clock_ms(),
    )  # fmt: skip
    job_id = await node.submit_job(offer, workload, params)
    await wait_for(lambda: node.job_status(job_id).status == "bids_ready" and node.job_status(job_id).bids)
    bid = select_bid(offer, list(node.market.client_jobs[job_id].bids.values()))
    tx = Transaction.create(
        CLIENT, chain_id=node.genesis.chain_id, kind="job_open",
        nonce=node.mempool.pending_nonce(CLIENT.address, node.store.state), fee=node.genesis.min_fee,
        payload={
            "job_id": job_id, "provider": bid.signer, "agent": node.key.address,
            "amount": bid.body["price"], "deadline": node.store.head.height + 100,
        },
    )  # fmt: skip
    await node.submit_tx(tx)
    return job_id, bid


async def test_job_flows_from_offer_to_settlement(tmp_path):
    async with open_test_network(3, providers=[2], alloc=ALLOC, data_root=tmp_path) as nodes:
        client_node = nodes[0]
        await wait_for(lambda: PROVIDER.address in client_node.market.providers)
        supply = client_node.supply()
        job_id, bid = await run_job(client_node, "echo", {"message": "hello"})
        assert bid.signer == PROVIDER.address
        await wait_for(lambda: client_node.job_status(job_id).status == "settled")
        status = client_node.job_status(job_id)
        result = client_node.job_result(job_id)
        assert result.result.ok and decode(result.result.output) == {"message": "hello", "length": 5}
        assert result.receipt_matches and result.job_id == job_id
        escrow = client_node.store.state.job(job_id)
        assert escrow.status is JobStatus.SETTLED and 0 < escrow.cost <= escrow.amount == bid.body["price"]
        assert status.escrow == escrow and status.phase == "settled"
        fee = client_node.genesis.min_fee
        assert client_node.account(CLIENT.address).account.balance == aitbc(10_000) - escrow.cost - fee
        assert client_node.account(PROVIDER.address).account.balance == aitbc(1_000) + escrow.cost - 2 * fee
        after = client_node.supply()
        assert after.total == supply.total == client_node.genesis.total_supply
        assert after.burned == supply.burned + 3 * fee


async def test_failed_job_pays_nothing(monkeypatch):
    async with open_test_network(
        2, providers=[1], alloc={CLIENT.address: aitbc(10_000), make_key("peer1").address: 0}
    ) as nodes:
        node = nodes[0]
        await wait_for(lambda: node.market.providers)

        async def fails(payload, peer="", emit=None):  # the workload fails on the provider (a crash, a bad input)
            return JobResult(payload.job_id, False, error="bad job: the worker failed")

        monkeypatch.setattr(nodes[1].market, "_run_job", fails)
        job_id, _ = await run_job(node, "echo", {"message": "x"})
        await wait_for(lambda: node.job_status(job_id).status == "failed")
        status = node.job_status(job_id)
        assert "bad job" in status.error and not status.escrow.receipt_tx
        assert status.escrow.status is JobStatus.OPEN  # refundable by the client after the deadline
        assert node.account(make_key("peer1").address).account.balance == 0


@pytest.mark.parametrize("max_price", [1])
async def test_no_bid_above_max_price(max_price):
    async with open_test_network(2, providers=[1], alloc=ALLOC) as nodes:
        node = nodes[0]
        await wait_for(lambda: node.market.providers)
        params = {"message": "x"}
        offer = JobOffer.create(
            CLIENT, node.genesis.chain_id, workload="echo", params_hash=params_hash("echo", params),
            max_price=max_price, max_runtime_s=30, verification="none", timestamp_ms=0,
        )  # fmt: skip
        job_id = await node.submit_job(offer, "echo", params)
        await wait_for(lambda: node.job_status(job_id).status == "bids_ready")
        assert node.job_status(job_id).bids == []


async def test_poa_backup_proposer_covers_an_authority_that_is_down():
    async with open_test_network(
        2, alloc=ALLOC, absent=1, block_time_ms=200, genesis_params={"backup_ms": 200}
    ) as nodes:
        await wait_for(lambda: all(n.store.head.height >= 7 for n in nodes), timeout=60)
        engine = nodes[0].engine
        down = make_key("peer2").address
        assert engine.recency == 1  # three authorities: none proposes two blocks in a row
        recent: list = []
        for h in range(1, 7):
            header = nodes[0].store.block(h).header
            assert nodes[1].store.block(h).hash == header.hash
            assert header.proposer != down and header.proposer not in recent
            # the first round whose scheduled authority is up
            assert header.round == next(r for r in range(3) if engine.proposer(h, r, recent) != down)
            recent = [header.proposer]


async def test_poa_fork_choice_reorgs_to_the_primary_and_re_pools_reverted_txs(tmp_path):
    a, b = make_key("auth-a"), make_key("auth-b")
    genesis = make_genesis([a, b], ALLOC, block_time_ms=1000, backup_ms=2000)
    rules = ChainRules.of(genesis)
    cfg = NodeConfig(key=make_key("follower"), genesis=genesis, data_dir=tmp_path / "f", peer_interval_s=0.2)
    async with open_node(cfg) as node:
        g = node.store.head
        tx = make_tx(CLIENT, to=make_key("dest").address, amount=5)
        backup, _ = build_block(a, g, node.store.state, [tx], rules, timestamp_ms=3000, max_txs=10, round=1)
        assert await node.import_block(backup.block)  # the backup's block while the primary is late
        assert node.store.find_tx(tx.hash) is not None
        genesis_state = ChainBuilder(genesis, [a, b]).state
        primary, _ = build_block(b, g, genesis_state, [], rules, timestamp_ms=1000, max_txs=10)
        assert await node.import_block(primary.block)  # same height, lower round: the better tip
        assert node.store.head == primary.block.header
        assert node.store.find_tx(tx.hash) is None and tx.hash in node.mempool  # pending again
        assert node.store.state.account(CLIENT.address).nonce == 0
        assert node.supply().total == genesis.total_supply
        assert not await node.import_block(backup.block)  # the worse tip is not taken back
        assert node.store.side_block(backup.block.hash) == backup.block


async def test_poa_refuses_a_block_whose_proposer_signed_recently_on_its_own_branch_too(tmp_path):
    """Signer recency: of three authorities none may propose two blocks in a row, on the
    main chain or on a fork a peer would switch to."""
    keys = [make_key(f"rec-{i}") for i in range(3)]
    genesis = make_genesis(keys, ALLOC, block_time_ms=1000, backup_ms=1000)
    main = ChainBuilder(genesis, keys)
    one, two = main.add_block(), main.add_block()  # primaries: keys[1], then keys[2]
    cfg = NodeConfig(key=make_key("follower"), genesis=genesis, data_dir=tmp_path / "f", peer_interval_s=0.2)
    async with open_node(cfg) as node:
        assert await node.import_block(one.block)
        # keys[1] proposed height 1, so it may not propose height 2 in any round.
        late = build_block(keys[1], one.block.header, main._states[1], [], main.rules, timestamp_ms=4000, max_txs=9)[0]
        with pytest.raises(ConsensusError, match="proposed one of the 1 blocks below it"):
            await node.import_block(late.block)
        assert node.store.head == one.block.header
        assert await node.import_block(two.block)
        # A longer fork from the genesis: keys[2] as height 1's backup, then keys[2] again
        # at height 2, its turn on the main chain but not on this branch.
        fork = ChainBuilder(genesis, keys)
        first = fork.add_block(round=1)
        again = build_block(keys[2], first.block.header, fork.state, [], fork.rules, timestamp_ms=3000, max_txs=9)[0]
        third = build_block(keys[0], again.block.header, again.state, [], fork.rules, timestamp_ms=4000, max_txs=9)[0]
        assert first.block.header.proposer == keys[2].address
        with pytest.raises(ConsensusError, match="proposed one of"):
            await node.chain.reorg(0, [first.block, again.block, third.block])
        assert node.store.head == two.block.header  # the old chain is restored
        assert node.chain.recent_proposers() == [keys[2].address]
        assert node.status().next_proposer == keys[0].address  # height 3: keys[0]'s turn


def test_the_daemons_gc_tuning_freezes_what_is_alive_and_collects_less_often():
    """Process-wide, so checked in a fresh interpreter."""
    import subprocess
    import sys

    probe = (
        "import gc; from aitbc_p2p.node.runtime import GEN0_THRESHOLD, tune_gc\n"
        "alive = [[i] for i in range(1000)]; default = gc.get_threshold()\n"
        "tune_gc()\n"
        "print(default[0], gc.get_threshold() == (GEN0_THRESHOLD, *default[1:]), gc.get_freeze_count() > 1000)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["700", "True", "True"]
