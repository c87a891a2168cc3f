"""Whole networks: a training step and inference, pynn's layers against torch.nn's.

Each network appears only once the pieces it needs exist in pynn (layers, loss, model zoo), so
this file can sit ahead of them without producing error rows.
"""
import torch

import pynn
import pynn.functional as PF
from ..network import network_cases


def _has(module, *names):
    return all(hasattr(module, n) for n in names)


def _mlp(layers, sizes, device, dtype):
    mods = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(layers.Linear(a, b, device=device, dtype=dtype))
        if i < len(sizes) - 2:
            mods.append(layers.ReLU())
    return torch.nn.Sequential(*mods)


def _mlp_cases():
    """A plain MLP regressor assembled from pynn.nn layers (the shape of the FCNN models)."""
    if not (_has(pynn.nn, "Linear", "ReLU") and _has(PF, "mse_loss")):
        return []
    out = []
    for sizes, n, quick in [((64, 256, 256, 1), 256, True), ((512, 1024, 1024, 10), 1024, False)]:
        def batch(device, dtype, n=n, sizes=sizes):
            return (torch.randn(n, sizes[0], device=device, dtype=dtype),
                    torch.randn(n, sizes[-1], device=device, dtype=dtype))

        flops = 2.0 * n * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
        out += network_cases(
            "mlp", "x".join(map(str, sizes)) + f"-b{n}",
            build=lambda device, dtype, sizes=sizes: _mlp(pynn.nn, sizes, device, dtype),
            reference=lambda device, dtype, sizes=sizes: _mlp(torch.nn, sizes, device, dtype),
            batch=batch, loss="mse_loss", flops_forward=flops, quick=quick)
    return out


def cases():
    return _mlp_cases()
