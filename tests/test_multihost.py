"""Peers as separate ``aitbc-peer`` processes on distinct addresses.

1. nodes/devnet/ (three PoA authorities) on distinct loopback addresses (127.0.0.2-4),
   each peer bootstrapping from the first only: they find each other by peer exchange
   and agree on one chain.
2. Where the machine allows (root and ``ip netns``): each peer in its own network
   namespace, joined to a bridge by a veth pair, and one of them cut off (its link taken
   down) while the others go on; the link comes back and all converge on one head.
   nodes/pos-devnet/ (four validators, BFT finality): the three left hold more than 2/3
   of the stake and keep committing. nodes/devnet/ (three poa authorities): the two left
   are a majority and keep finalizing, while the one cut off adds at most one block of
   its own and stalls (signer recency), finalizing nothing, so when the link comes back
   it reverts at most that block onto the majority's chain (specs/consensus.md).
3. Sixteen pos validators (a devnet directory generated for the test), each in its own
   namespace, split eight by eight onto two bridges and joined again.
"""

import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio

from aitbc_p2p.cli import devnet
from aitbc_p2p.exceptions import RpcError
from aitbc_p2p.testing.netns import Namespaces, ip, unavailable

NODES = Path(__file__).resolve().parents[1] / "nodes" / "devnet"
POS_NODES = Path(__file__).resolve().parents[1] / "nodes" / "pos-devnet"
pytestmark = pytest.mark.slow


async def _status(proc):
    async with proc.rpc() as rpc:
        return await rpc.status()


async def _block_hash(proc, height):
    async with proc.rpc() as rpc:
        return (await rpc._call("GET", f"/v1/blocks/{height}"))["header"]["hash"]


async def _converged(procs, *, above, timeout):
    """Wait until all peers are past ``above`` and hold the same block at a common height."""
    with trio.fail_after(timeout):
        while True:
            try:
                heights = [(await _status(p))["height"] for p in procs]
                h = min(heights)
                if h > above and len({await _block_hash(p, h) for p in procs}) == 1:
                    return h
            except RpcError:
                pass  # a block not stored yet, or a peer mid-reorg
            await trio.sleep(0.5)


async def test_peers_on_distinct_loopback_addresses_find_each_other(tmp_path):
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    procs = devnet.start(NODES, tmp_path / "run", hosts=hosts, bootstrap_first=True)
    try:
        with trio.fail_after(90):  # each sees both others, though it was told only of the first
            await devnet.wait_ready(procs, min_height=3, progress=lambda s: None)
        for proc, host in zip(procs, hosts, strict=True):
            status = await _status(proc)
            assert all(a.startswith(f"/ip4/{host}/tcp/") for a in status["listen"])
        await _converged(procs, above=3, timeout=30)
    finally:
        devnet.stop(tmp_path / "run")


@pytest.mark.parametrize(("nodes", "peers"), [(POS_NODES, 4), (NODES, 3)], ids=["pos", "poa"])
async def test_a_partition_heals_and_all_peers_converge_on_one_head(tmp_path, nodes, peers):
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    nets = Namespaces(peers)
    run_dir = tmp_path / "run"
    try:
        nets.up()
        wrap = nets.wrap
        procs = devnet.start(nodes, run_dir, hosts=nets.hosts, wrap=wrap, bootstrap_first=True)
        with trio.fail_after(120):
            await devnet.wait_ready(procs, min_height=2, progress=lambda s: None)
        before = await _converged(procs, above=2, timeout=30)
        alone = peers - 1
        nets.cut(alone, off=True)  # one peer alone; the rest (a majority, a quorum) together
        rpc = urlsplit(procs[alone].info()["rpc_url"])
        with pytest.raises(OSError):  # it is out of reach
            socket.create_connection((rpc.hostname, rpc.port), timeout=1).close()
        majority = procs[:alone]
        with trio.fail_after(120):  # the rest go on, later rounds or backups covering its turns
            while min([(await _status(p))["height"] for p in majority]) < before + 10:
                await trio.sleep(0.5)
        nets.cut(alone, off=False)
        healed = await _converged(procs, above=before + 10, timeout=120)
        later = await _converged(procs, above=healed + 1, timeout=60)  # and they stay together
        assert later > healed
        if nodes == NODES:
            # Signer recency: alone, the authority adds at most one block of its own and
            # stalls instead of growing a fork (before the rule, its branch grew as long as
            # the partition lasted, past 3 blocks here); on rejoining it reverts at most that.
            reorgs = re.findall(r"reorg: reverted (\d+) blocks", procs[alone].log.read_text())
            assert all(int(n) <= 1 for n in reorgs), reorgs
    finally:
        devnet.stop(run_dir)
        nets.down()


def _pos_devnet(root: Path, n: int) -> Path:
    """A fresh ``n``-validator pos devnet directory, built from nodes/pos-devnet's genesis:
    equal stakes, and slower blocks and rounds than the 4-peer devnet's, as ``n`` peer
    processes share two cores here."""
    import json

    from aitbc_p2p.testing import make_key

    genesis = json.loads((POS_NODES / "genesis.json").read_text())
    keys = [make_key(f"netns-validator-{i}") for i in range(n)]
    genesis["chain_id"] = f"ait-pos-{n}"
    genesis["consensus"].update(validators=[k.address for k in keys], block_time_ms=2000, round_timeout_ms=4000)
    genesis["alloc"] = [a for a in genesis["alloc"] if "stake" not in a] + [
        {"address": k.address, "balance": 10**12, "stake": 10**12, "label": f"validator {i}"}
        for i, k in enumerate(keys)
    ]
    (root / "keys").mkdir(parents=True)
    (root / "genesis.json").write_text(json.dumps(genesis, indent=2))
    for i, key in enumerate(keys):
        (root / "keys" / f"peer{i:02d}.key").write_text(key.secret.hex())
        (root / f"peer{i:02d}.toml").write_text(
            f'data_dir = "data/peer{i:02d}"\n'
            f'key_file = "keys/peer{i:02d}.key"\n'
            'genesis = "genesis.json"\n'
            'listen = ["/ip4/127.0.0.1/tcp/0"]\n'
        )
    return root


async def test_sixteen_validators_split_eight_by_eight_halt_and_converge_when_healed(tmp_path):
    """Sixteen ``aitbc-peer`` processes, each in its own namespace, on two bridges once
    split: neither half holds more than 2/3 of the stake, so neither commits a block (no
    fork is possible); joined again, they decide the next heights together."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    n = 16
    nodes = _pos_devnet(tmp_path / "nodes", n)
    nets = Namespaces(n)
    run_dir = tmp_path / "run"
    other_bridge = f"{nets.bridge}b"
    try:
        nets.up()
        ip("link", "add", other_bridge, "type", "bridge")
        ip("link", "set", other_bridge, "up")
        wrap = nets.wrap
        procs = devnet.start(nodes, run_dir, hosts=nets.hosts, wrap=wrap)
        with trio.fail_after(300):
            await devnet.wait_ready(procs, min_height=2, timeout=300, progress=lambda s: None)
        before = await _converged(procs, above=2, timeout=120)
        east = procs[: n // 2]  # the west half's RPC is out of this namespace's reach while split
        for link in nets.links[n // 2 :]:  # the west half moves to a bridge of its own
            ip("link", "set", link, "master", other_bridge)
        # Let what was in flight land, then neither half may commit anything more.
        await trio.sleep(10)
        split_east = [(await _status(p))["height"] for p in east]
        await trio.sleep(20)
        # 8 of 16: no quorum, so no new height. A peer that lagged at the cut may still
        # fetch a block its half already holds (certified before the split), so each may
        # catch up to the half's top, and none may go past it.
        after = [(await _status(p))["height"] for p in east]
        assert max(after) == max(split_east), (split_east, after)
        assert all(a >= s for a, s in zip(after, split_east, strict=True)), (split_east, after)
        for link in nets.links[n // 2 :]:
            ip("link", "set", link, "master", nets.bridge)
        healed = await _converged(procs, above=max(split_east) + 2, timeout=240)
        assert healed > before  # pos never reverts a committed block: one chain means no half committed apart
    finally:
        devnet.stop(run_dir)
        nets.down()
        ip("link", "del", other_bridge, check=False)
