"""Images per second of fedp2p's training step for CNN3/5/7, against a bare PyTorch loop on the same tensors.

Run: .venv/bin/python benchmarks/train_throughput.py [--data-dir ../shared/data] [--images 2048] [--repeats 5]
Prints a table and the ratio ours / bare; target 0.95 or better. Both loops run in this
process, interleaved, so machine noise hits both alike; the median of the repeats is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from fedp2p.learn.learner import Learner, TrainSettings
from fedp2p.learn.models import ModelConfig, build_model
from fedp2p.learn.train import configure_threads


def synthetic(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


def real(data_dir: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    from fedp2p.learn.datasets import load_dataset

    ds = load_dataset("mnist", data_dir)
    return np.array(ds.train_x[:n]), np.array(ds.train_y[:n])


def bare_epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    bs: int,
    g: torch.Generator,
) -> None:
    """The textbook loop: shuffle, slice, forward, loss, backward, step."""
    model.train()
    perm = torch.randperm(len(x), generator=g)
    for i in range(0, len(x), bs):
        idx = perm[i : i + bs]
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    configure_threads(args.threads)
    x, y = real(args.data_dir, args.images) if args.data_dir else synthetic(args.images)
    print(
        f"{len(x)} MNIST-sized images, batch {args.batch_size}, {torch.get_num_threads()} thread(s), {args.repeats} repeats"
    )
    print(f"{'arch':6} {'fedp2p img/s':>13} {'bare img/s':>11} {'ratio':>6}")
    ratios = []
    for arch in ("cnn3", "cnn5", "cnn7"):
        settings = TrainSettings(batch_size=args.batch_size, seed=0)
        learner = Learner(
            ModelConfig(arch), x, y, x[:0], y[:0], settings, torch.device("cpu"), model_seed=0
        )
        bare = build_model(ModelConfig(arch), seed=0)
        bare_opt = torch.optim.SGD(bare.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        bx, by, g = (
            learner.train_x.clone(),
            learner.train_y.clone(),
            torch.Generator().manual_seed(0),
        )
        learner.train(1)  # warm-up both
        bare_epoch(bare, bare_opt, bx, by, args.batch_size, g)
        ours, theirs = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            learner.train(1)
            ours.append(len(x) / (time.perf_counter() - t))
            t = time.perf_counter()
            bare_epoch(bare, bare_opt, bx, by, args.batch_size, g)
            theirs.append(len(x) / (time.perf_counter() - t))
        o, b = statistics.median(ours), statistics.median(theirs)
        ratios.append(o / b)
        print(f"{arch:6} {o:13.0f} {b:11.0f} {o / b:6.2f}")
    print(f"min ratio {min(ratios):.2f} (target >= 0.95)")


if __name__ == "__main__":
    main()
