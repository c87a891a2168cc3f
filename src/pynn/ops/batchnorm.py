"""batch_norm: statistics, normalisation and the running-statistics update in one forward call,
the full gradient in one backward call (csrc/cpu/batchnorm.cpp, csrc/cuda/batchnorm.cu, math in
csrc/math/batchnorm.h). The kernels see every input as (N, C, P), P being the spatial dims."""
from __future__ import annotations

import math
import numbers

import torch
from torch.autograd.function import once_differentiable

from .. import _backend as B

_OP = "batch_norm"
# Each channel is reduced in up to this many independent pieces on the GPU (merged after).
_MAX_SPLITS = 64
_ELEMS_PER_SPLIT = 8192


def _as_ncp(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], t.shape[1], math.prod(t.shape[2:]))


def _empty_ncp(ref: torch.Tensor):
    """(out, its (N, C, P) view), laid out like ref when that layout can be flattened."""
    out = torch.empty_like(ref)
    shape3 = (ref.shape[0], ref.shape[1], math.prod(ref.shape[2:]))
    try:
        return out, out.view(shape3)
    except RuntimeError:
        out = torch.empty(ref.shape, dtype=ref.dtype, device=ref.device)
        return out, out.view(shape3)


# The CPU kernels take no workspace: one empty view, made once.
_NO_WORKSPACE = torch.empty(0, dtype=torch.float64)
_NO_WORKSPACE_VIEW = B.view(_NO_WORKSPACE)


def _workspace_view(x3: torch.Tensor):
    """(tensor, view) of the float64 scratch for the CUDA reductions: C * (3 * S + 2) for S
    splits per channel; the tensor must outlive the launch that reads the view."""
    if not x3.is_cuda:
        return _NO_WORKSPACE, _NO_WORKSPACE_VIEW
    n, c, p = x3.shape
    splits = max(1, min(_MAX_SPLITS, (n * p) // _ELEMS_PER_SPLIT))
    ws = torch.empty(c * (3 * splits + 2), dtype=torch.float64, device=x3.device)
    return ws, B.view(ws)


def _opt(t):
    return None if t is None else B.view(t)


class BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, training: bool,
                momentum: float, eps: float):
        x3 = _as_ncp(input)
        out, out3 = _empty_ncp(input)
        c = input.shape[1]
        save_mean = torch.empty(c, dtype=torch.float64, device=input.device)
        save_invstd = torch.empty(c, dtype=torch.float64, device=input.device)
        ws, vws = _workspace_view(x3)
        B.launch("batch_norm_forward", x3, B.view(x3), _opt(weight), _opt(bias), _opt(running_mean),
                 _opt(running_var), B.view(out3), B.view(save_mean), B.view(save_invstd), vws,
                 bool(training), float(momentum), float(eps))
        ctx.training = bool(training)
        ctx.save_for_backward(x3, weight, save_mean, save_invstd)
        ctx.mark_non_differentiable(save_mean, save_invstd)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x3, weight, save_mean, save_invstd = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        g3 = B.like(_as_ncp(grad_output), x3)
        grad_input = gi3 = grad_weight = grad_bias = None
        if need_x:
            grad_input, gi3 = _empty_ncp(grad_output)
        c = x3.shape[1]
        if need_w:
            grad_weight = torch.empty(c, dtype=x3.dtype, device=x3.device)
        if need_b:
            grad_bias = torch.empty(c, dtype=x3.dtype, device=x3.device)
        ws, vws = _workspace_view(x3)
        B.launch("batch_norm_backward", x3, B.view(g3), B.view(x3), _opt(weight),
                 B.view(save_mean), B.view(save_invstd), _opt(gi3), _opt(grad_weight),
                 _opt(grad_bias), vws, ctx.training)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


def _channel_vector(t, name: str, input: torch.Tensor):
    if t is None:
        return None
    # The usual vector, 1-D with C entries beside the input, in one test: the checks below
    # cost about 2 us a vector, and a layer passes four.
    if (isinstance(t, torch.Tensor) and t.dim() == 1 and t.shape[0] == input.shape[1]
            and t.dtype == input.dtype and B.same_place(t, input)):
        return t
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{_OP}: {name} must be a Tensor or None, got {type(t).__name__}")
    c = input.shape[1]
    if t.numel() != c:
        raise RuntimeError(f"{_OP}: {name} should contain {c} elements (one per channel of "
                           f"input of shape {tuple(input.shape)}), not {t.numel()}")
    B.check_same(_OP, input=input, **{name: t})
    return t if t.dim() == 1 else t.view(c)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5):
    """torch.nn.functional.batch_norm over dim 1 of an (N, C, *) input. Training normalises
    with the batch statistics (biased variance) and, when running_mean/running_var are given,
    updates them in place with the unbiased variance: running = (1 - momentum) * running +
    momentum * batch. Eval normalises with the running statistics."""
    B.check_tensor(input, _OP, "input")
    if input.dim() < 2:
        raise ValueError(f"{_OP}: input must have at least 2 dims (N, C, *), got {input.dim()}-D "
                         f"with shape {tuple(input.shape)}")
    if momentum is None or isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"{_OP}: momentum must be a float, got {type(momentum).__name__} (the "
                        "BatchNorm layers turn momentum=None into 1 / num_batches_tracked)")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{_OP}: eps must be a float, got {type(eps).__name__}")
    if training:
        size_prods = input.shape[0] * math.prod(input.shape[2:])
        if size_prods == 1:
            raise ValueError("Expected more than 1 value per channel when training, got input "
                             f"size {input.size()}")
        if eps <= 0.0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    elif eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{_OP}: running_mean and running_var must either both be None or "
                         "neither be None")
    if not training and running_mean is None:
        raise RuntimeError(f"{_OP}: running_mean and running_var must be defined in evaluation "
                           "mode (training=False)")
    weight = _channel_vector(weight, "weight", input)
    bias = _channel_vector(bias, "bias", input)
    running_mean = _channel_vector(running_mean, "running_mean", input)
    running_var = _channel_vector(running_var, "running_var", input)
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and training and t.requires_grad:
            raise RuntimeError(f"{_OP}: {name} is updated in place and must not require grad")
    return B.apply(BatchNormFunction, input, weight, bias, running_mean, running_var,
                                   bool(training), float(momentum), float(eps))
