"""Who talks to whom: pure functions from a set of peer ids to a symmetric neighbour map.

No network here. Every function sorts the peer ids first, so the result depends only on
the set of ids and the seed, never on the order in which a node happened to learn them:
every node computes the same graph on its own and connects to its part of it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

log = logging.getLogger(__name__)

KINDS = ("full", "ring", "random", "exponential")

Graph = dict[int, frozenset[int]]

_MAX_ATTEMPTS = 1000


def neighbours(kind: str, peer_ids: Sequence[int], *, seed: int, degree: int = 4) -> Graph:
    """Each peer's neighbours under topology `kind`; symmetric, no self-loops, deterministic."""
    ids = sorted(set(peer_ids))
    if len(ids) != len(peer_ids):
        raise ValueError(f"peer ids must be distinct, got {len(peer_ids) - len(ids)} duplicate(s)")
    n = len(ids)
    if kind == "full":
        edges = {(i, j) for i in range(n) for j in range(i + 1, n)}
    elif kind == "ring":
        edges = _ring_edges(list(range(n)))
    elif kind == "exponential":
        edges = _exponential_edges(n)
    elif kind == "random":
        edges = _random_regular_edges(n, degree, random.Random(seed))
    else:
        raise ValueError(f"unknown topology {kind!r}; choose one of {', '.join(KINDS)}")
    adjacency: dict[int, set[int]] = {i: set() for i in range(n)}
    for i, j in edges:
        adjacency[i].add(j)
        adjacency[j].add(i)
    return {ids[i]: frozenset(ids[j] for j in adjacency[i]) for i in range(n)}


def is_connected(graph: Graph) -> bool:
    """Whether every peer can reach every other one (an empty graph counts as connected)."""
    if not graph:
        return True
    start = next(iter(graph))
    seen = {start}
    stack = [start]
    while stack:
        for other in graph[stack.pop()]:
            if other not in seen:
                seen.add(other)
                stack.append(other)
    return len(seen) == len(graph)


def _edge(i: int, j: int) -> tuple[int, int]:
    """An undirected edge with its ends in order, so that a set holds each edge once."""
    return (i, j) if i < j else (j, i)


def _ring_edges(order: list[int]) -> set[tuple[int, int]]:
    """Each index linked to the next one in `order`, the last back to the first."""
    n = len(order)
    if n < 2:
        return set()
    return {_edge(order[k], order[(k + 1) % n]) for k in range(n)}


def _exponential_edges(n: int) -> set[tuple[int, int]]:
    """Each i linked to i +- 2^j (mod n) for every 2^j < n: O(log n) degree, O(log n) diameter."""
    edges: set[tuple[int, int]] = set()
    hop = 1
    while hop < n:
        for i in range(n):
            for j in ((i + hop) % n, (i - hop) % n):
                if j != i:
                    edges.add(_edge(i, j))
        hop *= 2
    return edges


def _random_regular_edges(n: int, degree: int, rng: random.Random) -> set[tuple[int, int]]:
    """A connected random graph where every node has `degree` neighbours (see fallbacks)."""
    if degree < 1:
        raise ValueError(f"degree must be at least 1, got {degree}")
    if n <= degree + 1:
        if n > 1 and degree >= n:
            log.warning("random topology: degree %d >= %d peers, using the full graph", degree, n)
        return {(i, j) for i in range(n) for j in range(i + 1, n)}
    if degree == 1:
        raise ValueError(f"a degree-1 graph of {n} peers cannot be connected; use degree >= 2")
    if degree == 2:
        # A connected 2-regular graph is exactly a cycle: a ring in shuffled order.
        order = list(range(n))
        rng.shuffle(order)
        return _ring_edges(order)
    degrees = [degree] * n
    if (degree * n) % 2:
        # A k-regular graph needs k*n even; give one peer one extra link instead.
        degrees[-1] += 1
        log.warning(
            "random topology: %d peers x degree %d is odd; peer index %d gets degree %d",
            n,
            degree,
            n - 1,
            degree + 1,
        )
    for _ in range(_MAX_ATTEMPTS):
        edges = _pair_stubs(degrees, rng)
        if edges is not None and _edges_connected(n, edges):
            return edges
    raise RuntimeError(
        f"no connected {degree}-regular graph on {n} peers after {_MAX_ATTEMPTS} tries"
    )


def _pair_stubs(degrees: list[int], rng: random.Random) -> set[tuple[int, int]] | None:
    """One try of the configuration model, pairing only stubs that make a simple graph.

    Returns None when it paints itself into a corner (the caller retries).
    """
    stubs = [i for i, d in enumerate(degrees) for _ in range(d)]
    edges: set[tuple[int, int]] = set()
    while stubs:
        for _ in range(100):
            a, b = rng.sample(range(len(stubs)), 2)
            i, j = stubs[a], stubs[b]
            if i != j and _edge(i, j) not in edges:
                break
        else:
            return None
        edges.add(_edge(i, j))
        for k in sorted((a, b), reverse=True):
            stubs[k] = stubs[-1]
            stubs.pop()
    return edges


def _edges_connected(n: int, edges: set[tuple[int, int]]) -> bool:
    """Whether the graph on 0..n-1 with these edges is connected."""
    graph: dict[int, set[int]] = {i: set() for i in range(n)}
    for i, j in edges:
        graph[i].add(j)
        graph[j].add(i)
    return is_connected({i: frozenset(s) for i, s in graph.items()})
