"""aitbc_p2p: the peer of the AITBC decentralized GPU compute market.

A peer keeps the chain in LevelDB, gossips transactions, blocks and job offers over
libp2p, runs a pluggable consensus, may sell GPU compute, and serves a local RPC.

The SDK in a few lines::

    import trio
    from aitbc_p2p import RpcClient, load_key_file, aitbc

    async def main():
        key = load_key_file("nodes/devnet/wallets/client.json", "devnet")
        async with RpcClient("http://127.0.0.1:8006", token=open("rpc.token").read().strip()) as rpc:
            job_id = await rpc.submit_job(key, "echo", {"message": "hi"}, max_price=aitbc(2))
            print(await rpc.wait_job(job_id))

    trio.run(main)

Nothing happens at import time: no logging set-up, no I/O. The node and the RPC (and
with them libp2p, Quart and Hypercorn) load on first use, so ``import aitbc_p2p.chain``
or a signature-checking worker process starts in a fraction of the time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aitbc_p2p.chain import Block, BlockHeader, Genesis, Transaction, TxKind, genesis_from_json
from aitbc_p2p.consensus.proofs import JobProof, VerifiedReceipt, verify_receipt
from aitbc_p2p.crypto import Domain, PrivateKey, load_key_file, save_key_file
from aitbc_p2p.exceptions import (
    AitbcError,
    BadSignature,
    CodecError,
    ComputeError,
    ConfigError,
    ConsensusError,
    CryptoError,
    KeyFileError,
    MarketError,
    NetworkError,
    RpcError,
    StoreError,
    TxRejected,
    ValidationError,
)
from aitbc_p2p.market import Bid, CapabilityRecord, JobOffer, select_bid
from aitbc_p2p.types import UNITS_PER_AITBC, VERSION, Address, Hash32, JobId, aitbc, format_aitbc

if TYPE_CHECKING:
    from aitbc_p2p.node import Node, NodeAPI, NodeConfig, ProviderConfig, open_node
    from aitbc_p2p.rpc import RpcClient, create_app, result_image, serve_rpc

_LAZY = {
    "Node": "aitbc_p2p.node",
    "NodeAPI": "aitbc_p2p.node",
    "NodeConfig": "aitbc_p2p.node",
    "ProviderConfig": "aitbc_p2p.node",
    "open_node": "aitbc_p2p.node",
    "RpcClient": "aitbc_p2p.rpc",
    "create_app": "aitbc_p2p.rpc",
    "result_image": "aitbc_p2p.rpc",
    "serve_rpc": "aitbc_p2p.rpc",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aitbc_p2p' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = VERSION

__all__ = [
    "UNITS_PER_AITBC",
    "Address",
    "AitbcError",
    "BadSignature",
    "Bid",
    "Block",
    "BlockHeader",
    "CapabilityRecord",
    "CodecError",
    "ComputeError",
    "ConfigError",
    "ConsensusError",
    "CryptoError",
    "Domain",
    "Genesis",
    "Hash32",
    "JobId",
    "JobOffer",
    "JobProof",
    "KeyFileError",
    "MarketError",
    "NetworkError",
    "Node",
    "NodeAPI",
    "NodeConfig",
    "PrivateKey",
    "ProviderConfig",
    "RpcClient",
    "RpcError",
    "StoreError",
    "Transaction",
    "TxKind",
    "TxRejected",
    "ValidationError",
    "VerifiedReceipt",
    "__version__",
    "aitbc",
    "create_app",
    "format_aitbc",
    "genesis_from_json",
    "load_key_file",
    "open_node",
    "result_image",
    "save_key_file",
    "select_bid",
    "serve_rpc",
    "verify_receipt",
]
