import torch
import torch.nn.functional as TF

import pynn.functional as F
from ..case import Case


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _pair(ours, ref, shape, backward, channels_last=False):
    def make(device, dtype):
        x = torch.randn(shape, device=device, dtype=dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(backward)
        if not backward:
            return (lambda: ours(x)), (lambda: ref(x))
        g = torch.randn_like(ref(x.detach()))

        def run(fn):
            return lambda: fn(x).backward(g)
        return run(ours), run(ref)
    return make


def cases():
    out = []
    specs = [
        # (group, name, shape, ours, ref, out elements per input element, quick, channels_last)
        ("max_pool2d", "3x3s2 32x96x55x55", (32, 96, 55, 55),
         lambda x: F.max_pool2d(x, 3, 2), lambda x: TF.max_pool2d(x, 3, 2), 729 / 3025, True, False),
        ("max_pool2d", "3x3s2p1 resnet 32x64x112x112", (32, 64, 112, 112),
         lambda x: F.max_pool2d(x, 3, 2, 1), lambda x: TF.max_pool2d(x, 3, 2, 1), 0.25, False, False),
        ("max_pool2d", "3x3s2 channels_last 32x96x55x55", (32, 96, 55, 55),
         lambda x: F.max_pool2d(x, 3, 2), lambda x: TF.max_pool2d(x, 3, 2), 729 / 3025, False, True),
        ("max_pool2d", "2x2s2 32x64x56x56", (32, 64, 56, 56),
         lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2), 0.25, False, False),
        ("avg_pool2d", "3x3s2 32x96x55x55", (32, 96, 55, 55),
         lambda x: F.avg_pool2d(x, 3, 2), lambda x: TF.avg_pool2d(x, 3, 2), 729 / 3025, True, False),
        ("avg_pool2d", "3x3s2p1 32x64x112x112", (32, 64, 112, 112),
         lambda x: F.avg_pool2d(x, 3, 2, 1), lambda x: TF.avg_pool2d(x, 3, 2, 1), 0.25, False, False),
        ("adaptive_avg_pool2d", "global 32x512x7x7", (32, 512, 7, 7),
         lambda x: F.adaptive_avg_pool2d(x, 1), lambda x: TF.adaptive_avg_pool2d(x, 1), 1 / 49,
         True, False),
        ("adaptive_avg_pool2d", "global channels_last 32x512x7x7", (32, 512, 7, 7),
         lambda x: F.adaptive_avg_pool2d(x, 1), lambda x: TF.adaptive_avg_pool2d(x, 1), 1 / 49,
         False, True),
        ("adaptive_avg_pool2d", "6x6 alexnet 32x256x13x13", (32, 256, 13, 13),
         lambda x: F.adaptive_avg_pool2d(x, 6), lambda x: TF.adaptive_avg_pool2d(x, 6), 36 / 169,
         False, False),
    ]
    for group, name, shape, ours, ref, ratio, quick, cl in specs:
        n = _numel(shape)
        for backward in (False, True):
            moved = n * (1 + ratio) * (2 if backward else 1)
            out.append(Case(group=group, name=name,
                            mode="forward+backward" if backward else "forward",
                            make=_pair(ours, ref, shape, backward, cl),
                            flops=n * (2 if backward else 1), bytes=4 * moved, quick=quick))
    return out
