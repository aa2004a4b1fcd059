"""Weighted averaging of states and of relation matrices, as pure functions."""

import pytest
import torch

from fedp2p.learn.aggregate import average_relations, weighted_average
from fedp2p.learn.kd import relation_matrix


def state(w: list[float], b: float, steps: int) -> dict[str, torch.Tensor]:
    return {
        "w": torch.tensor(w),
        "b": torch.tensor([b], dtype=torch.float16),
        "steps": torch.tensor(steps),
    }


def test_weighted_average_exact_values():
    a, b = state([1.0, 2.0], 4.0, 7), state([3.0, 6.0], 8.0, 9)

    out = weighted_average([a, b], [1.0, 3.0])  # normalised to 0.25 / 0.75

    assert torch.equal(out["w"], torch.tensor([2.5, 5.0]))
    assert torch.equal(out["b"], torch.tensor([7.0], dtype=torch.float16))
    assert out["b"].dtype == torch.float16  # cast back after float64 arithmetic
    assert torch.equal(out["steps"], torch.tensor(7))  # integer buffer: from the first


def test_weighted_average_does_not_alias_its_inputs():
    a = state([1.0, 2.0], 4.0, 7)
    out = weighted_average([a], [1.0])
    out["w"].add_(1)
    out["steps"].add_(1)
    assert torch.equal(a["w"], torch.tensor([1.0, 2.0]))
    assert a["steps"].item() == 7


def test_weighted_average_is_deterministic_for_a_fixed_order():
    gen = torch.Generator().manual_seed(0)
    states = [{"w": torch.randn(50, generator=gen)} for _ in range(5)]
    weights = [0.1, 0.7, 1.3, 2.0, 0.37]

    first = weighted_average(states, weights)
    second = weighted_average(states, weights)
    shuffled = weighted_average(states[::-1], weights[::-1])

    assert torch.equal(first["w"], second["w"])  # bit-exact
    torch.testing.assert_close(first["w"], shuffled["w"], rtol=1e-6, atol=1e-7)  # rounding only


def test_weighted_average_refuses_mismatches():
    a = state([1.0, 2.0], 4.0, 7)
    with pytest.raises(ValueError, match="'w'"):
        weighted_average([a, state([1.0, 2.0, 3.0], 4.0, 7)], [1.0, 1.0])
    with pytest.raises(ValueError, match="missing"):
        weighted_average([a, {"w": a["w"], "b": a["b"]}], [1.0, 1.0])
    with pytest.raises(ValueError, match="'w'"):
        weighted_average([a, {**a, "w": a["w"].double()}], [1.0, 1.0])
    with pytest.raises(ValueError):
        weighted_average([a, a], [1.0])
    with pytest.raises(ValueError):
        weighted_average([a, a], [0.0, 0.0])
    with pytest.raises(ValueError):
        weighted_average([a, a], [1.0, -0.5])
    with pytest.raises(ValueError):
        weighted_average([], [])


def test_average_relations_is_the_mean_of_relation_matrices_across_widths():
    gen = torch.Generator().manual_seed(1)
    za, zb = torch.randn(6, 4, generator=gen), torch.randn(6, 9, generator=gen)

    out = average_relations([za, zb])

    assert out.shape == (6, 6)
    torch.testing.assert_close(out, (relation_matrix(za) + relation_matrix(zb)) / 2)
    assert torch.equal(out, average_relations([za, zb]))
    with pytest.raises(ValueError):
        average_relations([za, torch.randn(5, 4)])
