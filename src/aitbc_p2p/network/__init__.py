"""L3 network adapter: libp2p host, gossip topics, framed request/response."""

from aitbc_p2p.network.abc import (
    IGNORE,
    REJECT,
    GossipMessage,
    Network,
    RequestHandler,
    StreamHandler,
    ValidationResult,
    Validator,
    Verdict,
    accept,
)
from aitbc_p2p.network.host import Libp2pNetwork, open_libp2p_network, peer_id_of
from aitbc_p2p.network.protocols import (
    CONSENSUS_PROTOCOL,
    JOB_PROTOCOL,
    MAX_FRAME,
    MAX_SYNC_FRAME,
    PEERS_PROTOCOL,
    STATUS_PROTOCOL,
    SYNC_PROTOCOL,
    topic,
)
from aitbc_p2p.network.scoring import PeerScores, ScoringPolicy

__all__ = [
    "CONSENSUS_PROTOCOL",
    "IGNORE",
    "JOB_PROTOCOL",
    "MAX_FRAME",
    "MAX_SYNC_FRAME",
    "PEERS_PROTOCOL",
    "REJECT",
    "STATUS_PROTOCOL",
    "SYNC_PROTOCOL",
    "GossipMessage",
    "Libp2pNetwork",
    "Network",
    "PeerScores",
    "RequestHandler",
    "ScoringPolicy",
    "StreamHandler",
    "ValidationResult",
    "Validator",
    "Verdict",
    "accept",
    "open_libp2p_network",
    "peer_id_of",
    "topic",
]
