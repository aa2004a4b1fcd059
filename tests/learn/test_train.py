import numpy as np
import torch

from fedp2p.learn.learner import Learner, TrainSettings
from fedp2p.learn.models import ModelConfig
from fedp2p.learn.train import configure_threads, pick_device


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of 28x28 images: bright top half or bright bottom half."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 50, (n, 1, 28, 28)).astype(np.uint8)
    for i, label in enumerate(y):
        x[i, 0, label * 14 : label * 14 + 14] += 150
    return x, y


def make_learner(seed: int = 0) -> Learner:
    x, y = blobs(96, seed=1)
    tx, ty = blobs(32, seed=2)
    config = ModelConfig("cnn3", num_classes=2)
    return Learner(
        config,
        x,
        y,
        tx,
        ty,
        TrainSettings(lr=0.05, batch_size=16, seed=seed),
        torch.device("cpu"),
        model_seed=0,
    )


def test_training_learns_a_learnable_task():
    learner = make_learner()
    gx, gy = blobs(64, seed=3)
    before = learner.evaluate(gx, gy)
    losses = [learner.train() for _ in range(3)]
    after = learner.evaluate(gx, gy)
    assert losses[-1] < losses[0]
    assert (
        after.global_acc >= 0.95 > before.global_acc or after.global_acc > before.global_acc + 0.3
    )
    assert after.local_acc >= 0.9
    assert after.global_size == 64


def test_training_is_deterministic_under_a_seed():
    a, b = make_learner(), make_learner()
    a.train(2)
    b.train(2)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    c = make_learner(seed=5)  # another shuffling order gives other weights
    c.train(2)
    assert not all(
        torch.equal(pa, pc)
        for pa, pc in zip(a.model.parameters(), c.model.parameters(), strict=True)
    )


def test_threads_are_shared_among_processes():
    assert configure_threads(0, processes=1000) == 1
    assert torch.get_num_threads() == 1
    assert configure_threads(3) == 3
    configure_threads(1)


def test_auto_device_is_cpu_without_a_gpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected
    assert pick_device("cpu").type == "cpu"
