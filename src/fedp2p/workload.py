"""What every client holds, derived from the config alone, so every peer process derives the same."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from fedp2p.config import RunConfig
from fedp2p.learn.datasets import ImageDataset, load_dataset
from fedp2p.learn.learner import Learner, TrainSettings
from fedp2p.learn.models import ModelConfig
from fedp2p.learn.shards import Partition, dirichlet_partition

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workload:
    """The data set, its shards, and the per-round evaluation subset of the global test set."""

    config: RunConfig
    dataset: ImageDataset
    partition: Partition
    eval_idx: np.ndarray  # indices into the test set used for intermediate rounds

    def model_config(self, arch: str) -> ModelConfig:
        """The model shape an architecture takes on this data set."""
        return ModelConfig(
            arch=arch,
            in_channels=self.dataset.in_channels,
            image_size=self.dataset.image_size,
            num_classes=self.dataset.num_classes,
        )

    def settings(self, seed: int) -> TrainSettings:
        """Optimiser settings from the config, with a per-client seed."""
        c = self.config
        return TrainSettings(c.lr, c.momentum, c.weight_decay, c.batch_size, seed)

    def global_test(self, final: bool) -> tuple[np.ndarray, np.ndarray]:
        """The full test set for the final round, the fixed subset otherwise (to save time)."""
        if final:
            return self.dataset.test_x, self.dataset.test_y
        return self.dataset.test_x[self.eval_idx], self.dataset.test_y[self.eval_idx]

    def reference_images(self) -> np.ndarray:
        """The reference set's images (never its labels), shared by every peer for KD."""
        return np.asarray(self.dataset.train_x[self.partition.reference_idx])

    def learner(self, client: int, device: torch.device) -> Learner:
        """Client `client`'s learner: its architecture, its shard, its seed."""
        shard = self.partition.shards[client]
        x, y = self.dataset.train_x, self.dataset.train_y
        seed = self.config.seed * 1000 + client
        return Learner(
            self.model_config(self.config.arch_of(client)),
            x[shard.train_idx],
            y[shard.train_idx],
            x[shard.test_idx],
            y[shard.test_idx],
            self.settings(seed),
            device,
            model_seed=self.model_seed(client),
        )

    def model_seed(self, client: int) -> int:
        """Peers of one architecture start from the same weights, as decentralized averaging expects."""
        return self.config.seed * 1000 + self.config.archs.index(self.config.arch_of(client))


def prepare(config: RunConfig) -> Workload:
    """Load the data set and deal the shards; deterministic in the config."""
    dataset = load_dataset(config.dataset, config.data_dir or None)
    partition = dirichlet_partition(
        dataset.train_y,
        config.clients,
        config.alpha,
        config.seed,
        min_size=config.min_shard,
        reference_size=config.reference_size,
        local_test_fraction=config.local_test_fraction,
        num_classes=dataset.num_classes,
    )
    rng = np.random.default_rng(config.seed + 1)
    n_test = len(dataset.test_y)
    eval_idx = np.sort(rng.permutation(n_test)[: min(config.eval_subset, n_test)])
    return Workload(config, dataset, partition, eval_idx)
