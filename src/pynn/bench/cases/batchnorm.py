import torch

import pynn
from ..case import Case


def _make(shape, mode, channels_last=False):
    def make(device, dtype):
        c = shape[1]
        ours = pynn.nn.BatchNorm2d(c, device=device, dtype=dtype) if len(shape) == 4 else \
            pynn.nn.BatchNorm1d(c, device=device, dtype=dtype)
        ref = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(
            c, device=device, dtype=dtype)
        x = torch.randn(shape, device=device, dtype=dtype)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        if mode == "eval":
            ours.eval()
            ref.eval()
            with_grad = False
        else:
            with_grad = mode == "train_forward+backward"
        x.requires_grad_(with_grad)
        if not with_grad:
            return (lambda: ours(x)), (lambda: ref(x))
        g = torch.randn_like(x)
        return (lambda: ours(x).backward(g)), (lambda: ref(x).backward(g))
    return make


def cases():
    out = []
    for shape, quick, cl in [((32, 64, 56, 56), True, False), ((32, 64, 56, 56), False, True),
                             ((256, 1024), False, False)]:
        n = 1
        for s in shape:
            n *= s
        name = "x".join(map(str, shape)) + ("/channels_last" if cl else "")
        for mode, passes in [("train_forward", 3), ("train_forward+backward", 8), ("eval", 2)]:
            out.append(Case(group="batchnorm", name=name, mode=mode, make=_make(shape, mode, cl),
                            bytes=4 * n * passes, quick=quick and mode != "eval"))
    return out
