"""A node in its own OS process, for tests: echo the SHA-256 of what arrives, send a tensor back.

Usage: python peer_process.py HOST PORT PEER_ID SEED NBYTES (the secret comes from stdin, hex).
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np

from fedp2p.net import Node, NodeConfig, Received
from fedp2p.wire.messages import Payload, WireTensor


def tensor_bytes(seed: int, nbytes: int) -> bytes:
    """Deterministic float32 data that both processes can regenerate."""
    return np.random.default_rng(seed).standard_normal(nbytes // 4, dtype=np.float32).tobytes()


def main() -> None:
    host, port, peer_id, seed, nbytes = sys.argv[1], *map(int, sys.argv[2:6])
    secret = bytes.fromhex(sys.stdin.readline().strip())
    node = Node(NodeConfig(peer_id=peer_id, secret=secret, bootstrap=((host, port),)))
    node.start()
    try:
        while True:
            event = node.events.get()
            if isinstance(event, Received) and isinstance(event.message, Payload):
                got = event.message.tensors[0].data
                digest = hashlib.sha256(got).hexdigest()
                data = tensor_bytes(seed, nbytes)
                reply = Payload(
                    peer_id,
                    event.message.round,
                    "weights",
                    (WireTensor("w", "float32", (len(data) // 4,), data),),
                    {"sha256": digest},
                )
                node.send(event.peer_id, reply, timeout=30)
    finally:
        node.stop()


if __name__ == "__main__":
    main()
