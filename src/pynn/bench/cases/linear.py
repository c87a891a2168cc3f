import torch
import torch.nn.functional as TF

import pynn.functional as F
from ..case import Case

# (batch, in_features, out_features, quick)
SHAPES = [(256, 2048, 2048, True), (32, 128, 256, True)]


def _make(batch, fin, fout, backward):
    def make(device, dtype):
        opts = dict(device=device, dtype=dtype)
        x = torch.randn(batch, fin, **opts, requires_grad=backward)
        w = (torch.randn(fout, fin, **opts) / fin ** 0.5).requires_grad_(backward)
        b = torch.randn(fout, **opts, requires_grad=backward)
        if not backward:
            return (lambda: F.linear(x, w, b)), (lambda: TF.linear(x, w, b))
        g = torch.randn(batch, fout, **opts)

        def step(fn):
            def run():
                x.grad = w.grad = b.grad = None
                fn(x, w, b).backward(g)
            return run
        return step(F.linear), step(TF.linear)
    return make


def cases():
    out = []
    for batch, fin, fout, quick in SHAPES:
        flops = 2.0 * batch * fin * fout
        for backward in (False, True):
            # forward: read x, W, b, write y; backward adds reading g and writing 3 gradients
            elems = batch * fin + fin * fout + fout + batch * fout
            out.append(Case(group="linear", name=f"{batch}x{fin}->{fout}",
                            mode="forward+backward" if backward else "forward",
                            make=_make(batch, fin, fout, backward),
                            flops=flops * (3 if backward else 1),
                            bytes=4 * elems * (2 if backward else 1), quick=quick))
    return out
