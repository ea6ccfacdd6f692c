"""L5: the local RPC (QuartTrio on Hypercorn) and its httpx client, the SDK transport."""

from aitbc_p2p.rpc.app import create_app
from aitbc_p2p.rpc.client import RpcClient, result_image
from aitbc_p2p.rpc.server import TOKEN_FILE, ensure_token, serve_rpc

__all__ = ["TOKEN_FILE", "RpcClient", "create_app", "ensure_token", "result_image", "serve_rpc"]
