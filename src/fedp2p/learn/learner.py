"""One client's learning state: its model, optimizer and private data, with nothing about the network."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from fedp2p.learn.models import ConvNet, ModelConfig, build_model
from fedp2p.learn.train import accuracy, make_optimizer, predict, to_float, train_epoch

log = logging.getLogger(__name__)

# Inputs are scaled to [-1, 1] with constants, not data statistics, so no peer reveals its own.
NORM_MEAN = 0.5
NORM_STD = 0.5


@dataclass(frozen=True)
class TrainSettings:
    """The optimisation settings a learner needs, taken from the run config."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 32
    seed: int = 0


@dataclass(frozen=True)
class Evaluation:
    """Accuracy on the global test set (or its per-round subset) and on the local test split."""

    global_acc: float
    local_acc: float
    global_size: int


class Learner:
    """A model learning from one private set of images."""

    def __init__(
        self,
        model_config: ModelConfig,
        train_x: np.ndarray,
        train_y: np.ndarray,
        test_x: np.ndarray,
        test_y: np.ndarray,
        settings: TrainSettings,
        device: torch.device,
        model_seed: int,
    ) -> None:
        self.model_config = model_config
        self.settings = settings
        self.device = device
        channels = model_config.in_channels
        self.mean = torch.full((channels,), NORM_MEAN)
        self.std = torch.full((channels,), NORM_STD)
        self.model: ConvNet = build_model(model_config, seed=model_seed).to(device)
        self.optimizer = make_optimizer(
            self.model, settings.lr, settings.momentum, settings.weight_decay
        )
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.train_x = to_float(np.asarray(train_x), self.mean, self.std).to(device)
        self.train_y = torch.from_numpy(np.array(train_y, dtype=np.int64)).to(device)
        self.test_x = np.asarray(test_x)
        self.test_y = np.asarray(test_y)

    @property
    def num_train(self) -> int:
        """How many private training images this learner holds (the weight of its update)."""
        return len(self.train_y)

    def train(self, epochs: int = 1) -> float:
        """Local epochs of cross-entropy on the private data; mean loss of the last one."""
        loss = float("nan")
        for _ in range(epochs):
            loss = train_epoch(
                self.model,
                self.optimizer,
                self.train_x,
                self.train_y,
                self.settings.batch_size,
                self.generator,
            )
        return loss

    def images(self, x: np.ndarray) -> torch.Tensor:
        """Normalised float images on this learner's device, e.g. the shared reference set."""
        return to_float(np.asarray(x), self.mean, self.std).to(self.device)

    def logits(self, x: np.ndarray) -> torch.Tensor:
        """Logits for uint8 images, on the CPU."""
        return predict(self.model, x, self.mean, self.std, self.device)

    def evaluate(self, global_x: np.ndarray, global_y: np.ndarray) -> Evaluation:
        """Accuracy on the given global test images and on the private local test split."""
        g = accuracy(self.model, global_x, global_y, self.mean, self.std, self.device)
        loc = accuracy(self.model, self.test_x, self.test_y, self.mean, self.std, self.device)
        return Evaluation(global_acc=g, local_acc=loc, global_size=len(global_y))
