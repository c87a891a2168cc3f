"""A generic conv -> pool -> ... -> fully connected network described by a list."""
from __future__ import annotations

from typing import Sequence

import torch

from .. import nn

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU}


class CNN(torch.nn.Module):
    """Layers from a list of strings or tuples:

    - ``("conv", out_channels, kernel_size[, stride[, padding]])`` or an int ``out_channels``
      (3x3, padding 1), each followed by ``activation`` (and BatchNorm2d when ``batch_norm``);
    - ``"M"`` / ``("max", k[, s])``: max pooling (default 2x2), ``("avg", k[, s])``: average pooling;
    - ``("lrn", size)``: local response normalisation; ``("dropout", p)``: dropout.

    The features are flattened (global average pooled first when ``global_pool``) and fed to
    fully connected layers of widths ``hidden`` and then ``num_classes`` outputs.

        CNN(in_channels=1, layers=[16, "M", 32, "M"], hidden=[64], num_classes=10, input_size=28)
    """

    def __init__(self, in_channels: int, layers: Sequence, num_classes: int,
                 hidden: Sequence[int] = (), input_size: int | tuple[int, int] = 32,
                 activation: str = "relu", batch_norm: bool = False, dropout: float = 0.0,
                 global_pool: bool = False):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"CNN: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        act = _ACTIVATIONS[activation]
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        c = in_channels
        feats = []
        for spec in layers:
            if isinstance(spec, int):
                spec = ("conv", spec, 3, 1, 1)
            if spec == "M":
                spec = ("max", 2)
            kind, *args = spec
            if kind == "conv":
                # ("conv", out[, kernel=3[, stride=1[, padding=0]]])
                out, k, s, p = list(args) + [3, 1, 0][len(args) - 1:]
                feats += [nn.Conv2d(c, out, k, s, p)]
                if batch_norm:
                    feats.append(nn.BatchNorm2d(out))
                feats.append(act())
                c, h, w = out, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            elif kind in ("max", "avg"):
                k = args[0]
                s = args[1] if len(args) > 1 else k
                feats.append(nn.MaxPool2d(k, s) if kind == "max" else nn.AvgPool2d(k, s))
                h, w = (h - k) // s + 1, (w - k) // s + 1
            elif kind == "lrn":
                feats.append(nn.LocalResponseNorm(args[0]))
            elif kind == "dropout":
                feats.append(nn.Dropout(args[0]))
            else:
                raise ValueError(f"CNN: unknown layer spec {spec!r}")
            if h <= 0 or w <= 0:
                raise ValueError(f"CNN: the input of size {input_size} shrinks to nothing at {spec!r}")
        self.features = torch.nn.Sequential(*feats)
        head = []
        if global_pool:
            head.append(nn.AdaptiveAvgPool2d(1))
            h = w = 1
        head.append(nn.Flatten())
        width = c * h * w
        for hdim in hidden:
            head += [nn.Linear(width, hdim), act()]
            if dropout:
                head.append(nn.Dropout(dropout))
            width = hdim
        head.append(nn.Linear(width, num_classes))
        self.classifier = torch.nn.Sequential(*head)
        self.input_size = None if global_pool else (
            (input_size, input_size) if isinstance(input_size, int) else tuple(input_size))

    def forward(self, x):
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"CNN was built for {self.input_size[0]}x{self.input_size[1]} inputs "
                             f"(input_size), got {tuple(x.shape[-2:])}; pass global_pool=True "
                             "for any size")
        return self.classifier(self.features(x))
