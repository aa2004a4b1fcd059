"""KD losses against hand-written float64 references (values and gradients), and distill_epoch."""

import math

import numpy as np
import pytest
import torch

from fedp2p.learn.kd import (
    class_prototypes,
    distill_epoch,
    ensemble_teacher,
    prototype_loss,
    relation_kd_loss,
    relation_matrix,
    response_kd_loss,
)
from fedp2p.learn.learner import Learner, TrainSettings
from fedp2p.learn.models import ModelConfig

# ---- hand-written references, explicit loops and sums in float64 ----


def ref_softmax(row: list[float], t: float) -> list[float]:
    m = max(row)
    e = [math.exp((v - m) / t) for v in row]
    s = sum(e)
    return [v / s for v in e]


def ref_response_kd(student: torch.Tensor, teacher_probs: torch.Tensor, t: float) -> float:
    """sum_i sum_c p_ic (log p_ic - log q_ic) / B * T^2, with q = softmax(student / T)."""
    total = 0.0
    for s_row, p_row in zip(student.tolist(), teacher_probs.tolist(), strict=True):
        q_row = ref_softmax(s_row, t)
        total += sum(
            p * (math.log(p) - math.log(q)) for p, q in zip(p_row, q_row, strict=True) if p > 0
        )
    return total / len(student) * t * t


def ref_relation(z: list[list[float]]) -> list[list[float]]:
    norms = [math.sqrt(sum(v * v for v in row)) for row in z]
    return [
        [
            sum(a * b for a, b in zip(zi, zj, strict=True)) / (ni * nj)
            for zj, nj in zip(z, norms, strict=True)
        ]
        for zi, ni in zip(z, norms, strict=True)
    ]


def ref_relation_kd_torch(z: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The same formula, element by element in float64 autograd, for the reference gradient."""
    b = z.shape[0]
    total = torch.zeros((), dtype=torch.float64)
    for i in range(b):
        for j in range(b):
            cos = (z[i] * z[j]).sum() / (z[i].pow(2).sum().sqrt() * z[j].pow(2).sum().sqrt())
            total = total + (cos - teacher[i, j]) ** 2
    return total / (b * b)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---- response-based KD ----


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_response_kd_matches_reference_value_and_gradient(t):
    student = rand(5, 4, seed=1).requires_grad_()
    teacher_probs = torch.softmax(rand(5, 4, seed=2) / t, dim=1)
    teacher_probs[0] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # a zero prob

    loss = response_kd_loss(student, teacher_probs, t)
    loss.backward()

    assert loss.item() == pytest.approx(
        ref_response_kd(student.detach(), teacher_probs, t), rel=1e-12
    )
    # d/ds_ic of T^2 / B * KL(p || softmax(s / T)) = T * (q_ic - p_ic) / B
    q = torch.tensor(
        [ref_softmax(row, t) for row in student.detach().tolist()], dtype=torch.float64
    )
    torch.testing.assert_close(student.grad, t * (q - teacher_probs) / 5, rtol=1e-10, atol=1e-12)


def test_response_kd_is_zero_for_a_teacher_identical_to_the_student():
    student = rand(6, 10, seed=3)
    loss = response_kd_loss(student, torch.softmax(student / 3.0, dim=1), 3.0)
    assert abs(loss.item()) < 1e-12


def test_response_kd_scales_with_t_squared():
    student, teacher = rand(4, 3, seed=4), rand(4, 3, seed=5)
    t = 5.0
    p = torch.softmax(teacher / t, dim=1)
    log_q = torch.log_softmax(student / t, dim=1)
    plain_kl = (p * (p.log() - log_q)).sum() / 4
    assert response_kd_loss(student, p, t).item() == pytest.approx(
        t * t * plain_kl.item(), rel=1e-12
    )


def test_response_kd_does_not_backpropagate_into_the_teacher():
    teacher_probs = torch.softmax(rand(3, 4, seed=6), dim=1).requires_grad_()
    response_kd_loss(rand(3, 4, seed=7).requires_grad_(), teacher_probs, 2.0).backward()
    assert teacher_probs.grad is None


def test_ensemble_teacher_rows_sum_to_one_and_weights_are_honoured():
    a, b = rand(7, 5, seed=8).float(), rand(7, 5, seed=9).float()
    pa, pb = torch.softmax(a / 2, dim=1), torch.softmax(b / 2, dim=1)

    plain = ensemble_teacher([a, b], 2.0)
    weighted = ensemble_teacher([a, b], 2.0, weights=[6.0, 2.0])  # normalised to 0.75 / 0.25
    only_a = ensemble_teacher([a, b], 2.0, weights=[1.0, 0.0])

    torch.testing.assert_close(plain.sum(1), torch.ones(7))
    torch.testing.assert_close(weighted.sum(1), torch.ones(7))
    torch.testing.assert_close(plain, (pa + pb) / 2)
    torch.testing.assert_close(weighted, 0.75 * pa + 0.25 * pb)
    torch.testing.assert_close(only_a, pa)


def test_ensemble_teacher_refuses_mismatches():
    a = torch.zeros(3, 4)
    with pytest.raises(ValueError):
        ensemble_teacher([a, torch.zeros(3, 5)], 1.0)
    with pytest.raises(ValueError):
        ensemble_teacher([a, a], 1.0, weights=[1.0])
    with pytest.raises(ValueError):
        ensemble_teacher([a], 1.0, weights=[-1.0])
    with pytest.raises(ValueError):
        ensemble_teacher([], 1.0)


# ---- relation-based (feature) KD ----


def test_relation_matrix_matches_reference_and_ignores_rotation_and_scale():
    z = rand(5, 8, seed=10)
    rotation, _ = torch.linalg.qr(rand(8, 8, seed=11))  # an orthogonal change of coordinates
    scale = torch.tensor([[1.0], [2.0], [0.5], [3.0], [7.0]], dtype=torch.float64)

    rel = relation_matrix(z)

    torch.testing.assert_close(rel, torch.tensor(ref_relation(z.tolist()), dtype=torch.float64))
    torch.testing.assert_close(relation_matrix(z @ rotation * scale), rel)
    torch.testing.assert_close(rel.diagonal(), torch.ones(5, dtype=torch.float64))
    assert torch.isfinite(relation_matrix(torch.zeros(3, 4))).all()  # dead ReLU rows: no NaN


def test_relation_kd_matches_reference_value_and_gradient():
    z = rand(4, 6, seed=12).requires_grad_()
    teacher = relation_matrix(rand(4, 3, seed=13))  # another width: relations are still (B, B)
    z_ref = z.detach().clone().requires_grad_()

    loss = relation_kd_loss(z, teacher)
    loss.backward()
    ref = ref_relation_kd_torch(z_ref, teacher)
    ref.backward()

    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=1e-10, atol=1e-12)


def test_relation_kd_is_zero_for_the_same_structure_and_checks_shapes():
    z = rand(4, 6, seed=14)
    assert relation_kd_loss(z, relation_matrix(z * 3.0)).item() == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError):
        relation_kd_loss(z, torch.zeros(3, 3, dtype=torch.float64))


# ---- prototypes (FedProto) ----


def test_prototype_loss_matches_reference_value_and_gradient():
    z = rand(5, 3, seed=15).requires_grad_()
    labels = torch.tensor([0, 2, 1, 2, 0])
    prototypes = rand(3, 3, seed=16)
    present = torch.tensor([True, False, True])  # class 1 has no global prototype

    loss = prototype_loss(z, labels, prototypes, present)
    loss.backward()

    kept = [i for i in range(5) if present[labels[i]]]
    zl, pl = z.detach().tolist(), prototypes.tolist()
    expected = sum((zl[i][d] - pl[labels[i]][d]) ** 2 for i in kept for d in range(3)) / (
        len(kept) * 3
    )
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    grad = torch.zeros(5, 3, dtype=torch.float64)
    for i in kept:  # d/dz_id = 2 (z_id - p_{y_i} d) / (n D); zero for the dropped sample
        grad[i] = 2 * (z.detach()[i] - prototypes[labels[i]]) / (len(kept) * 3)
    torch.testing.assert_close(z.grad, grad, rtol=1e-10, atol=1e-12)


def test_prototype_loss_is_zero_without_known_classes():
    z = rand(3, 2, seed=17).requires_grad_()
    loss = prototype_loss(
        z, torch.tensor([0, 1, 0]), torch.zeros(2, 2), torch.tensor([False, False])
    )
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_class_prototypes_are_per_class_means_with_counts():
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]])
    labels = torch.tensor([0, 0, 2])

    protos, counts = class_prototypes(z, labels, 4)

    assert torch.equal(protos, torch.tensor([[2.0, 3.0], [0.0, 0.0], [10.0, 0.0], [0.0, 0.0]]))
    assert torch.equal(counts, torch.tensor([2, 0, 1, 0]))


# ---- distill_epoch on a tiny learner ----


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of 28x28 images: bright top half or bright bottom half."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 50, (n, 1, 28, 28)).astype(np.uint8)
    for i, label in enumerate(y):
        x[i, 0, label * 14 : label * 14 + 14] += 150
    return x, y


def make_learner(arch: str = "cnn3") -> Learner:
    x, y = blobs(32, seed=1)
    return Learner(
        ModelConfig(arch, num_classes=2),
        x,
        y,
        x[:4],
        y[:4],
        TrainSettings(lr=0.05, batch_size=16, seed=0),
        torch.device("cpu"),
        model_seed=0,
    )


def kl_to_teacher(learner: Learner, ref_x: torch.Tensor, teacher_probs: torch.Tensor) -> float:
    with torch.no_grad():
        learner.model.eval()
        return response_kd_loss(learner.model(ref_x), teacher_probs, 1.0).item()


def test_distill_epoch_moves_the_student_towards_the_teacher():
    torch.manual_seed(0)
    student = make_learner()
    ref_u8, ref_y = blobs(48, seed=3)
    ref_x = student.images(ref_u8)
    # The teacher is confidently wrong on every reference image: only KD can teach that.
    teacher_probs = torch.full((48, 2), 0.05)
    teacher_probs[torch.arange(48), torch.from_numpy(1 - ref_y)] = 0.95
    before = kl_to_teacher(student, ref_x, teacher_probs)

    for _ in range(3):
        stats = distill_epoch(
            student,
            ref_x,
            teacher_probs=teacher_probs,
            teacher_relation=None,
            temperature=1.0,
            kd_weight=1.0,
            feature_weight=0.0,
            batch_size=16,
            generator=torch.Generator().manual_seed(0),
        )

    assert kl_to_teacher(student, ref_x, teacher_probs) < before
    assert set(stats) == {"loss", "ce", "kd", "feature"}
    assert stats["feature"] == 0.0
    assert stats["loss"] == pytest.approx(stats["ce"] + stats["kd"], rel=1e-5)


def test_distill_epoch_matches_a_teacher_relation():
    torch.manual_seed(0)
    student, teacher = make_learner("cnn3"), make_learner("cnn5")
    ref_x = student.images(blobs(32, seed=4)[0])
    with torch.no_grad():
        teacher_relation = relation_matrix(teacher.model.features(ref_x))  # (R, R)

    def gap() -> float:
        with torch.no_grad():
            return relation_kd_loss(student.model.features(ref_x), teacher_relation).item()

    before = gap()
    for _ in range(3):
        stats = distill_epoch(
            student,
            ref_x,
            teacher_probs=None,
            teacher_relation=teacher_relation,
            temperature=1.0,
            kd_weight=0.0,
            feature_weight=10.0,
            batch_size=32,
            generator=torch.Generator().manual_seed(1),
        )

    assert gap() < before
    assert stats["kd"] == 0.0 and stats["feature"] > 0.0


def test_distill_epoch_refuses_teacher_signals_of_the_wrong_size():
    student = make_learner()
    ref_x = student.images(blobs(8, seed=5)[0])
    common = dict(
        temperature=1.0,
        kd_weight=1.0,
        feature_weight=1.0,
        batch_size=4,
        generator=torch.Generator(),
    )
    with pytest.raises(ValueError):
        distill_epoch(
            student, ref_x, teacher_probs=torch.zeros(7, 2), teacher_relation=None, **common
        )
    with pytest.raises(ValueError):
        distill_epoch(
            student, ref_x, teacher_probs=None, teacher_relation=torch.zeros(8, 7), **common
        )


def test_sharpen_keeps_the_argmax_lowers_entropy_and_matches_a_hand_formula():
    from fedp2p.learn.kd import sharpen

    probs = torch.tensor([[0.2, 0.5, 0.3], [0.34, 0.33, 0.33]], dtype=torch.float64)
    sharp = sharpen(probs, 0.5)
    hand = probs**2 / (probs**2).sum(1, keepdim=True)
    torch.testing.assert_close(sharp, hand)
    assert torch.equal(sharp.argmax(1), probs.argmax(1))
    entropy = lambda p: -(p * p.log()).sum(1)  # noqa: E731
    assert (entropy(sharp) < entropy(probs)).all()
    assert torch.equal(sharpen(probs, 1.0), probs)
    with pytest.raises(ValueError):
        sharpen(probs, 0.0)
