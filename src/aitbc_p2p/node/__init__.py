"""L4: the composition root. ``open_node(config)`` starts a peer and owns its tasks."""

from aitbc_p2p.node.api import NodeAPI
from aitbc_p2p.node.config import NodeConfig, ProviderConfig
from aitbc_p2p.node.node import Node, open_node

__all__ = ["Node", "NodeAPI", "NodeConfig", "ProviderConfig", "open_node"]
