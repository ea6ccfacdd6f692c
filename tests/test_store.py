"""One conformance suite that the memory twin and the LevelDB store both pass."""

import pytest

from aitbc_p2p.chain.commitment import StateTree, bucket_of, bucket_root
from aitbc_p2p.exceptions import StoreError
from aitbc_p2p.store import ChainStore, LevelDBKV, MemoryKV
from aitbc_p2p.store.chain import StoreStateView, TxLocation
from aitbc_p2p.testing import ChainBuilder, make_genesis, make_key, make_tx


@pytest.fixture(params=["memory", "leveldb"])
def make_kv(request, tmp_path):
    if request.param == "memory":
        kv = MemoryKV()
        return lambda: kv
    return lambda: LevelDBKV(tmp_path / "db")


def test_kv_basics(make_kv):
    kv = make_kv()
    kv.write([(b"a:2", b"2"), (b"a:1", b"1"), (b"b:1", b"x")])
    assert kv.get(b"a:1") == b"1" and kv.get(b"zz") is None
    assert list(kv.iterate(b"a:")) == [(b"a:1", b"1"), (b"a:2", b"2")]
    assert list(kv.iterate(b"a:", reverse=True)) == [(b"a:2", b"2"), (b"a:1", b"1")]
    # Any order of prefixes, one list each, an empty one where nothing matches.
    assert kv.scan([b"b:", b"a:", b"zz", b"a:2"]) == [
        [(b"b:1", b"x")],
        [(b"a:1", b"1"), (b"a:2", b"2")],
        [],
        [(b"a:2", b"2")],
    ]
    kv.write([(b"c", b"3")], [b"a:1"])
    assert kv.get(b"a:1") is None and kv.get(b"c") == b"3"
    kv.close()


def test_chain_store_commits_blocks_state_and_indexes(make_kv, genesis, authority, alice, bob):
    store = ChainStore(make_kv(), genesis)
    assert store.head.height == 0
    builder = ChainBuilder(genesis, [authority])
    tx = make_tx(alice, to=bob.address, amount=7)
    applied = builder.add_block([tx])
    store.commit(applied)
    assert store.head == applied.block.header
    assert store.block(1) == applied.block
    assert store.height_of(applied.block.hash) == 1
    assert store.state.account(bob.address).balance == 10**9 + 7
    assert store.find_tx(tx.hash).height == 1
    assert [loc.tx.hash for loc in store.history(bob.address)] == [tx.hash]
    assert [b.height for b in store.blocks(0, 10)] == [0, 1]
    encoded = [store.block(0).encode(), applied.block.encode()]
    assert store.encoded_blocks(0, 10) == encoded
    assert store.encoded_blocks(0, 10, max_bytes=sum(map(len, encoded))) == encoded
    assert store.encoded_blocks(0, 10, max_bytes=sum(map(len, encoded)) - 1) == encoded[:1]
    assert store.encoded_blocks(1, 10, max_bytes=1) == encoded[1:]  # at least one
    assert dict(store.state.leaves()) == dict(builder.state.leaves())


def test_reopened_leveldb_resumes_at_last_block(tmp_path, genesis, authority, alice, bob):
    builder = ChainBuilder(genesis, [authority])
    store = ChainStore(LevelDBKV(tmp_path / "db"), genesis)
    for i in range(3):
        store.commit(builder.add_block([make_tx(alice, nonce=i, to=bob.address, amount=1)]))
    head = store.head
    store.close()
    again = ChainStore(LevelDBKV(tmp_path / "db"), genesis)
    assert again.head == head
    assert again.state.account(alice.address).nonce == 3
    again.close()


def test_a_store_written_with_compression_reopens(tmp_path, genesis, authority, alice, bob, monkeypatch):
    """Tables are now stored uncompressed; a data directory whose tables an earlier
    version compressed with snappy (LevelDB's default) must read as before."""
    import aitbc_p2p.store.leveldb as leveldb

    plain = leveldb.plyvel.DB
    monkeypatch.setattr(leveldb.plyvel, "DB", lambda *a, **k: plain(*a, **{**k, "compression": "snappy"}))
    builder = ChainBuilder(genesis, [authority])
    kv = LevelDBKV(tmp_path / "db")
    store = ChainStore(kv, genesis)
    for i in range(3):
        store.commit(builder.add_block([make_tx(alice, nonce=i, to=bob.address, amount=1)]))
    kv.write([(b"zz", b"a" * 100_000)])
    kv._db.compact_range()  # into tables, compressed
    assert sum(f.stat().st_size for f in (tmp_path / "db").glob("*.ldb")) < 50_000
    head = store.head
    store.close()
    monkeypatch.setattr(leveldb.plyvel, "DB", plain)

    kv = LevelDBKV(tmp_path / "db")
    again = ChainStore(kv, genesis)
    assert again.head == head and kv.get(b"zz") == b"a" * 100_000
    again.commit(builder.add_block([make_tx(alice, nonce=3, to=bob.address, amount=1)]))
    kv._db.compact_range()  # old compressed and new plain tables merged
    assert again.state.account(alice.address).nonce == 4
    assert dict(again.state.leaves()) == dict(builder.state.leaves())
    assert [again.block(h).hash for h in range(5)] == [b.block.hash for b in builder.blocks]
    again.close()


def test_store_refuses_another_chain(tmp_path, genesis):
    ChainStore(LevelDBKV(tmp_path / "db"), genesis).close()
    other = make_genesis([make_key("x")], chain_id="elsewhere")
    with pytest.raises(StoreError, match="another chain"):
        ChainStore(LevelDBKV(tmp_path / "db"), other)


def test_closed_store_raises(make_kv):
    kv = make_kv()
    kv.close()
    with pytest.raises((StoreError, RuntimeError)):
        kv.get(b"a")


def test_cached_accounts_follow_commits_and_reverts(make_kv, genesis, authority, alice, bob):
    """Committed-state reads are cached between commits; a commit or revert must never
    leave a stale account behind."""
    store = ChainStore(make_kv(), genesis)
    builder = ChainBuilder(genesis, [authority])
    before = store.state.account(bob.address).balance  # now cached
    store.commit(builder.add_block([make_tx(alice, to=bob.address, amount=5)]))
    assert store.state.account(bob.address).balance == before + 5
    assert store.state.account(alice.address).nonce == 1
    store.revert_head()
    assert store.state.account(bob.address).balance == before
    assert store.state.account(alice.address).nonce == 0


def test_cached_records_agree_with_the_store(make_kv, genesis, authority, alice, bob):
    """A publish updates the caches (records, accounts, bucket contents) with the block's
    writes instead of dropping them; every cached read must equal a cold reader's."""
    store = ChainStore(make_kv(), genesis)
    builder = ChainBuilder(genesis, [authority])
    carol = make_key("carol").address

    def agrees() -> None:
        cold = StoreStateView(store.kv)
        leaves = dict(cold.leaves())
        assert leaves == dict(builder.state.leaves())
        assert {key: store.state.get(key) for key in leaves} == leaves
        assert store.state.burned() == cold.burned() == builder.state.burned()
        assert store.state.account(carol) == cold.account(carol)
        buckets = sorted({bucket_of(key) for key in leaves})
        assert store.state.bucket_records(buckets) == cold.bucket_records(buckets)
        assert store.state.tree().root == StateTree.from_records(leaves.items()).root == store.head.state_root

    for nonce in range(3):
        store.state.account(carol)  # cached before it exists, then written
        store.state.bucket_records([bucket_of(b"a" + carol.encode())])
        store.commit(builder.add_block([make_tx(alice, nonce=nonce, to=(carol, bob.address)[nonce % 2], amount=5)]))
        agrees()
    store.revert_head()
    builder = ChainBuilder(genesis, [authority])
    builder.add_block([make_tx(alice, nonce=0, to=carol, amount=5)])
    builder.add_block([make_tx(alice, nonce=1, to=bob.address, amount=5)])
    agrees()


def test_full_caches_keep_their_newer_half_and_agree_with_the_store(make_kv, genesis, authority, alice):
    """Past their bounds the caches drop their older half, not everything, and what they
    keep still equals what the store holds."""
    store = ChainStore(make_kv(), genesis)
    store.state.MAX_CACHED, store.state.MAX_CACHED_BUCKET_RECORDS = 8, 12
    builder = ChainBuilder(genesis, [authority])
    friends = [make_key(f"friend{i}").address for i in range(10)]
    for nonce, friend in enumerate(friends):
        store.state.account(friend)  # a read, cached
        store.commit(builder.add_block([make_tx(alice, nonce=nonce, to=friend, amount=5)]))
        view = store.state
        assert len(view._records) <= 8 and len(view._accounts) <= 8
        assert view._bucket_records == sum(map(len, view._buckets.values())) <= 12
        assert friend in view._accounts  # the newest stay
        assert len(view._accounts) >= 4 and (nonce < 8 or view._bucket_records >= 6)  # halved, not emptied
        cold = StoreStateView(store.kv)
        assert all(account == cold.account(address) for address, account in view._accounts.items())
        assert all(value == cold.get(key) for key, value in view._records.items())
        assert all(records == cold.bucket_records([b])[b] for b, records in view._buckets.items())
    assert store.state.tree().root == store.head.state_root == StateTree.from_records(builder.state.leaves()).root


def test_a_written_block_is_invisible_until_published(make_kv, genesis, authority, alice, bob):
    """The node writes a block in a worker thread while the event loop keeps reading:
    until ``publish``, readers see the old head, balances, nonces and state tree."""
    store = ChainStore(make_kv(), genesis)
    builder = ChainBuilder(genesis, [authority])
    store.commit(builder.add_block([make_tx(alice, nonce=0, to=bob.address, amount=5)]))
    head, tree = store.head, store.state.tree()
    leaves = dict(store.state.leaves())
    before = {a: store.state.account(a) for a in (alice.address, bob.address)}
    carol = make_key("carol")  # a record that does not exist yet
    applied = builder.add_block([make_tx(alice, nonce=1, to=carol.address, amount=9)])
    store.state.clear_cache()  # readers below go to the store, not to the cache
    store.write_block(applied)
    assert store.head == head and store.state.tree() is tree
    assert {a: store.state.account(a) for a in (alice.address, bob.address)} == before
    assert store.state.account(carol.address).balance == 0
    assert dict(store.state.leaves()) == leaves
    touched = {bucket_of(k) for k in applied.state.changes}
    for bucket, records in store.state.bucket_records(touched).items():
        assert bucket_root(records) == bucket_root((k, v) for k, v in leaves.items() if bucket_of(k) == bucket)
    tx = applied.block.txs[0]
    assert store.block(2) is None and store.receipts(2) == [] and store.certificate(2) is None
    assert store.find_tx(tx.hash) is None and store.receipt_proof(tx.hash) is None
    assert [loc.tx for loc in store.history(carol.address)] == []
    assert store.height_of(applied.block.hash) == 2  # on disk already: gossip of it is a duplicate
    with pytest.raises(StoreError, match="not yet published"):
        store.write_block(applied)
    store.publish()
    assert store.head == applied.block.header
    assert store.block(2) == applied.block and len(store.receipts(2)) == 1
    assert store.find_tx(tx.hash) == TxLocation(tx, 2, 0)
    assert [loc.tx for loc in store.history(carol.address)] == [tx]
    assert store.state.account(alice.address).nonce == 2
    assert store.state.account(carol.address).balance == 9
    assert dict(store.state.leaves()) == dict(builder.state.leaves())


def test_a_written_revert_is_invisible_until_published(make_kv, genesis, authority, alice, bob):
    store = ChainStore(make_kv(), genesis)
    builder = ChainBuilder(genesis, [authority])
    store.commit(builder.add_block([make_tx(alice, nonce=0, to=bob.address, amount=5)]))
    parent = store.head
    applied = builder.add_block([make_tx(alice, nonce=1, to=make_key("carol").address, amount=9)])
    store.commit(applied)
    leaves = dict(store.state.leaves())
    reverted = store.write_revert()
    assert reverted == applied.block
    assert store.head == applied.block.header
    assert store.state.account(alice.address).nonce == 2
    assert dict(store.state.leaves()) == leaves
    store.publish()
    assert store.head == parent
    assert store.state.account(alice.address).nonce == 1
    assert store.state.tree().root == parent.state_root


def test_a_failed_write_leaves_the_state_as_it_was(make_kv, genesis, authority, alice, bob, monkeypatch):
    store = ChainStore(make_kv(), genesis)
    builder = ChainBuilder(genesis, [authority])
    applied = builder.add_block([make_tx(alice, nonce=0, to=bob.address, amount=5)])

    def disk_full(*args, **kwargs):
        raise StoreError("write failed: disk full")

    monkeypatch.setattr(store.kv, "write", disk_full)
    with pytest.raises(StoreError, match="disk full"):
        store.write_block(applied)
    monkeypatch.undo()
    assert store.head.height == 0 and store.state._shadow == {}
    store.commit(applied)  # nothing half-done blocks the next write
    assert store.state.account(bob.address).balance == 10**9 + 5
