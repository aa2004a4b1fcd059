"""Plots a person would rather look at than read: shard heatmap, accuracy curves, algorithm comparison."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a screen
import matplotlib.pyplot as plt
import numpy as np

from fedp2p.results import ClientRound

log = logging.getLogger(__name__)


def shard_heatmap(
    counts: np.ndarray, classes: Sequence[str], archs: Sequence[str], path: Path
) -> Path:
    """Clients x classes heatmap of example counts: how non-IID the shards are at a glance."""
    n_clients, n_classes = counts.shape
    fig, ax = plt.subplots(
        figsize=(max(6.0, 0.6 * n_classes + 3), max(4.0, 0.28 * n_clients + 1.5))
    )
    im = ax.imshow(counts, aspect="auto", cmap="viridis", norm=matplotlib.colors.PowerNorm(0.5))
    ax.set_xticks(range(n_classes), [str(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(n_clients), [f"{i} {archs[i]}" for i in range(n_clients)], fontsize=7)
    ax.set_xlabel("class")
    ax.set_ylabel("client (architecture)")
    ax.set_title(f"Examples per client and class ({counts.sum()} in {n_clients} shards)")
    fig.colorbar(im, ax=ax, label="examples")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _curves(records: Sequence[ClientRound]) -> dict[str, dict[int, list[float]]]:
    """Arch -> round -> global accuracies of that arch's clients."""
    out: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if math.isfinite(r.global_acc):
            out[r.arch][r.round].append(r.global_acc)
    return out


def accuracy_curves(records: Sequence[ClientRound], title: str, path: Path) -> Path:
    """Global test accuracy against round, one panel per architecture: mean line, min-max band."""
    curves = _curves(records)
    archs = sorted(curves)
    fig, axes = plt.subplots(
        1, max(1, len(archs)), figsize=(4.2 * max(1, len(archs)), 3.6), sharey=True
    )
    axes = np.atleast_1d(axes)
    for ax, arch in zip(axes, archs, strict=False):
        rounds = sorted(curves[arch])
        vals = [curves[arch][r] for r in rounds]
        mean = [100 * float(np.mean(v)) for v in vals]
        ax.fill_between(
            rounds, [100 * min(v) for v in vals], [100 * max(v) for v in vals], alpha=0.25
        )
        ax.plot(rounds, mean, marker="o", markersize=3)
        ax.set_title(f"{arch} ({len(vals[-1]) if vals else 0} clients)")
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("global test accuracy (%)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def compare_algorithms(
    runs: Mapping[str, Sequence[ClientRound]], summaries: Sequence[Mapping[str, Any]], path: Path
) -> Path:
    """Mean global accuracy per round for every algorithm, and final accuracy per architecture."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for algo, records in runs.items():
        by_round: dict[int, list[float]] = defaultdict(list)
        for r in records:
            if math.isfinite(r.global_acc):
                by_round[r.round].append(r.global_acc)
        rounds = sorted(by_round)
        left.plot(
            rounds,
            [100 * float(np.mean(by_round[r])) for r in rounds],
            marker="o",
            markersize=3,
            label=algo,
        )
    left.set_xlabel("round")
    left.set_ylabel("mean global test accuracy (%)")
    left.set_title("Accuracy over rounds")
    left.grid(alpha=0.3)
    left.legend()
    archs = sorted({a for s in summaries for a in s["per_arch"]})
    width = 0.8 / max(1, len(summaries))
    for i, s in enumerate(summaries):
        vals = [
            100 * (s["per_arch"].get(a, {}).get("global_acc", {}).get("mean") or 0.0) for a in archs
        ]
        vals.append(100 * (s["global_acc"]["mean"] or 0.0))
        right.bar(np.arange(len(archs) + 1) + i * width, vals, width, label=s["algorithm"])
    right.set_xticks(np.arange(len(archs) + 1) + width * (len(summaries) - 1) / 2, [*archs, "all"])
    right.set_ylabel("final mean global accuracy (%)")
    right.set_title("Final accuracy by architecture")
    right.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
