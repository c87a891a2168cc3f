"""softmax and log_softmax along any dim: csrc/cpu/softmax.cpp, csrc/cuda/softmax.cu, math in
csrc/math/softmax.h. The kernels see a contiguous tensor as (outer, size(dim), inner)."""
from __future__ import annotations

import warnings

import torch
from torch.autograd.function import once_differentiable

from .. import _backend as B


class SoftmaxFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, dim: int, log_space: bool):
        x = input.contiguous()
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        # A 0-D tensor is a row of one.
        xv, ov = (x, out) if x.dim() else (x.view(1), out.view(1))
        B.launch("softmax_forward", x, B.view(xv), B.view(ov), dim, log_space)
        ctx.dim, ctx.log_space = dim, log_space
        ctx.save_for_backward(out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (out,) = ctx.saved_tensors
        g = grad_output.contiguous()
        grad_input = torch.empty_like(out)
        views = (g, out, grad_input) if out.dim() else (g.view(1), out.view(1), grad_input.view(1))
        B.launch("softmax_backward", out, *(B.view(v) for v in views), ctx.dim, ctx.log_space)
        return grad_input, None, None


def _implicit_dim(name: str, ndim: int, stacklevel: int) -> int:
    # torch's legacy rule for dim=None, with its deprecation warning.
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated. "
        "Change the call to include dim=X as an argument.",
        stacklevel=stacklevel,
    )
    return 0 if ndim in (0, 1, 3) else 1


def _softmax(name, input, dim, stacklevel, dtype, log_space):
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
    if dtype is not None:
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"{name}: dtype must be a torch.dtype, got {dtype!r}")
        if dtype not in B.FLOATING:
            raise TypeError(f"{name}: dtype must be float32 or float64, got {dtype}")
        # torch casts the input first and computes in `dtype`.
        input = input.to(dtype)
    B.check_tensor(input, name, "input")
    if dim is None:
        dim = _implicit_dim(name, input.dim(), stacklevel + 1)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{name}: dim must be an int, got {type(dim).__name__}")
    rank = max(input.dim(), 1)
    if not -rank <= dim < rank:
        raise IndexError(
            f"{name}: dim {dim} is out of range for a {input.dim()}-D input "
            f"(expected to be in range of [{-rank}, {rank - 1}])"
        )
    return B.apply(SoftmaxFunction, input, dim % rank, log_space)


def softmax(input, dim=None, _stacklevel: int = 3, dtype=None):
    return _softmax("softmax", input, dim, _stacklevel, dtype, False)


def log_softmax(input, dim=None, _stacklevel: int = 3, dtype=None):
    return _softmax("log_softmax", input, dim, _stacklevel, dtype, True)
