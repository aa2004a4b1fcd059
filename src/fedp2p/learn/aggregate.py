"""Aggregation as pure functions: weighted model averaging and averaged relation matrices.

The result depends on the order of the inputs only through float rounding, and is bit-exact
for a fixed order; callers sort by peer id so that every peer computes the same thing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from fedp2p.learn.kd import relation_matrix

log = logging.getLogger(__name__)


def _normalised(weights: Sequence[float], count: int) -> list[float]:
    """Weights summing to 1; refuse ones that would make the average meaningless."""
    if len(weights) != count:
        raise ValueError(f"{len(weights)} weights for {count} inputs")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and sum to > 0, not {list(weights)}")
    total = math.fsum(weights)
    return [w / total for w in weights]


def weighted_average(
    states: Sequence[Mapping[str, Tensor]], weights: Sequence[float]
) -> dict[str, Tensor]:
    """FedAvg of state dicts: floats averaged in float64, other buffers taken from the first state."""
    if not states:
        raise ValueError("weighted_average needs at least one state")
    norm = _normalised(weights, len(states))
    first = states[0]
    for i, state in enumerate(states[1:], start=1):
        if state.keys() != first.keys():
            missing, extra = (
                sorted(first.keys() - state.keys()),
                sorted(state.keys() - first.keys()),
            )
            raise ValueError(f"state {i} has other keys: missing {missing}, extra {extra}")
        for key, tensor in state.items():
            ref = first[key]
            if tensor.shape != ref.shape or tensor.dtype != ref.dtype:
                raise ValueError(
                    f"state {i}: {key!r} is {tensor.dtype} {tuple(tensor.shape)}, "
                    f"state 0 has {ref.dtype} {tuple(ref.shape)}"
                )
    out: dict[str, Tensor] = {}
    for key, ref in first.items():
        if not ref.is_floating_point():
            out[key] = ref.detach().clone()  # e.g. step counters: averaging them means nothing
            continue
        acc = torch.zeros(ref.shape, dtype=torch.float64, device=ref.device)
        for w, state in zip(norm, states, strict=True):
            acc += w * state[key].detach().to(device=ref.device, dtype=torch.float64)
        out[key] = acc.to(ref.dtype)
    return out


def average_relations(zs: Sequence[Tensor]) -> Tensor:
    """Mean of the teachers' (B, B) relation matrices: one target for relation KD."""
    if not zs:
        raise ValueError("average_relations needs at least one embedding matrix")
    rows = zs[0].shape[0]
    for i, z in enumerate(zs):
        if z.ndim != 2 or z.shape[0] != rows:
            raise ValueError(f"embeddings {i} have shape {tuple(z.shape)}, need ({rows}, D)")
    total = torch.zeros(rows, rows, dtype=torch.float32, device=zs[0].device)  # (B, B)
    for z in zs:  # widths may differ: relations are (B, B) whatever D is
        total += relation_matrix(z.detach().float())
    return total / len(zs)
