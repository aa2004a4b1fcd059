"""TCP transport: a threaded node that carries wire messages between peers."""

from fedp2p.net.config import NodeConfig
from fedp2p.net.events import NodeEvent, PeerJoined, PeerLeft, Received
from fedp2p.net.node import Node
from fedp2p.net.topology import KINDS as TOPOLOGIES
from fedp2p.net.topology import is_connected, neighbours

__all__ = [
    "TOPOLOGIES",
    "Node",
    "NodeConfig",
    "NodeEvent",
    "PeerJoined",
    "PeerLeft",
    "Received",
    "is_connected",
    "neighbours",
]
