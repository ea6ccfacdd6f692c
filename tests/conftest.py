"""Testing policy.

* Pure code (codec, crypto, chain, consensus, mempool, market) is tested directly,
  with hypothesis where inputs are open-ended.
* Everything that claims a real part works uses the real part: libp2p hosts on
  127.0.0.1 with port 0, LevelDB in ``tmp_path``, a real Hypercorn server answered
  by httpx, and real ``aitbc-peer`` processes for the end-to-end devnet test.
* Every I/O test runs under ``trio.fail_after``; tests wait for conditions, never
  for fixed sleeps, and assert behaviour (state, balances, envelopes), not timing.
* Timing lives in ``bench/``, never in tests.
"""

from __future__ import annotations

import logging
import os
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from aitbc_p2p.rpc import serve_rpc
from aitbc_p2p.testing import make_genesis, make_key, open_test_network


@pytest.fixture(autouse=True)
def _quiet_libp2p() -> Iterator[None]:
    logging.getLogger("libp2p").setLevel(logging.WARNING)
    yield


def _peer_children() -> list[int]:
    """``aitbc-peer`` processes this pytest process started and that still run."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if ppid == os.getpid() and b"aitbc_p2p.cli.peer" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True, scope="module")
def _no_leaked_peers() -> Iterator[None]:
    """A test stopped by its timeout may not reach its own ``devnet.stop``: peers left
    running would load the machine under every later test. Kill them at the end of
    the module (module-scoped devnets have been stopped by then)."""
    yield
    if not Path("/proc").is_dir():
        return
    leaked = _peer_children()
    for pid in leaked:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    if leaked:
        warnings.warn(f"killed {len(leaked)} peer processes left running by this module", stacklevel=1)


@pytest.fixture
def alice():
    return make_key("alice")


@pytest.fixture
def bob():
    return make_key("bob")


@pytest.fixture
def authority():
    return make_key("authority")


@pytest.fixture
def genesis(alice, bob, authority):
    return make_genesis(
        [authority],
        {alice.address: 10**12, bob.address: 10**9, authority.address: 10**9},
        providers=[bob.address],
        arbiters=[authority.address],
        dispute_blocks=2,
        unbonding_blocks=3,
        dispute_bond=5000,
    )


RPC_TOKEN = "test-token-" + "x" * 20


@pytest.fixture
async def rpc_server(nursery):
    """One peer (the client key funded with 100 AITBC) and its RPC served by Hypercorn on
    127.0.0.1: ``(node, base url)``; the bearer token is :data:`RPC_TOKEN`."""
    async with open_test_network(1, alloc={make_key("client").address: 100 * 10**9}) as nodes:
        url = await nursery.start(
            lambda task_status: serve_rpc(nodes[0], token=RPC_TOKEN, port=0, task_status=task_status)
        )
        yield nodes[0], url
        nursery.cancel_scope.cancel()
