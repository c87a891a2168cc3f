"""local_response_norm: one fused kernel each way (csrc/cpu/lrn.cpp, csrc/cuda/lrn.cu, math in
csrc/math/lrn.h). The kernels see every input as (N, C, P), P being the spatial dims flattened."""
from __future__ import annotations

import math
import numbers

import torch
from torch.autograd.function import once_differentiable

from .. import _backend as B

_OP = "local_response_norm"


def _as_ncp(t: torch.Tensor) -> torch.Tensor:
    """The (N, C, P) view of t (a copy only when the spatial dims cannot be flattened)."""
    return t.reshape(t.shape[0], t.shape[1], math.prod(t.shape[2:]))


def _empty_ncp(ref: torch.Tensor):
    """(out, its (N, C, P) view): laid out like ref when ref is dense (channels last stays
    channels last), contiguous when that layout cannot be flattened. Not a view of a hidden
    base, so the caller may modify it in place."""
    out = torch.empty_like(ref)
    shape3 = (ref.shape[0], ref.shape[1], math.prod(ref.shape[2:]))
    try:
        return out, out.view(shape3)
    except RuntimeError:
        out = torch.empty(ref.shape, dtype=ref.dtype, device=ref.device)
        return out, out.view(shape3)


class LocalResponseNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, size: int, alpha: float, beta: float, k: float):
        x3 = _as_ncp(input)
        out, out3 = _empty_ncp(input)
        needs_grad = ctx.needs_input_grad[0]
        scale3 = torch.empty_like(out3) if needs_grad else out3.new_empty((0, 0, 0))
        B.launch("lrn_forward", x3, B.view(x3), B.view(out3), B.view(scale3), size, float(alpha),
                 float(beta), float(k))
        ctx.params = (size, float(alpha), float(beta))
        if needs_grad:
            ctx.save_for_backward(x3, scale3)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x3, scale3 = ctx.saved_tensors
        size, alpha, beta = ctx.params
        g3 = _as_ncp(grad_output)
        gi, gi3 = _empty_ncp(grad_output)
        B.launch("lrn_backward", x3, B.view(g3), B.view(x3), B.view(scale3), B.view(gi3), size,
                 alpha, beta)
        return gi, None, None, None, None


def local_response_norm(input, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0):
    """torch.nn.functional.local_response_norm: across channels (dim 1), a window of `size`
    channels (size // 2 before, (size - 1) // 2 after, zero padded),
    out = input / (k + alpha / size * sum window input^2) ** beta."""
    B.check_tensor(input, _OP, "input")
    if input.dim() < 3:
        raise ValueError(f"{_OP}: expected 3D or higher dimensionality input (got {input.dim()} "
                         f"dimensions)")
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise TypeError(f"{_OP}: size must be an int, got {type(size).__name__}")
    if size < 1:
        raise ValueError(f"{_OP}: size must be >= 1, got {size}")
    for name, v in (("alpha", alpha), ("beta", beta), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{_OP}: {name} must be a number, got {type(v).__name__}")
    return B.apply(LocalResponseNormFunction, input, int(size), float(alpha), float(beta),
                   float(k))
