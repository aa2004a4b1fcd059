"""Topology: pure graph checks, no network."""

import random

import pytest

from fedp2p.net.topology import KINDS, is_connected, neighbours

SIZES = [2, 3, 5, 8, 13, 30, 64]


def _ids(n: int) -> list[int]:
    return [1000 + 7 * i for i in range(n)]


def _assert_simple_symmetric(graph: dict[int, frozenset[int]]) -> None:
    for peer, near in graph.items():
        assert peer not in near
        for other in near:
            assert peer in graph[other]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", SIZES)
def test_symmetric_connected_and_order_independent(kind: str, n: int) -> None:
    ids = _ids(n)
    shuffled = ids[:]
    random.Random(n).shuffle(shuffled)

    graph = neighbours(kind, ids, seed=3)

    assert set(graph) == set(ids)
    _assert_simple_symmetric(graph)
    assert is_connected(graph)
    assert neighbours(kind, shuffled, seed=3) == graph


@pytest.mark.parametrize("n", SIZES)
def test_full_links_everyone(n: int) -> None:
    graph = neighbours("full", _ids(n), seed=0)
    assert all(len(near) == n - 1 for near in graph.values())


@pytest.mark.parametrize("n", SIZES)
def test_ring_degree_two(n: int) -> None:
    graph = neighbours("ring", _ids(n), seed=0)
    assert all(len(near) == min(2, n - 1) for near in graph.values())
    ids = sorted(_ids(n))
    assert ids[1] in graph[ids[0]] and ids[-1] in graph[ids[0]]


@pytest.mark.parametrize("n", [5, 8, 13, 30, 64])
@pytest.mark.parametrize("degree", [2, 3, 4, 6])
def test_random_is_regular(n: int, degree: int) -> None:
    if degree >= n - 1:
        pytest.skip("falls back to the full graph, tested below")
    graph = neighbours("random", _ids(n), seed=11, degree=degree)
    degrees = sorted(len(near) for near in graph.values())
    if degree * n % 2:
        # Documented fallback: one peer gets one extra link.
        assert degrees == [degree] * (n - 1) + [degree + 1]
    else:
        assert degrees == [degree] * n


def test_random_depends_on_seed() -> None:
    ids = _ids(30)
    graphs = {tuple(sorted(neighbours("random", ids, seed=s)[ids[0]])) for s in range(10)}
    assert len(graphs) > 1


def test_random_small_falls_back_to_full() -> None:
    graph = neighbours("random", _ids(4), seed=0, degree=4)
    assert graph == neighbours("full", _ids(4), seed=0)


def test_random_degree_one_rejected() -> None:
    with pytest.raises(ValueError, match="degree"):
        neighbours("random", _ids(10), seed=0, degree=1)


@pytest.mark.parametrize("n", SIZES)
def test_exponential_hops(n: int) -> None:
    ids = sorted(_ids(n))
    graph = neighbours("exponential", ids, seed=0)
    for i, peer in enumerate(ids):
        expected = set()
        hop = 1
        while hop < n:
            expected |= {ids[(i + hop) % n], ids[(i - hop) % n]}
            hop *= 2
        expected.discard(peer)
        assert graph[peer] == expected


def test_edge_cases() -> None:
    assert neighbours("full", [], seed=0) == {}
    assert neighbours("ring", [5], seed=0) == {5: frozenset()}
    with pytest.raises(ValueError, match="unknown topology"):
        neighbours("star", [1, 2], seed=0)
    with pytest.raises(ValueError, match="distinct"):
        neighbours("full", [1, 1], seed=0)
