"""Non-IID shards: a seeded Dirichlet(alpha) split over labels, plus a label-free reference set.

Small alpha gives each client a few classes; large alpha approaches an even split.
The reference set is held out from every shard: knowledge distillation runs on its
images, and no collaboration algorithm ever sees its labels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fedp2p.errors import UserError

log = logging.getLogger(__name__)

MAX_DRAWS = 1000


@dataclass(frozen=True)
class Shard:
    """One client's private data: indices into the official training set."""

    client: int
    train_idx: np.ndarray  # (n_train,) int64
    test_idx: np.ndarray  # (n_test,) int64, the client's local (personalised) test split

    @property
    def size(self) -> int:
        """All of the client's examples, train and local test."""
        return len(self.train_idx) + len(self.test_idx)


@dataclass(frozen=True)
class Partition:
    """Every client's shard and the reference set, all disjoint."""

    shards: tuple[Shard, ...]
    reference_idx: np.ndarray  # (reference_size,) int64
    num_classes: int

    def label_counts(self, labels: np.ndarray) -> np.ndarray:
        """Clients x classes matrix of example counts (train and local test together)."""
        counts = np.zeros((len(self.shards), self.num_classes), dtype=np.int64)
        for shard in self.shards:
            idx = np.concatenate([shard.train_idx, shard.test_idx])
            counts[shard.client] = np.bincount(labels[idx], minlength=self.num_classes)
        return counts


def _dirichlet_split(
    labels: np.ndarray,
    pool: np.ndarray,
    clients: int,
    alpha: float,
    num_classes: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """One draw of the classic per-class Dirichlet split, capping clients at an equal share."""
    parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
    sizes = np.zeros(clients, dtype=np.int64)
    cap = len(pool) / clients
    for k in range(num_classes):
        idx = pool[labels[pool] == k]
        rng.shuffle(idx)
        p = rng.dirichlet(np.full(clients, alpha))
        p = p * (sizes < cap)  # clients already holding their share take no more
        total = p.sum()
        p = p / total if total > 0 else np.full(clients, 1.0 / clients)
        cuts = (np.cumsum(p) * len(idx)).astype(np.int64)[:-1]
        for client, chunk in enumerate(np.split(idx, cuts)):
            parts[client].append(chunk)
            sizes[client] += len(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def dirichlet_partition(
    labels: np.ndarray,
    clients: int,
    alpha: float,
    seed: int,
    *,
    min_size: int = 50,
    reference_size: int = 2000,
    local_test_fraction: float = 0.2,
    num_classes: int | None = None,
) -> Partition:
    """Split the training labels into clients' shards and a reference set; same seed, same split."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    num_classes = num_classes or int(labels.max()) + 1
    if reference_size + clients * min_size > n:
        raise UserError(
            f"{n} training examples cannot give {clients} clients {min_size} each plus a "
            f"reference set of {reference_size}; lower clients, min_shard or reference_size."
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    reference_idx = np.sort(order[:reference_size])
    pool = np.sort(order[reference_size:])
    for draw in range(MAX_DRAWS):  # noqa: B007 - logged after the loop
        parts = _dirichlet_split(labels, pool, clients, alpha, num_classes, rng)
        if min(len(p) for p in parts) >= min_size:
            break
    else:
        raise UserError(
            f"no Dirichlet({alpha}) split in {MAX_DRAWS} draws gave every one of {clients} "
            f"clients {min_size} examples; raise alpha or lower min_shard or clients."
        )
    log.debug("dirichlet split accepted after %d draws", draw + 1)
    shards = []
    for client, idx in enumerate(parts):
        idx = rng.permutation(idx)
        n_test = min(round(len(idx) * local_test_fraction), len(idx) - 1)
        shards.append(
            Shard(client, train_idx=np.sort(idx[n_test:]), test_idx=np.sort(idx[:n_test]))
        )
    return Partition(tuple(shards), reference_idx, num_classes=num_classes)
