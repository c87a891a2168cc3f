"""linear: y = x @ W^T + b (csrc/cpu/linear.cpp, csrc/cuda/linear.cu; products via our GEMM)."""
from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from .. import _backend as B


def _rows(t: torch.Tensor) -> torch.Tensor:
    """t as a 2-D [rows, features] matrix: a view when the leading dims fold, else a copy.

    A 2-D tensor is passed as it is, whatever its strides: the GEMM reads any layout. The row
    count is given explicitly so that zero-size inputs ([0, K] or [B, 0]) reshape unambiguously.
    """
    if t.dim() == 2:
        return t
    return t.reshape(math.prod(t.shape[:-1]), t.shape[-1])


class LinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, weight, bias):
        x = _rows(input)
        out = torch.empty(x.shape[0], weight.shape[0], dtype=input.dtype, device=input.device)
        B.launch("linear_forward", x, B.view(x), B.view(weight),
                 None if bias is None else B.view(bias), B.view(out))
        # Keep only what the requested gradients read: grad_input needs weight, grad_weight
        # needs input, grad_bias needs neither.
        needs_x, needs_w, _ = ctx.needs_input_grad
        ctx.save_for_backward(x if needs_w else None, weight if needs_x else None)
        ctx.input_shape = input.shape
        ctx.has_bias = bias is not None
        return out.view(*input.shape[:-1], weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        needs_x, needs_w, needs_b = ctx.needs_input_grad
        g = _rows(grad_output)
        opts = dict(dtype=g.dtype, device=g.device)
        grad_input = grad_weight = grad_bias = None
        if needs_x:
            grad_input = torch.empty(g.shape[0], weight.shape[1], **opts)
        if needs_w:
            grad_weight = torch.empty(g.shape[1], x.shape[1], **opts)
        if needs_b and ctx.has_bias:
            grad_bias = torch.empty(g.shape[1], **opts)
        if grad_input is not None or grad_weight is not None or grad_bias is not None:
            vw = lambda t: None if t is None else B.view(t)  # noqa: E731
            B.launch("linear_backward", g, B.view(g), vw(x), vw(weight), vw(grad_input),
                     vw(grad_weight), vw(grad_bias))
        if grad_input is not None:
            grad_input = grad_input.view(ctx.input_shape)
        return grad_input, grad_weight, grad_bias


def linear(input, weight, bias=None):
    """torch.nn.functional.linear: input [*, in_features], weight [out, in], bias [out]."""
    op = "linear"
    B.check_tensor(input, op, "input")
    B.check_tensor(weight, op, "weight", dims=(2,))
    if bias is not None:
        B.check_tensor(bias, op, "bias", dims=(1,))
    B.check_same(op, input=input, weight=weight, bias=bias)
    if input.dim() == 0:
        raise ValueError(f"{op}: input must have at least 1 dim (the features), got a 0-D tensor")
    out_features, in_features = weight.shape
    if input.shape[-1] != in_features:
        raise ValueError(
            f"{op}: input has {input.shape[-1]} features (last dim of shape "
            f"{tuple(input.shape)}) but weight {tuple(weight.shape)} expects in_features="
            f"{in_features}"
        )
    if bias is not None and bias.shape[0] != out_features:
        raise ValueError(
            f"{op}: bias has {bias.shape[0]} elements but weight {tuple(weight.shape)} has "
            f"out_features={out_features}"
        )
    return LinearFunction.apply(input, weight, bias)
