"""What each algorithm shares with which neighbours, and how a peer learns from what it receives."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from fedp2p.config import RunConfig
from fedp2p.learn.aggregate import average_relations, weighted_average
from fedp2p.learn.kd import distill_epoch, ensemble_teacher, sharpen
from fedp2p.learn.learner import Learner
from fedp2p.peer.tensors import check_matrix, state_from_wire, state_to_wire, to_wire
from fedp2p.wire.messages import Payload

log = logging.getLogger(__name__)

Key = tuple[int, str]


@dataclass(frozen=True)
class Plan:
    """Which kinds of knowledge an algorithm shares."""

    weights: bool = False  # with neighbours of the same architecture
    logits: bool = False  # with every neighbour: logits on the round's reference images
    features: bool = False  # with every neighbour: embeddings of the round's reference images

    @property
    def distills(self) -> bool:
        """Whether the peer runs a distillation epoch on the reference images."""
        return self.logits or self.features


PLANS: dict[str, Plan] = {
    "local": Plan(),
    "weights": Plan(weights=True),
    "logits": Plan(logits=True),
    "features": Plan(features=True),
    "hybrid": Plan(weights=True, logits=True, features=True),
}


def expected(plan: Plan, config: RunConfig, me: int, neighbours: frozenset[int]) -> set[Key]:
    """The (peer, kind) payloads a peer waits for in a round."""
    keys: set[Key] = set()
    for n in neighbours:
        if plan.weights and config.arch_of(n) == config.arch_of(me):
            keys.add((n, "weights"))
        if plan.logits:
            keys.add((n, "logits"))
        if plan.features:
            keys.add((n, "features"))
    return keys


def round_reference(config: RunConfig, rnd: int, reference_size: int) -> np.ndarray:
    """Pick the round's reference images, the same for every peer: a seeded draw of kd_samples."""
    rng = np.random.default_rng([config.seed, rnd])
    n = min(config.kd_samples, reference_size)
    return np.sort(rng.choice(reference_size, size=n, replace=False))


@torch.no_grad()
def _outputs(learner: Learner, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    learner.model.eval()
    zs, logits = [], []
    for start in range(0, len(ref), 500):
        z, out = learner.model.forward_both(ref[start : start + 500])
        zs.append(z.float().cpu())
        logits.append(out.float().cpu())
    return torch.cat(zs), torch.cat(logits)


def build_payloads(
    plan: Plan, learner: Learner, me: int, rnd: int, ref: torch.Tensor
) -> dict[str, Payload]:
    """Build the payloads this peer sends this round, by kind (weights go to same-arch neighbours only)."""
    out: dict[str, Payload] = {}
    meta = {"arch": learner.model_config.arch, "samples": learner.num_train}
    if plan.weights:
        # A copy: the wire shares the tensors' memory until sent, and training goes on meanwhile.
        state = {k: v.detach().cpu().clone() for k, v in learner.model.state_dict().items()}
        out["weights"] = Payload(me, rnd, "weights", state_to_wire(state), meta)
    if plan.distills:
        z, logits = _outputs(learner, ref)
        if plan.logits:
            out["logits"] = Payload(me, rnd, "logits", (to_wire("logits", logits),), meta)
        if plan.features:
            out["features"] = Payload(me, rnd, "features", (to_wire("embeddings", z),), meta)
    return out


def audience(kind: str, config: RunConfig, me: int, neighbours: frozenset[int]) -> list[int]:
    """Who gets a payload of this kind, in id order."""
    if kind == "weights":
        return sorted(n for n in neighbours if config.arch_of(n) == config.arch_of(me))
    return sorted(neighbours)


def learn_from(
    plan: Plan,
    config: RunConfig,
    learner: Learner,
    received: Mapping[Key, Payload],
    ref: torch.Tensor,
    generator: torch.Generator,
) -> dict[str, float]:
    """Average weights, then distil from logits and features; always in peer-id order.

    A payload that does not fit (wrong names, shapes, dtypes, non-finite values) is
    logged and skipped: a faulty or hostile neighbour costs its own contribution only.
    """
    info: dict[str, float] = {}
    senders = sorted({peer for peer, _ in received})
    if plan.weights:
        own = {k: v.detach().cpu() for k, v in learner.model.state_dict().items()}
        states, weights = [own], [float(learner.num_train)]
        for peer in senders:
            payload = received.get((peer, "weights"))
            if payload is None:
                continue
            try:
                state, samples = state_from_wire(payload.tensors, like=own), _samples(payload)
                _check_finite(state)
            except ValueError as exc:
                log.warning("weights from peer %d refused: %s", peer, exc)
                continue
            states.append(state)
            weights.append(float(samples))
        if len(states) > 1:
            avg = weighted_average(states, weights)
            learner.model.load_state_dict({k: v.to(learner.device) for k, v in avg.items()})
        info["averaged"] = len(states) - 1
    if not plan.distills:
        return info
    rows = len(ref)
    teacher_logits, teacher_z = [], []
    for peer in senders:
        try:
            if plan.logits and (peer, "logits") in received:
                p = received[(peer, "logits")]
                teacher_logits.append(check_matrix(_one(p), rows, learner.model_config.num_classes))
            if plan.features and (peer, "features") in received:
                p = received[(peer, "features")]
                teacher_z.append(check_matrix(_one(p), rows, learner.model_config.embed_dim))
        except ValueError as exc:
            log.warning("%s from peer %d refused: %s", "logits/features", peer, exc)
    teacher_probs = (
        sharpen(ensemble_teacher(teacher_logits, config.kd_temperature), config.kd_sharpen).to(
            learner.device
        )
        if teacher_logits
        else None
    )
    relation = average_relations(teacher_z).to(learner.device) if teacher_z else None
    info["teachers"] = max(len(teacher_logits), len(teacher_z))
    if teacher_probs is None and relation is None:
        return info
    t0 = time.perf_counter()
    before = {k: v.detach().clone() for k, v in learner.model.state_dict().items()}
    for _ in range(config.kd_epochs):
        losses = distill_epoch(
            learner,
            ref,
            teacher_probs=teacher_probs,
            teacher_relation=relation,
            temperature=config.kd_temperature,
            kd_weight=config.kd_weight,
            feature_weight=config.feature_weight,
            batch_size=config.kd_batch_size,
            generator=generator,
        )
        info.update(losses)
    try:
        _check_finite(learner.model.state_dict())
    except ValueError:
        log.warning("distillation diverged; keeping the weights from before it")
        learner.model.load_state_dict(before)
        info["reverted"] = 1
    info["distill_seconds"] = time.perf_counter() - t0
    return info


def _check_finite(state: Mapping[str, torch.Tensor]) -> None:
    """Refuse NaN or infinite weights: averaged in, one diverged peer would poison all its kind."""
    for name, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"tensor {name!r} holds NaN or infinite values")


def _one(payload: Payload) -> object:
    if len(payload.tensors) != 1:
        raise ValueError(f"expected one tensor, got {len(payload.tensors)}")
    return payload.tensors[0]


def _samples(payload: Payload) -> int:
    value = payload.meta.get("samples", 1)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**9:
        raise ValueError(f"bad sample count {value!r}")
    return value
