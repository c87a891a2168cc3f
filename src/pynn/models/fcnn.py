"""FCNN: a fully connected network, Linear -> activation [-> Dropout] per hidden layer."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


class FCNN(torch.nn.Module):
    """in_features -> hidden_sizes[0] -> ... -> out_features.

    Each hidden layer is pynn.nn.Linear, the activation (one of ACTIVATIONS) and, when
    dropout > 0, pynn.nn.Dropout(dropout). The output layer is a bare Linear (logits or raw
    regression values). Layers live in `self.layers` (a Sequential, which only sequences
    them), so state_dict keys read layers.0.weight, layers.0.bias, ...
    """

    def __init__(self, in_features: int, hidden_sizes: Sequence[int], out_features: int,
                 activation: str = "relu", dropout: float = 0.0, device=None, dtype=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"FCNN: activation must be one of {sorted(ACTIVATIONS)}, "
                             f"got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"FCNN: dropout must be in [0, 1), got {dropout}")
        sizes = [int(in_features), *map(int, hidden_sizes), int(out_features)]
        if any(s <= 0 for s in sizes):
            raise ValueError(f"FCNN: layer sizes must be positive, got {sizes}")
        factory = {"device": device, "dtype": dtype}
        layers: list[torch.nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
            layers += [nn.Linear(fan_in, fan_out, **factory), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(sizes[-2], sizes[-1], **factory))
        self.layers = torch.nn.Sequential(*layers)
        self.in_features, self.out_features = sizes[0], sizes[-1]
        self.hidden_sizes = tuple(sizes[1:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
