"""max_pool2d, avg_pool2d, adaptive_avg_pool2d: one kernel family (csrc/cpu/pool.cpp,
csrc/cuda/pool.cu, window math in csrc/math/pool.h).

Inputs are (N, C, H, W) or unbatched (C, H, W). A channels_last input is pooled in place by the
NHWC kernels and gives a channels_last output, as in torch; any other layout is made contiguous.

Max pooling keeps, for the backward, the argmax of each window as a uint8 tap number within
the window (kernels of up to 256 taps; otherwise an int32 flat index into the input plane, int64
only for planes of more than 2**31 - 1 elements), and nothing at all when no gradient is
needed. return_indices=True yields torch's int64 flat indices.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .. import _backend as B

_INT32_MAX = 2**31 - 1
_MAX_TAP_INDEX = 256  # uint8 tap numbers cover kernels of up to this many taps
_CL = torch.channels_last
_CF = torch.contiguous_format


# ---- argument parsing with torch's rules and messages that name the argument ----

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pair(value, op: str, arg: str) -> tuple[int, int]:
    """An int, or a sequence of one or two ints, as (height, width)."""
    if _is_int(value):
        return value, value
    if isinstance(value, (tuple, list, torch.Size)) and len(value) in (1, 2) and all(
            _is_int(v) for v in value):
        return (value[0], value[0]) if len(value) == 1 else (value[0], value[1])
    if isinstance(value, (tuple, list, torch.Size)) and all(_is_int(v) for v in value):
        raise ValueError(f"{op}: {arg} must either be a single int, or a tuple of two ints, "
                         f"got {tuple(value)}")
    raise TypeError(f"{op}: {arg} must be an int or a tuple of two ints, got {value!r}")


def _check_input(input, op: str) -> None:
    B.check_tensor(input, op, "input", dims=(3, 4))
    spatial = input.shape[1:] if input.dim() == 4 else input.shape
    if any(s == 0 for s in spatial):
        raise ValueError(
            f"{op}: input must have non-zero size in every non-batch dimension (only the batch "
            f"of a 4-D input may be 0), got shape {tuple(input.shape)}")


def _window_args(op: str, input, kernel_size, stride, padding, dilation, ceil_mode):
    """(kernel, stride, padding, dilation, output (OH, OW)) after torch's checks."""
    k = _pair(kernel_size, op, "kernel_size")
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) \
        else _pair(stride, op, "stride")
    p = _pair(padding, op, "padding")
    d = _pair(dilation, op, "dilation")
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"{op}: ceil_mode must be a bool, got {ceil_mode!r}")
    for name, v, low in (("kernel_size", k, 1), ("stride", s, 1), ("dilation", d, 1),
                         ("padding", p, 0)):
        if min(v) < low:
            rule = "positive" if low else "non-negative"
            raise ValueError(f"{op}: {name} must be {rule}, got {name}={v}")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{op}: padding should be at most half of kernel_size, got "
                         f"padding={p} and kernel_size={k}")
    H, W = input.shape[-2:]
    out = (B._C.pool_output_size(H, k[0], s[0], p[0], d[0], ceil_mode),
           B._C.pool_output_size(W, k[1], s[1], p[1], d[1], ceil_mode))
    if min(out) < 1:
        span = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
        raise ValueError(
            f"{op}: kernel_size {k} (dilated to {span}) is larger than the padded input "
            f"{(H + 2 * p[0], W + 2 * p[1])}: the output size would be {out}; "
            "the output size is too small")
    return k, s, p, d, out


def _dense(x: torch.Tensor):
    """x in a layout the kernels walk, and that layout's memory format."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=_CL):
        return x, _CL
    return x.contiguous(), _CF


def _no_indices(device) -> torch.Tensor:
    return torch.empty(0, dtype=torch.int64, device=device)


def _batched(input):
    return (input, False) if input.dim() == 4 else (input.unsqueeze(0), True)


# ---- max pooling ----

def _max_forward(x, args, out_hw, return_indices: bool, for_backward: bool):
    """(out, indices or None, memory format) of max pooling the 4-D x."""
    x, fmt = _dense(x)
    N, C, H, W = x.shape
    shape = (N, C) + tuple(out_hw)
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
    ind_dtype = None
    if return_indices:
        ind_dtype = torch.int64
    elif for_backward:
        if args[0] * args[1] <= _MAX_TAP_INDEX:
            ind_dtype = torch.uint8
        else:
            ind_dtype = torch.int32 if H * W <= _INT32_MAX else torch.int64
    ind = None
    if ind_dtype is not None:
        ind = torch.empty(shape, dtype=ind_dtype, device=x.device, memory_format=fmt)
    B.launch("max_pool2d_forward", x, B.view(x), B.view(out),
             B.view(ind if ind is not None else _no_indices(x.device)), *args)
    return out, ind, fmt


class MaxPool2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, args, out_hw, return_indices: bool):
        """args: (kh, kw, sh, sw, ph, pw, dh, dw)."""
        out, ind, fmt = _max_forward(input, args, out_hw, return_indices, ctx.needs_input_grad[0])
        ctx.args, ctx.fmt, ctx.in_shape = args, fmt, input.shape
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(ind)
        if return_indices:
            ctx.mark_non_differentiable(ind)
            return out, ind
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output, grad_indices=None):
        (ind,) = ctx.saved_tensors
        g = grad_output.contiguous(memory_format=ctx.fmt)
        grad_input = torch.empty(ctx.in_shape, dtype=g.dtype, device=g.device,
                                 memory_format=ctx.fmt)
        B.launch("max_pool2d_backward", g, B.view(g), B.view(ind), B.view(grad_input), *ctx.args)
        return grad_input, None, None, None


def _needs_grad(input) -> bool:
    return torch.is_grad_enabled() and input.requires_grad


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    op = "max_pool2d"
    _check_input(input, op)
    k, s, p, d, out = _window_args(op, input, kernel_size, stride, padding, dilation, ceil_mode)
    x, unbatched = _batched(input)
    args = (*k, *s, *p, *d)
    if _needs_grad(input):
        res = B.apply(MaxPool2dFunction, x, args, out, bool(return_indices))
    else:  # inference: no autograd node, no indices unless asked for
        y, ind, _ = _max_forward(x, args, out, bool(return_indices), False)
        res = (y, ind) if return_indices else y
    if return_indices:
        y, ind = res
        return (y.squeeze(0), ind.squeeze(0)) if unbatched else (y, ind)
    return res.squeeze(0) if unbatched else res


def max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode=False, return_indices=True):
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


# ---- average pooling (fixed windows and adaptive share the kernels) ----

def _avg_forward(x, out_hw, args):
    """(out, memory format); args: (kh, kw, sh, sw, ph, pw, count_include_pad, divisor) or
    None for adaptive pooling."""
    x, fmt = _dense(x)
    out = torch.empty(x.shape[:2] + tuple(out_hw), dtype=x.dtype, device=x.device,
                      memory_format=fmt)
    if args is None:
        B.launch("adaptive_avg_pool2d_forward", x, B.view(x), B.view(out))
    else:
        B.launch("avg_pool2d_forward", x, B.view(x), B.view(out), *args)
    return out, fmt


class AvgPool2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, out_hw, args):
        out, fmt = _avg_forward(input, out_hw, args)
        ctx.args, ctx.fmt, ctx.in_shape = args, fmt, input.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        g = grad_output.contiguous(memory_format=ctx.fmt)
        grad_input = torch.empty(ctx.in_shape, dtype=g.dtype, device=g.device,
                                 memory_format=ctx.fmt)
        if ctx.args is None:
            B.launch("adaptive_avg_pool2d_backward", g, B.view(g), B.view(grad_input))
        else:
            B.launch("avg_pool2d_backward", g, B.view(g), B.view(grad_input), *ctx.args)
        return grad_input, None, None


def _avg(input, out_hw, args):
    x, unbatched = _batched(input)
    if _needs_grad(input):
        y = B.apply(AvgPool2dFunction, x, out_hw, args)
    else:
        y, _ = _avg_forward(x, out_hw, args)
    return y.squeeze(0) if unbatched else y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    op = "avg_pool2d"
    _check_input(input, op)
    k, s, p, _, out = _window_args(op, input, kernel_size, stride, padding, 1, ceil_mode)
    if not isinstance(count_include_pad, bool):
        raise TypeError(f"{op}: count_include_pad must be a bool, got {count_include_pad!r}")
    if divisor_override is not None:
        if not _is_int(divisor_override):
            raise TypeError(f"{op}: divisor_override must be an int or None, "
                            f"got {divisor_override!r}")
        if divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must be non-zero")
    return _avg(input, out, (*k, *s, *p, count_include_pad, int(divisor_override or 0)))


def _adaptive_size(output_size, input, op: str) -> tuple[int, int]:
    if _is_int(output_size) or output_size is None:
        size = (output_size, output_size)
    elif isinstance(output_size, (tuple, list, torch.Size)):
        if len(output_size) != 2:
            raise ValueError(f"{op}: output_size must be an int or a tuple of two ints (or None), "
                             f"got {tuple(output_size)}")
        size = tuple(output_size)
    else:
        raise TypeError(f"{op}: output_size must be an int or a tuple of two ints (or None), "
                        f"got {output_size!r}")
    out = []
    for v, keep in zip(size, input.shape[-2:]):
        if v is None:
            v = keep
        if not _is_int(v):
            raise TypeError(f"{op}: output_size entries must be ints or None, got {v!r}")
        if v < 0:
            raise ValueError(f"{op}: output_size entries must be >= 0, got {tuple(size)}")
        out.append(v)
    return out[0], out[1]


def adaptive_avg_pool2d(input, output_size):
    op = "adaptive_avg_pool2d"
    _check_input(input, op)
    return _avg(input, _adaptive_size(output_size, input, op), None)
