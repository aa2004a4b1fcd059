"""fedp2p: decentralized peer-to-peer federated learning over TCP, with heterogeneous models."""

__version__ = "0.1.0"
