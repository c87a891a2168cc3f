"""Checks pynn's zoo against torchvision itself (run where torchvision is installed; CI is not).

For each model: build torchvision's, save its state_dict to a file as a checkpoint would be, load
that file into pynn's model with strict=True, then compare outputs and every gradient in float64,
in eval mode and in training mode (BatchNorm on batch statistics; dropout set to 0 so both sides
compute the same function).

    python tools/check_torchvision.py
"""
import sys
import tempfile
from pathlib import Path

import torch
import torchvision

import pynn

CASES = [
    ("alexnet", dict(dropout=0.0), (2, 3, 96, 96)),
    ("vgg11_bn", dict(dropout=0.0), (2, 3, 64, 64)),
    ("vgg16", dict(dropout=0.0), (1, 3, 64, 64)),
    ("googlenet", dict(dropout=0.0, dropout_aux=0.0, init_weights=True), (2, 3, 96, 96)),
    ("resnet18", dict(), (2, 3, 64, 64)),
    ("resnet50", dict(zero_init_residual=False), (2, 3, 64, 64)),
    ("resnet101", dict(), (1, 3, 64, 64)),
]


def flat(out):
    return torch.cat([t.flatten() for t in out]) if isinstance(out, tuple) else out


def main() -> int:
    torch.manual_seed(0)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, kwargs, shape in CASES:
            tv = getattr(torchvision.models, name)(weights=None, **kwargs).double()
            path = Path(tmp) / f"{name}.pth"
            torch.save(tv.state_dict(), path)
            ours = getattr(pynn.models, name)(weights=None, **kwargs).double()
            ours.load_state_dict(torch.load(path, weights_only=True), strict=True)
            for train in (False, True):
                tv.train(train)
                ours.train(train)
                x = torch.randn(shape, dtype=torch.float64)
                xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
                ya, yb = flat(ours(xa)), flat(tv(xb))
                g = torch.randn_like(yb)
                ya.backward(g)
                yb.backward(g)
                grads = [(pa.grad, pb.grad) for pa, pb in zip(ours.parameters(), tv.parameters())]
                if any((a is None) != (b is None) for a, b in grads):
                    raise AssertionError(f"{name}: a parameter has a gradient on one side only")
                pairs = [(ya, yb), (xa.grad, xb.grad)] + [(a, b) for a, b in grads if a is not None]
                # each tensor against its own scale: |diff| <= 1e-9 * max|torchvision| + 1e-10 (the
                # absolute floor covers gradients that are zero in exact arithmetic, such as a
                # convolution bias followed by BatchNorm in training)
                worst = max(((a - b).abs().max() / (1e-9 * b.abs().max() + 1e-10)).item()
                            for a, b in pairs)
                ok = worst <= 1.0
                failures += not ok
                print(f"{name:10s} {'train' if train else 'eval ':5s} largest difference over the "
                      f"output and every gradient: {worst:.2g} of the tolerance {'ok' if ok else 'MISMATCH'}")
                tv.zero_grad()
                ours.zero_grad()
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
