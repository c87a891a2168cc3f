import torch
import torch.nn.functional as TF

import pynn.functional as F
from ..case import Case


def _pair(ours, ref, shape, backward):
    def make(device, dtype):
        x = torch.randn(shape, device=device, dtype=dtype, requires_grad=backward)
        if not backward:
            return (lambda: ours(x)), (lambda: ref(x))
        g = torch.randn(shape, device=device, dtype=dtype)
        return (lambda: ours(x).backward(g)), (lambda: ref(x).backward(g))
    return make


def cases():
    out = []
    for name, ours, ref in [("relu", F.relu, TF.relu), ("sigmoid", F.sigmoid, torch.sigmoid),
                            ("tanh", F.tanh, torch.tanh)]:
        for shape, quick in [((32, 64, 56, 56), True), ((256, 4096), False)]:
            n = 1
            for s in shape:
                n *= s
            for backward in (False, True):
                out.append(Case(group=name, name="x".join(map(str, shape)),
                                mode="forward+backward" if backward else "forward",
                                make=_pair(ours, ref, shape, backward),
                                flops=n * (2 if backward else 1),
                                bytes=4 * n * (5 if backward else 2), quick=quick))
    return out
