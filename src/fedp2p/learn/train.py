"""Training and evaluation steps, deterministic under a seed on CPU."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

EVAL_BATCH = 1000


def pick_device(setting: str = "auto") -> torch.device:
    """`auto` takes a GPU when one is there; `cpu`, `cuda` and `cuda:N` are taken as given."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting.startswith("cuda") and not torch.cuda.is_available():
        from fedp2p.errors import UserError

        raise UserError(
            f"device {setting!r} was asked for but no CUDA GPU is visible; use device=cpu."
        )
    return torch.device(setting)


def configure_threads(threads: int = 0, processes: int = 1) -> int:
    """Share the cores among processes, so many peers on few cores do not oversubscribe."""
    if threads <= 0:
        threads = max(1, (os.cpu_count() or 1) // max(1, processes))
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # may be set only once per process; harmless
        torch.set_num_interop_threads(1)
    return threads


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generator and return a private one for shuffling."""
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def to_float(x: np.ndarray | torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, C, H, W) to normalised float32, per channel."""
    t = (
        torch.from_numpy(np.array(x)) if isinstance(x, np.ndarray) else x
    )  # copy: x may be a read-only memmap
    return (t.float().div_(255.0) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Index batches over n examples; shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def make_optimizer(
    model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4
) -> torch.optim.Optimizer:
    """Plain SGD with momentum: cheap, and well understood under weight averaging."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """One pass of cross-entropy training over (x, y), already on the model's device; mean loss."""
    model.train()
    total = torch.zeros((), device=x.device)  # summed on the device: no per-batch sync
    for idx in batches(len(x), batch_size, generator):
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(idx)
    return float(total) / max(len(x), 1)


@torch.no_grad()
def predict(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    """Logits for every image, in batches, converting uint8 to float on the fly; on the CPU."""
    model.eval()
    out = []
    for start in range(0, len(x), EVAL_BATCH):
        xb = to_float(x[start : start + EVAL_BATCH], mean, std).to(device)
        out.append(model(xb).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def accuracy(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
) -> float:
    """Top-1 accuracy in [0, 1]; nan for an empty set."""
    if len(y) == 0:
        return float("nan")
    logits = predict(model, x, mean, std, device)
    return float((logits.argmax(1) == torch.from_numpy(np.array(y, dtype=np.int64))).float().mean())
