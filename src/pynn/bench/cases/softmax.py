import torch
import torch.nn.functional as TF

import pynn.functional as F
from ..case import Case

# Classifier heads (batch x classes) and one softmax over the channels of a feature map, which
# takes the strided (inner > 1) path.
SHAPES = [((256, 1000), -1, True), ((32, 10), -1, False), ((32, 64, 28, 28), 1, False)]


def _pair(ours, ref, shape, dim, backward):
    def make(device, dtype):
        x = torch.randn(shape, device=device, dtype=dtype, requires_grad=backward)
        if not backward:
            return (lambda: ours(x, dim)), (lambda: ref(x, dim))
        g = torch.randn(shape, device=device, dtype=dtype)
        return (lambda: ours(x, dim).backward(g)), (lambda: ref(x, dim).backward(g))
    return make


def cases():
    out = []
    for name, ours, ref in [("softmax", F.softmax, TF.softmax),
                            ("log_softmax", F.log_softmax, TF.log_softmax)]:
        for shape, dim, quick in SHAPES:
            n = 1
            for s in shape:
                n *= s
            for backward in (False, True):
                out.append(Case(group=name, name="x".join(map(str, shape)) + f"_dim{dim}",
                                mode="forward+backward" if backward else "forward",
                                make=_pair(ours, ref, shape, dim, backward),
                                flops=n * (8 if backward else 5),
                                bytes=4 * n * (5 if backward else 2),
                                quick=quick and name == "softmax"))
    return out
