"""LeNet-5 (LeCun et al., 1998) as the classic description has it: two convolution layers with
pooling, then three fully connected layers, on 32x32 inputs."""
from __future__ import annotations

import torch

from .. import nn

_ACTIVATIONS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}


class LeNet5(torch.nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, activation: str = "tanh",
                 pooling: str = "avg"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"lenet5: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if pooling not in ("avg", "max"):
            raise ValueError(f"lenet5: pooling must be 'avg' or 'max', got {pooling!r}")
        act = _ACTIVATIONS[activation]
        pool = (lambda: nn.AvgPool2d(2, 2)) if pooling == "avg" else (lambda: nn.MaxPool2d(2, 2))
        self.features = torch.nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), act(), pool(),   # 32 -> 28 -> 14
            nn.Conv2d(6, 16, 5), act(), pool(),            # 14 -> 10 -> 5
        )
        self.classifier = torch.nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), act(),
            nn.Linear(120, 84), act(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        if x.shape[-2:] != (32, 32):
            raise ValueError(f"LeNet5 expects 32x32 inputs, got {tuple(x.shape[-2:])}")
        return self.classifier(self.features(x))


def lenet5(num_classes: int = 10, in_channels: int = 1, activation: str = "tanh",
           pooling: str = "avg") -> LeNet5:
    """LeNet-5: tanh (or sigmoid) with average pooling as published; activation="relu" with
    pooling="max" gives the modern variant."""
    return LeNet5(num_classes, in_channels, activation, pooling)
