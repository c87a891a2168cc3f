"""Whole networks: a training step and inference, pynn's models against torch.nn twins.

A network appears only once everything it needs exists in pynn (the model, the loss), so this
file can sit ahead of the model zoo without producing error rows.
"""
import torch

import pynn.functional as PF
from ..network import network_cases

try:
    from pynn.models import FCNN
except ImportError:  # the model zoo is not merged yet
    FCNN = None


class _TorchFCNN(torch.nn.Module):
    """FCNN's layout from torch.nn layers: same state_dict keys (layers.0.weight, ...)."""

    def __init__(self, sizes, device=None, dtype=None):
        super().__init__()
        layers = []
        for a, b in zip(sizes[:-2], sizes[1:-1]):
            layers += [torch.nn.Linear(a, b, device=device, dtype=dtype), torch.nn.ReLU()]
        layers.append(torch.nn.Linear(sizes[-2], sizes[-1], device=device, dtype=dtype))
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def _fcnn_cases():
    if FCNN is None or not hasattr(PF, "mse_loss"):
        return []
    out = []
    # The bundled-diabetes regressor's shape (quick), and a wide one where the GEMMs dominate.
    for sizes, n, quick in [((10, 64, 64, 1), 256, True), ((512, 1024, 1024, 10), 1024, False)]:
        layers = list(zip(sizes[:-1], sizes[1:]))

        def batch(device, dtype, n=n, sizes=sizes):
            return (torch.randn(n, sizes[0], device=device, dtype=dtype),
                    torch.randn(n, sizes[-1], device=device, dtype=dtype))

        out += network_cases(
            "fcnn", "x".join(map(str, sizes)) + f"-b{n}",
            build=lambda device, dtype, s=sizes: FCNN(s[0], s[1:-1], s[-1], device=device,
                                                      dtype=dtype),
            reference=lambda device, dtype, s=sizes: _TorchFCNN(s, device, dtype),
            batch=batch, loss="mse_loss",
            flops_forward=2.0 * n * sum(a * b for a, b in layers),
            # least traffic of a forward pass: weights and biases, the input and the output
            bytes_inference=4.0 * (sum(a * b + b for a, b in layers) + n * (sizes[0] + sizes[-1])),
            quick=quick)
    return out


def cases():
    return _fcnn_cases()
