"""The public API is curated: this test pins it so that changes are deliberate."""

import aitbc_p2p

EXPECTED = {
    "UNITS_PER_AITBC", "Address", "AitbcError", "BadSignature", "Bid", "Block", "BlockHeader",
    "CapabilityRecord", "CodecError", "ComputeError", "ConfigError", "ConsensusError", "CryptoError",
    "Domain", "Genesis", "Hash32", "JobId", "JobOffer", "KeyFileError", "MarketError", "NetworkError",
    "Node", "NodeAPI", "NodeConfig", "PrivateKey", "ProviderConfig", "RpcClient", "RpcError",
    "StoreError", "Transaction", "TxKind", "TxRejected", "ValidationError", "__version__", "aitbc",
    "create_app", "format_aitbc", "genesis_from_json", "load_key_file", "open_node", "save_key_file",
    "result_image", "select_bid", "serve_rpc", "JobProof", "VerifiedReceipt", "verify_receipt",
}  # fmt: skip


def test_all_is_pinned():
    assert set(aitbc_p2p.__all__) == EXPECTED


def test_every_export_exists():
    for name in aitbc_p2p.__all__:
        assert hasattr(aitbc_p2p, name), name


def test_every_error_derives_from_root():
    for name in aitbc_p2p.__all__:
        obj = getattr(aitbc_p2p, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, aitbc_p2p.AitbcError), name
