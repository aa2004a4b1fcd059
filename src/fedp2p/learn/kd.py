"""Knowledge-distillation losses, one pure function each, and one distillation epoch.

The math is in docs/algorithms.md. Every loss takes the teacher's signal already detached:
peers receive it over the wire, so no gradient could flow into it anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from fedp2p.learn.train import batches

if TYPE_CHECKING:
    from fedp2p.learn.learner import Learner

log = logging.getLogger(__name__)


def response_kd_loss(student_logits: Tensor, teacher_probs: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(teacher || softmax(student / T)), batch-mean: Hinton's T^2 keeps gradients O(1) in T."""
    log_q = F.log_softmax(student_logits / temperature, dim=1)  # (B, C)
    kl = F.kl_div(log_q, teacher_probs.detach(), reduction="batchmean")
    return kl * temperature * temperature


def ensemble_teacher(
    logits: Sequence[Tensor], temperature: float, weights: Sequence[float] | None = None
) -> Tensor:
    """Average the neighbours' softened probabilities (not logits), so scales of logits do not matter."""
    if not logits:
        raise ValueError("ensemble_teacher needs at least one teacher")
    if weights is None:
        weights = [1.0] * len(logits)
    if len(weights) != len(logits):
        raise ValueError(f"{len(weights)} weights for {len(logits)} teachers")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, not {list(weights)}")
    shape = logits[0].shape
    for i, teacher in enumerate(logits):
        if teacher.ndim != 2 or teacher.shape != shape:
            raise ValueError(f"teacher {i} has logits of shape {tuple(teacher.shape)}, not {shape}")
    total = float(sum(weights))
    probs = torch.zeros(shape, dtype=torch.float32, device=logits[0].device)  # (N, C)
    for w, teacher in zip(weights, logits, strict=True):
        probs += (w / total) * F.softmax(teacher.detach().float() / temperature, dim=1)
    return probs


def sharpen(probs: Tensor, tau: float) -> Tensor:
    """Entropy reduction (DS-FL's ERA): p^(1/tau), renormalised; tau < 1 sharpens, tau = 1 is identity.

    Under strong label skew each neighbour knows a few classes, so the averaged
    ensemble is nearly flat even where its argmax is right; sharpening keeps the
    argmax and gives the student a signal strong enough to learn classes it never saw.
    """
    if tau <= 0:
        raise ValueError(f"tau must be positive, not {tau}")
    if tau == 1.0:
        return probs
    log_p = probs.clamp_min(1e-12).log() / tau  # (N, C)
    return F.softmax(log_p, dim=1)


def relation_matrix(z: Tensor) -> Tensor:
    """Cosine similarity of every pair of samples (B, B): comparable across any two architectures."""
    unit = F.normalize(z, dim=1)  # (B, D), rows of norm 1 (all-zero rows stay zero)
    return unit @ unit.T  # (B, B)


def relation_kd_loss(student_z: Tensor, teacher_relation: Tensor) -> Tensor:
    """MSE between the student's and the teacher's (B, B) relations: similarity-preserving KD."""
    student_relation = relation_matrix(student_z)  # (B, B)
    if student_relation.shape != teacher_relation.shape:
        raise ValueError(
            f"teacher relation has shape {tuple(teacher_relation.shape)}, "
            f"student's is {tuple(student_relation.shape)}"
        )
    return F.mse_loss(student_relation, teacher_relation.detach())


def prototype_loss(z: Tensor, labels: Tensor, prototypes: Tensor, present: Tensor) -> Tensor:
    """FedProto's regulariser: pull each embedding towards its class's global prototype, where known."""
    keep = present[labels]  # (B,) bool: the class has a global prototype
    if not bool(keep.any()):
        return z.sum() * 0.0  # zero, but still part of the graph
    return F.mse_loss(z[keep], prototypes[labels[keep]].detach())


def class_prototypes(z: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class mean embedding (C, D) and count (C,), zeros for absent classes, for FedProto."""
    counts = torch.bincount(labels, minlength=num_classes)  # (C,)
    sums = torch.zeros(num_classes, z.shape[1], dtype=z.dtype, device=z.device)
    sums.index_add_(0, labels, z)  # (C, D)
    return sums / counts.clamp(min=1).unsqueeze(1).to(z.dtype), counts


def distill_epoch(
    learner: Learner,
    ref_x: Tensor,
    *,
    teacher_probs: Tensor | None,
    teacher_relation: Tensor | None,
    temperature: float,
    kd_weight: float,
    feature_weight: float,
    batch_size: int,
    generator: torch.Generator,
    max_grad_norm: float | None = 5.0,
) -> dict[str, float]:
    """One pass over the reference set, each step mixing private CE with the teachers' signals.

    `teacher_probs` is (R, C), softened at `temperature`; `teacher_relation` is the full (R, R)
    relation matrix, indexed by each batch. Private batches (of `learner.settings.batch_size`)
    cycle through a reshuffled order. Returns the mean of each term over the steps.
    """
    model, optimizer = learner.model, learner.optimizer
    num_ref, num_private = len(ref_x), learner.num_train
    if teacher_probs is not None and teacher_probs.shape[0] != num_ref:
        raise ValueError(f"teacher_probs has {teacher_probs.shape[0]} rows for {num_ref} images")
    if teacher_relation is not None and teacher_relation.shape != (num_ref, num_ref):
        raise ValueError(f"teacher_relation has shape {tuple(teacher_relation.shape)}")
    private_bs = learner.settings.batch_size
    private_order = torch.randperm(num_private, generator=generator)
    cursor = 0

    model.train()
    device = ref_x.device
    totals = {key: torch.zeros((), device=device) for key in ("loss", "ce", "kd", "feature")}
    steps = 0
    for idx in batches(num_ref, batch_size, generator):
        # Next private batch, reshuffling when the order runs out.
        if cursor + private_bs > num_private:
            private_order, cursor = torch.randperm(num_private, generator=generator), 0
        pidx = private_order[cursor : cursor + private_bs]
        cursor += private_bs
        x_private, y_private = learner.train_x[pidx], learner.train_y[pidx]  # (P, C, H, W), (P,)

        # One forward pass for both batches: ConvNet has no batch statistics to mix.
        z, logits = model.forward_both(torch.cat([x_private, ref_x[idx]]))  # (P+B, D), (P+B, K)
        p = len(pidx)
        ce = F.cross_entropy(logits[:p], y_private) if p else logits.sum() * 0.0
        loss = ce
        kd = feature = torch.zeros((), device=device)
        if teacher_probs is not None:
            kd = response_kd_loss(logits[p:], teacher_probs[idx], temperature)  # (B, K) vs (B, K)
            loss = loss + kd_weight * kd
        if teacher_relation is not None:
            feature = relation_kd_loss(z[p:], teacher_relation[idx][:, idx])  # (B, D) vs (B, B)
            loss = loss + feature_weight * feature

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm:  # a sharp teacher at T^2 weight can kick a plain deep net into divergence
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        for key, value in (("loss", loss), ("ce", ce), ("kd", kd), ("feature", feature)):
            totals[key] += value.detach()
        steps += 1
    return {key: float(total) / max(steps, 1) for key, total in totals.items()}
