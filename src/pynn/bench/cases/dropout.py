import torch
import torch.nn.functional as TF

import pynn.functional as F
from ..case import Case

SHAPES = [((256, 4096), True), ((32, 64, 56, 56), False)]


def _make(shape, backward):
    def make(device, dtype):
        x = torch.randn(shape, device=device, dtype=dtype, requires_grad=backward)
        if not backward:
            return (lambda: F.dropout(x, 0.5)), (lambda: TF.dropout(x, 0.5))
        g = torch.randn(shape, device=device, dtype=dtype)
        return (lambda: F.dropout(x, 0.5).backward(g)), (lambda: TF.dropout(x, 0.5).backward(g))
    return make


def cases():
    out = []
    for shape, quick in SHAPES:
        n = 1
        for s in shape:
            n *= s
        for backward in (False, True):
            # ours reads x and writes y (backward: reads g, writes grad); torch's also writes and
            # rereads a mask, which is counted against neither
            out.append(Case(group="dropout", name="x".join(map(str, shape)),
                            mode="forward+backward" if backward else "forward",
                            make=_make(shape, backward), flops=n * (2 if backward else 1),
                            bytes=4 * n * (4 if backward else 2), quick=quick))
    return out
