"""Thirty nodes on loopback: gossip from one bootstrap node, then every topology in turn."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

from fedp2p.net import TOPOLOGIES, Node, Received, neighbours
from fedp2p.wire.messages import Payload

from .conftest import fast_config, our_threads, wait_event

N = 30


def test_thirty_nodes_gossip_and_form_every_topology() -> None:
    ids = random.Random(0).sample(range(1, 10**6), N)  # node 0 is not the lowest id
    # Generous handshake and liveness timeouts: ~1700 threads share 2 busy cores here.
    overrides = {
        "heartbeat_interval_s": 2.0,
        "dead_peer_timeout_s": 20.0,
        "handshake_timeout_s": 10.0,
        "gossip_interval_s": 1.0,
    }
    nodes = [Node(fast_config(ids[0], **overrides))]
    nodes[0].start()
    seed = nodes[0].address
    nodes += [
        Node(fast_config(pid, bootstrap=((seed.host, seed.port),), **overrides)) for pid in ids[1:]
    ]
    pool = ThreadPoolExecutor(max_workers=N)
    started = time.monotonic()
    try:
        for node in nodes[1:]:
            node.start()

        assert all(pool.map(lambda n: n.wait_for_peers(N - 1, timeout=15), nodes))
        assert all(set(n.known()) == set(ids) - {n.peer_id} for n in nodes)
        gossip_s = time.monotonic() - started

        # Sparse to dense: tearing down many links at once is the slow part with ~1700 threads.
        order = ["ring", "random", "exponential", "full"]
        assert sorted(order) == sorted(TOPOLOGIES)
        for kind in order:
            graph = neighbours(kind, ids, seed=42, degree=4)
            # Every node computes the graph from what it knows; all must agree.
            assert all(
                neighbours(kind, [*n.known(), n.peer_id], seed=42, degree=4) == graph for n in nodes
            )

            done = list(
                pool.map(lambda n, g=graph: n.connect_neighbours(g[n.peer_id], timeout=15), nodes)
            )

            print(f"{kind}: {time.monotonic() - started:.2f} s")
            assert all(done), kind
            for node in nodes:
                assert node.connected() == graph[node.peer_id], (kind, node.peer_id)

        # The last topology carries traffic: every node sends one message to each neighbour.
        for node in nodes:
            for other in node.connected():
                assert node.send(other, Payload(node.peer_id, 1, "logits", ()), timeout=5)
        for node in nodes:
            senders = {wait_event(node, Received, timeout=5).peer_id for _ in graph[node.peer_id]}
            assert senders == graph[node.peer_id]
    finally:
        pool.shutdown()
        stop_started = time.monotonic()
        for node in nodes:
            node.stop()
        print(
            f"gossip {gossip_s:.2f} s, total {time.monotonic() - started:.2f} s, "
            f"stop {time.monotonic() - stop_started:.2f} s"
        )
    assert our_threads() == []
