"""CNN3, CNN5 and CNN7: three depths of one design, with an embedding of the same width for all.

Feature-based knowledge distillation compares peers' embeddings, so every model ends its
`features(x)` in a vector of `ModelConfig.embed_dim` whatever its depth; the classifier head
is one linear layer on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

# Channels of each convolution; a 2x2 max-pool follows the layers listed in POOL_AFTER.
CHANNELS: dict[str, tuple[int, ...]] = {
    "cnn3": (16, 32, 64),
    "cnn5": (16, 32, 32, 64, 64),
    "cnn7": (16, 32, 32, 64, 64, 64, 64),
}
POOL_AFTER: dict[str, tuple[int, ...]] = {
    "cnn3": (0, 1, 2),
    "cnn5": (0, 2, 4),
    "cnn7": (0, 2, 5),
}


@dataclass(frozen=True)
class ModelConfig:
    """What a model needs to know about its inputs and outputs."""

    arch: str = "cnn3"
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    embed_dim: int = 128


class ConvNet(nn.Module):
    """A plain VGG-style stack: conv3x3 + ReLU, 2x2 max-pool after some layers, then an embedding."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.arch not in CHANNELS:
            raise ValueError(f"unknown arch {config.arch!r}; choose from {sorted(CHANNELS)}")
        self.config = config
        layers: list[nn.Module] = []
        channels, size = config.in_channels, config.image_size
        for i, out in enumerate(CHANNELS[config.arch]):
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            if i in POOL_AFTER[config.arch]:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            channels = out
        self.conv = nn.Sequential(*layers)
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * size * size, config.embed_dim), nn.ReLU(inplace=True)
        )
        self.head = nn.Linear(config.embed_dim, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation: with PyTorch's default, the 5- and 7-layer plain stacks barely train."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The shared-width embedding that feature-based KD compares across architectures."""
        x = self.conv(x)  # (B, C, H', W')
        return self.embed(x)  # (B, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images (B, C, H, W) -> (B, num_classes)."""
        return self.head(self.features(x))

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding and logits in one pass, for losses that need both."""
        z = self.features(x)
        return z, self.head(z)


def build_model(config: ModelConfig, seed: int | None = None) -> ConvNet:
    """A fresh model; with a seed, the same weights every time on every machine."""
    if seed is None:
        return ConvNet(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConvNet(config)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameter count, as shown in the README."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
