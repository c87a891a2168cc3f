"""Whole classic networks: a training step and inference of each zoo model, pynn against the
same network with every layer reverted to torch.nn (identical weights).

FLOPs per forward were counted once with torch.utils.flop_counter on the torch twin at these
shapes (convolutions and matrix products only). Shapes are small batches so that the full CPU
run stays within minutes; VGG-16 runs on 112x112 inputs for the same reason.
"""
import copy

import torch

import pynn
import pynn.functional as PF
from pynn import models
from ..network import network_cases


def _twin(build):
    def reference(device, dtype):
        ref = copy.deepcopy(build(device, dtype))
        pynn.revert(ref)
        return ref
    return reference


def _classification_batch(shape, classes=10):
    def batch(device, dtype):
        return (torch.randn(shape, device=device, dtype=dtype),
                torch.randint(0, classes, (shape[0],), device=device))
    return batch


def _aux_loss(ce):
    """GoogLeNet trains on its main and both auxiliary logits (weights 1, 0.3, 0.3)."""
    def loss(out, target):
        if isinstance(out, tuple):
            main, aux2, aux1 = out
            return ce(main, target) + 0.3 * (ce(aux1, target) + ce(aux2, target))
        return ce(out, target)
    return loss


# name, builder, input shape, forward GFLOP at that shape, quick
NETWORKS = [
    ("lenet5", lambda: models.lenet5(), (64, 1, 32, 32), 0.0533, True),
    ("alexnet_paper", lambda: models.alexnet_paper(num_classes=10), (8, 3, 224, 224), 18.16, False),
    ("vgg16", lambda: models.vgg16(num_classes=10), (2, 3, 112, 112), 15.84, False),
    ("googlenet", lambda: models.googlenet(num_classes=10, init_weights=False), (4, 3, 224, 224), 11.99, False),
    ("resnet18", lambda: models.resnet18(num_classes=10), (4, 3, 224, 224), 14.51, False),
    ("resnet50", lambda: models.resnet50(num_classes=10), (2, 3, 224, 224), 16.36, False),
]


def cases():
    out = []
    for name, make, shape, gflop, quick in NETWORKS:
        build = lambda device, dtype, make=make: make().to(device=device, dtype=dtype)  # noqa: E731
        loss = (_aux_loss(PF.cross_entropy), _aux_loss(torch.nn.functional.cross_entropy))
        out += network_cases(name, "x".join(map(str, shape)), build=build, reference=_twin(build),
                             batch=_classification_batch(shape), loss=loss,
                             flops_forward=gflop * 1e9, quick=quick)
    # The LSTM forecaster of the pipeline: 2 layers of 64 over windows of 32 steps.
    lstm = lambda device, dtype: models.LSTMRegressor(1, 64, 2).to(device=device, dtype=dtype)  # noqa: E731
    out += network_cases(
        "lstm_regressor", "64x32x1-h64-l2", build=lstm, reference=_twin(lstm),
        batch=lambda device, dtype: (torch.randn(64, 32, 1, device=device, dtype=dtype),
                                     torch.randn(64, 1, device=device, dtype=dtype)),
        loss="mse_loss",
        # per step and layer: 4 gates x (input + hidden) x hidden x 2 FLOPs per batch row
        flops_forward=2.0 * 64 * 32 * 4 * 64 * ((1 + 64) + (64 + 64)), quick=True)
    return out
