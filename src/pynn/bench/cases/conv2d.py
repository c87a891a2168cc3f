import torch
import torch.nn.functional as TF

import pynn.functional as F
from ..case import Case

# (name, input shape, weight shape, kwargs, quick)
SHAPES = [
    ("lenet_c1_1to6_k5_32x32_b64", (64, 1, 32, 32), (6, 1, 5, 5), {}, True),
    ("alexnet_c1_3to64_k11s4p2_224_b8", (8, 3, 224, 224), (64, 3, 11, 11),
     dict(stride=4, padding=2), False),
    ("vgg_3to64_k3p1_56_b8_64ch", (8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), True),
    ("resnet_1x1_256to128_28_b8", (8, 256, 28, 28), (128, 256, 1, 1), {}, True),
    ("resnet_1x1_256to128_56_b8", (8, 256, 56, 56), (128, 256, 1, 1), {}, False),
    ("mobilenet_dw_k3p1_32ch_56_b8", (8, 32, 56, 56), (32, 1, 3, 3), dict(padding=1, groups=32),
     False),
]


def _out(n, k, s, p, d=1):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _make(xs, ws, kw, backward):
    def make(device, dtype):
        x = torch.randn(xs, device=device, dtype=dtype, requires_grad=backward)
        w = torch.randn(ws, device=device, dtype=dtype, requires_grad=backward)
        b = torch.randn(ws[0], device=device, dtype=dtype, requires_grad=backward)
        if not backward:
            return (lambda: F.conv2d(x, w, b, **kw)), (lambda: TF.conv2d(x, w, b, **kw))
        g = torch.randn_like(TF.conv2d(x, w, b, **kw))
        return (lambda: F.conv2d(x, w, b, **kw).backward(g)), \
               (lambda: TF.conv2d(x, w, b, **kw).backward(g))
    return make


def cases():
    out = []
    for name, xs, ws, kw, quick in SHAPES:
        s, p = kw.get("stride", 1), kw.get("padding", 0)
        groups = kw.get("groups", 1)
        oh, ow = _out(xs[2], ws[2], s, p), _out(xs[3], ws[3], s, p)
        fwd = 2.0 * xs[0] * ws[0] * oh * ow * (xs[1] // groups) * ws[2] * ws[3]
        elems = xs[0] * xs[1] * xs[2] * xs[3] + ws[0] * ws[1] * ws[2] * ws[3] + \
            xs[0] * ws[0] * oh * ow
        for backward in (False, True):
            # the backward computes two products of the forward's size (input and weight grads)
            out.append(Case(group="conv2d", name=name,
                            mode="forward+backward" if backward else "forward",
                            make=_make(xs, ws, kw, backward), flops=fwd * (3 if backward else 1),
                            bytes=4 * elems * (3 if backward else 1), quick=quick))
    return out
