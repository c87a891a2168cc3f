"""mse_loss and cross_entropy: csrc/cpu/loss.cpp, csrc/cuda/loss.cu, math in csrc/math/loss.h.

Both reduce inside our kernels (no torch sum/mean is dispatched). cross_entropy fuses
log_softmax, the loss and its reduction in one pass; its backward builds grad_input in one pass
from the saved log-probabilities.
"""
from __future__ import annotations

import warnings

import torch
from torch.autograd.function import once_differentiable
from torch.nn import _reduction as _Reduction

from .. import _backend as B

# Grid cap of the CUDA reductions: the rows of partial sums the workspace holds.
_REDUCE_BLOCKS = 512
_NUM_STATS = 3  # csrc/math/loss.h CeStat


def _reduction(size_average, reduce, reduction) -> int:
    # torch's legacy rule: either old flag given overrides `reduction`, with its warning.
    if size_average is not None or reduce is not None:
        reduction = _Reduction.legacy_get_string(size_average, reduce)
    if not isinstance(reduction, str):
        raise ValueError(f"{reduction!r} is not a valid value for reduction")
    return _Reduction.get_enum(reduction)


def _reduce_buffers(ref: torch.Tensor, slots: int, reduction: int):
    """The float64 sums a reduced loss keeps for its backward, and on CUDA the rows of per-block
    partial sums its kernels add up (csrc/ops/loss.h)."""
    stats = torch.empty(slots, dtype=torch.float64, device=ref.device)
    workspace = (torch.empty((_REDUCE_BLOCKS, slots), dtype=torch.float64, device=ref.device)
                 if ref.is_cuda and reduction != 0 else None)
    return stats, workspace


def _view_or_none(t):
    return None if t is None else B.view(t)


# ---------------------------------------------------------------- mse_loss

class MSELossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, target, weight, reduction: int, weight_repeat: float):
        x, t = input.contiguous(), target.contiguous()
        w = None if weight is None else weight.contiguous()
        out = torch.empty(x.shape if reduction == 0 else (), dtype=x.dtype, device=x.device)
        stats, workspace = _reduce_buffers(x, 2, reduction)
        B.launch("mse_loss_forward", x, B.view(x), B.view(t), _view_or_none(w), B.view(out),
                 B.view(stats), _view_or_none(workspace), reduction, float(weight_repeat))
        ctx.reduction, ctx.weight_repeat = reduction, float(weight_repeat)
        ctx.save_for_backward(x, t, w, stats)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x, t, w, stats = ctx.saved_tensors
        need_x, need_t, need_w = ctx.needs_input_grad[:3]
        g = grad_output.contiguous()
        gx = torch.empty_like(x) if need_x else None
        gt = torch.empty_like(x) if need_t else None
        gw = torch.empty_like(x) if need_w and w is not None else None
        if gx is not None or gt is not None or gw is not None:
            B.launch("mse_loss_backward", x, B.view(g), B.view(x), B.view(t), _view_or_none(w),
                     B.view(stats), _view_or_none(gx), _view_or_none(gt), _view_or_none(gw),
                     ctx.reduction, ctx.weight_repeat)
        return gx, gt, gw, None, None


def mse_loss(input, target, size_average=None, reduce=None, reduction: str = "mean",
             weight=None):
    op = "mse_loss"
    B.check_tensor(input, op, "input")
    B.check_tensor(target, op, "target")
    if weight is not None:
        B.check_tensor(weight, op, "weight")
    if target.size() != input.size():
        warnings.warn(
            f"Using a target size ({target.size()}) that is different to the input size "
            f"({input.size()}). This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            stacklevel=2,
        )
    red = _reduction(size_average, reduce, reduction)
    _same_device(op, input, target=target, weight=weight)
    # Mixed float32/float64 computes in float64, as torch's type promotion does.
    dtype = torch.promote_types(input.dtype, target.dtype)
    if weight is not None:
        if weight.size() != input.size():
            raise ValueError(f"{op}: weight must have the input's size {tuple(input.shape)}, "
                             f"got {tuple(weight.shape)} (Weights and input must have the same size.)")
        dtype = torch.promote_types(dtype, weight.dtype)
    input, target = input.to(dtype), target.to(dtype)
    try:
        x, t = torch.broadcast_tensors(input, target)
    except RuntimeError as exc:
        raise ValueError(f"{op}: input {tuple(input.shape)} and target {tuple(target.shape)} "
                         f"cannot be broadcast together") from exc
    repeat = 1.0
    if weight is not None:
        weight = weight.to(dtype)
        if weight.numel():
            repeat = x.numel() / weight.numel()
        weight = weight.expand(x.shape)
    return B.apply(MSELossFunction, x, t, weight, red, repeat)


# ---------------------------------------------------------------- cross_entropy

class CrossEntropyFunction(torch.autograd.Function):
    """input (N, C, K), target (N, K) int64 or (N, C, K) floating; returns (N, K) or ()."""

    @staticmethod
    def forward(ctx, input, target, weight, reduction: int, ignore_index: int,
                label_smoothing: float):
        n, _, k = input.shape
        log_probs = torch.empty_like(input)
        loss = torch.empty((n, k) if reduction == 0 else (), dtype=input.dtype,
                           device=input.device)
        stats, workspace = _reduce_buffers(input, _NUM_STATS, reduction)
        # Where the CUDA kernel flags an out-of-range class index (it is then raised, never used).
        status = (torch.empty(1, dtype=torch.int64, device=input.device)
                  if input.is_cuda and not target.is_floating_point() else None)
        B.launch("cross_entropy_forward", input, B.view(input), B.view(target),
                 _view_or_none(weight), B.view(log_probs), B.view(loss), B.view(stats),
                 _view_or_none(workspace), _view_or_none(status), reduction, ignore_index,
                 label_smoothing)
        ctx.args = (reduction, ignore_index, label_smoothing)
        ctx.save_for_backward(log_probs, target, weight, stats)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        log_probs, target, weight, stats = ctx.saved_tensors
        reduction, ignore_index, label_smoothing = ctx.args
        g = grad_output.contiguous()
        grad_input = torch.empty_like(log_probs)
        need_t = ctx.needs_input_grad[1] and target.is_floating_point()
        grad_target = torch.empty_like(log_probs) if need_t else None
        B.launch("cross_entropy_backward", log_probs, B.view(g), B.view(log_probs),
                 B.view(target), _view_or_none(weight), B.view(stats), B.view(grad_input),
                 _view_or_none(grad_target), reduction, ignore_index, label_smoothing)
        return grad_input, grad_target, None, None, None, None


def _same_device(op, input, **others):
    for name, t in others.items():
        if t is not None and t.device != input.device:
            raise RuntimeError(f"{op}: expected all tensors on one device, but input is on "
                               f"{input.device} and {name} is on {t.device}")


def cross_entropy(input, target, weight=None, size_average=None, ignore_index: int = -100,
                  reduce=None, reduction: str = "mean", label_smoothing: float = 0.0):
    op = "cross_entropy"
    B.check_tensor(input, op, "input")
    B.check_tensor(target, op, "target", floating=False)
    if weight is not None:
        B.check_tensor(weight, op, "weight")
    _same_device(op, input, target=target, weight=weight)
    red = _reduction(size_average, reduce, reduction)
    label_smoothing = float(label_smoothing)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    ignore_index = int(ignore_index)
    if input.dim() == 0:
        raise ValueError(f"{op}: input must be (C), (N, C) or (N, C, d1, ..., dk), got a 0-D tensor")
    batched = input.dim() > 1
    n = input.shape[0] if batched else 1
    classes = input.shape[1] if batched else input.shape[0]
    k = _prod(input.shape[2:])

    if weight is not None:
        if weight.dim() != 1 or weight.shape[0] != classes:
            raise ValueError(f"{op}: weight must be 1-D with one entry per class ({classes}), "
                             f"got shape {tuple(weight.shape)}")
        if weight.dtype != input.dtype:
            raise TypeError(f"{op}: weight is {weight.dtype} but input is {input.dtype}; "
                            "they must match")

    if target.shape == input.shape:
        # Class probabilities: torch picks this path whenever the shapes agree.
        if not target.is_floating_point():
            raise TypeError(f"{op}: a target of the input's shape holds class probabilities and "
                            f"must be floating point, got {target.dtype}")
        if target.dtype not in B.FLOATING:
            raise TypeError(f"{op}: target must be float32 or float64, got {target.dtype}")
        if ignore_index >= 0:
            raise ValueError(f"{op}: ignore_index is not supported for probability targets")
        dtype = torch.promote_types(input.dtype, target.dtype)
        if weight is not None:
            weight = weight.to(dtype)
        x = input.to(dtype).contiguous().reshape(n, classes, k)
        t = target.to(dtype).contiguous().reshape(n, classes, k)
        out_shape = (input.shape[:1] + input.shape[2:]) if batched else ()
    else:
        if target.dtype == torch.uint8:  # torch accepts Byte class indices too
            target = target.long()
        if target.dtype != torch.int64:
            raise TypeError(f"{op}: target must hold int64 class indices (shape of input without "
                            f"the class dim) or floating probabilities (input's shape), got "
                            f"{target.dtype} with shape {tuple(target.shape)}")
        if batched:
            want = input.shape[:1] + input.shape[2:]
            if target.dim() >= 1 and target.shape[0] != n:
                raise ValueError(f"{op}: expected input batch_size ({n}) to match target "
                                 f"batch_size ({target.shape[0]}); target has shape "
                                 f"{tuple(target.shape)}")
            if target.shape != want:
                raise ValueError(f"{op}: target must have shape {tuple(want)} for input of shape "
                                 f"{tuple(input.shape)}, got {tuple(target.shape)}")
            out_shape = want
        else:
            # torch also takes a one-element 1-D target for unbatched input.
            if target.dim() > 1 or target.numel() != 1:
                raise ValueError(f"{op}: for unbatched input of shape {tuple(input.shape)} the "
                                 f"target must be a 0-D class index, got shape {tuple(target.shape)}")
            out_shape = ()
        x = input.contiguous().reshape(n, classes, k)
        t = target.contiguous().reshape(n, k)
    if weight is not None:
        weight = weight.contiguous()
    loss = B.apply(CrossEntropyFunction, x, t, weight, red, ignore_index, label_smoothing)
    return loss.reshape(out_shape) if red == 0 else loss


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out
