"""The files a peer's data directory holds for its local clients (no server code here, so
the SDK reads them without the server stack)."""

TOKEN_FILE = "rpc.token"
"""The RPC's bearer token (mode 0600), created at the peer's first start."""
NODE_INFO = "node.json"
"""Written by ``aitbc-peer`` into its data directory once it listens: address, peer id,
``rpc_url`` and listen addresses. Removed at start, so its presence means "up"."""
