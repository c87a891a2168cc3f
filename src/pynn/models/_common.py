"""Shared by the torchvision-compatible constructors."""
from __future__ import annotations

import torch


def check_weights(weights, name: str) -> None:
    """We ship and download no pretrained weights: `weights` is accepted as None only.

    Load a torchvision checkpoint instead with model.load_state_dict(torch.load(path)).
    """
    if weights is not None:
        raise ValueError(
            f"{name}: pretrained weights are not downloaded by pynn (weights={weights!r}); "
            "pass weights=None and load a torchvision state_dict with model.load_state_dict()"
        )


def init_conv_bn_linear(model: torch.nn.Module, linear_std: float | None = None) -> None:
    """He-normal (fan_out) convolutions, unit/zero BatchNorm, and N(0, linear_std) or default
    Linear layers: the initialisation torchvision's VGG and ResNet use."""
    from .. import nn

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, torch.nn.Conv2d)):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, torch.nn.BatchNorm2d)):
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)
        elif linear_std is not None and isinstance(m, (nn.Linear, torch.nn.Linear)):
            torch.nn.init.normal_(m.weight, 0.0, linear_std)
            torch.nn.init.zeros_(m.bias)
