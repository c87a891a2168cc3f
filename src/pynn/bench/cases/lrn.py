import torch
import torch.nn.functional as TF

import pynn.functional as F
from ..case import Case


def _make(shape, size, backward, channels_last=False):
    def make(device, dtype):
        x = torch.randn(shape, device=device, dtype=dtype)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        x.requires_grad_(backward)
        ours = lambda: F.local_response_norm(x, size)  # noqa: E731
        ref = lambda: TF.local_response_norm(x, size)  # noqa: E731
        if not backward:
            return ours, ref
        g = torch.randn_like(x)
        return (lambda: ours().backward(g)), (lambda: ref().backward(g))
    return make


def cases():
    out = []
    # AlexNet's first LRN (after conv1 and ReLU) and a smaller one.
    for shape, quick in [((32, 96, 55, 55), True), ((8, 256, 27, 27), False)]:
        n = 1
        for s in shape:
            n *= s
        for backward in (False, True):
            out.append(Case(group="lrn", name="x".join(map(str, shape)) + "/size5",
                            mode="forward+backward" if backward else "forward",
                            make=_make(shape, 5, backward), flops=n * (20 if backward else 8),
                            bytes=4 * n * (6 if backward else 2), quick=quick))
    shape = (32, 96, 55, 55)
    for backward in (False, True):
        out.append(Case(group="lrn", name="32x96x55x55/size5/channels_last",
                        mode="forward+backward" if backward else "forward",
                        make=_make(shape, 5, backward, channels_last=True),
                        bytes=4 * 32 * 96 * 55 * 55 * (6 if backward else 2)))
    return out
