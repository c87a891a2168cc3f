"""dropout with a counter-based (Philox-4x32-10) mask: csrc/cpu/dropout.cpp, csrc/cuda/dropout.cu,
math in csrc/math/dropout.h and csrc/math/philox.h.

The mask is a pure function of (seed, offset, memory position), so:
  * it is never stored: the backward regenerates it from the seed (no mask tensor kept alive
    between forward and backward, unlike torch's CPU dropout);
  * the seed and offset come from torch's default CPU generator, so `torch.manual_seed` makes a
    run reproducible, and a CPU tensor and a CUDA tensor with the same layout get the same mask.
"""
from __future__ import annotations

import torch

from .. import _backend as B

_U64 = (1 << 64) - 1


def _draw_seed_offset() -> tuple[int, int]:
    """128 random bits (Philox key and counter offset) from torch's default CPU generator."""
    words = torch.randint(-(1 << 63), (1 << 63) - 1, (2,), dtype=torch.int64).tolist()
    return words[0] & _U64, words[1] & _U64


class DropoutFunction(torch.autograd.Function):
    """y = x * mask(seed, offset) with mask in {0, 1/(1-p)}: linear in x, so the backward is the
    same mask applied to the gradient, and is itself differentiable (it calls this Function)."""

    @staticmethod
    def forward(ctx, input, p: float, seed: int, offset: int, inplace: bool):
        # The mask is indexed by position in a dense buffer: the input's own when it is dense
        # (so channels_last stays channels_last, as in torch), a contiguous copy otherwise.
        x, out = B.dense_pair(input)
        in_place_kernel = inplace and x is input
        if in_place_kernel:
            out = input
        B.launch("dropout_forward", x, B.view(x), B.view(out), p, seed, offset)
        if inplace:
            if not in_place_kernel:
                input.copy_(out)
                out = input
            ctx.mark_dirty(input)
        ctx.p, ctx.seed, ctx.offset = p, seed, offset
        ctx.layout = (x.shape, x.stride())
        return out

    @staticmethod
    def backward(ctx, grad_output):
        # The gradient must be laid out like the forward's buffer so that each element meets
        # the mask value its input met; then the same (seed, offset) regenerates that mask.
        shape, stride = ctx.layout
        ref = torch.empty_strided(shape, stride, dtype=grad_output.dtype,
                                  device=grad_output.device)
        g = B.like(grad_output, ref)
        grad = B.apply(DropoutFunction, g, ctx.p, ctx.seed, ctx.offset, False)
        return grad, None, None, None, None


def dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False):
    """torch.nn.functional.dropout: zeroes each element with probability p, scales the rest by
    1/(1-p). training=False, p=0 and empty inputs return `input` itself, as torch does."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    B.check_tensor(input, "dropout", "input")
    if not training or p == 0.0 or input.numel() == 0:
        return input
    seed, offset = _draw_seed_offset()
    return B.apply(DropoutFunction, input, float(p), seed, offset, bool(inplace))
