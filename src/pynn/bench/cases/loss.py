import torch
import torch.nn.functional as TF

import pynn.functional as F
from ..case import Case


def _ce(shape, prob, smoothing, backward):
    def make(device, dtype):
        x = torch.randn(shape, device=device, dtype=dtype, requires_grad=backward)
        if prob:
            t = torch.softmax(torch.randn(shape, device=device, dtype=dtype), 1)
        else:
            t = torch.randint(0, shape[1], (shape[0],) + shape[2:], device=device)

        def run(fn):
            def step():
                loss = fn(x, t, label_smoothing=smoothing)
                if backward:
                    loss.backward()
            return step
        return run(F.cross_entropy), run(TF.cross_entropy)
    return make


def _mse(shape, backward):
    def make(device, dtype):
        x = torch.randn(shape, device=device, dtype=dtype, requires_grad=backward)
        t = torch.randn(shape, device=device, dtype=dtype)

        def run(fn):
            def step():
                loss = fn(x, t)
                if backward:
                    loss.backward()
            return step
        return run(F.mse_loss), run(TF.mse_loss)
    return make


def cases():
    out = []
    # classifier heads, a smoothed and a soft-target variant, and a segmentation-style K-dim loss
    for shape, prob, ls, quick in [((256, 1000), False, 0.0, True), ((32, 10), False, 0.0, False),
                                   ((256, 1000), False, 0.1, False), ((256, 1000), True, 0.0, False),
                                   ((8, 21, 64, 64), False, 0.0, False)]:
        n = 1
        for s in shape:
            n *= s
        tag = "x".join(map(str, shape)) + ("_prob" if prob else "") + (f"_ls{ls}" if ls else "")
        for backward in (False, True):
            out.append(Case(group="cross_entropy", name=tag,
                            mode="forward+backward" if backward else "forward",
                            make=_ce(shape, prob, ls, backward), flops=n * (6 if backward else 4),
                            bytes=4 * n * (5 if backward else 2), quick=quick))
    for shape, quick in [((256, 1000), True), ((4096, 4096), False)]:
        n = shape[0] * shape[1]
        for backward in (False, True):
            out.append(Case(group="mse_loss", name="x".join(map(str, shape)),
                            mode="forward+backward" if backward else "forward",
                            make=_mse(shape, backward), flops=n * (3 if backward else 3),
                            bytes=4 * n * (5 if backward else 2), quick=quick and not backward))
    return out
