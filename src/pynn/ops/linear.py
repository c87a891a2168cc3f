"""linear: y = x @ W^T + b (csrc/cpu/linear.cpp, csrc/cuda/linear.cu; products via our GEMM)."""
from __future__ import annotations

import math

import torch

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
        # The result is allocated in its final shape and the kernel writes a 2-D view of it:
        # returning a view instead would forbid in-place ops after the layer (ReLU(inplace=True)).
        result = torch.empty(*input.shape[:-1], weight.shape[0], dtype=input.dtype,
                             device=input.device)
        out = result.view(x.shape[0], weight.shape[0])
        B.launch("linear_forward", x, B.view(x), B.view(weight),
                 None if bias is None else B.view(bias), B.view(out))
        # Keep only what the requested gradients read: grad_input needs weight, grad_weight
        # needs input, grad_bias needs neither. The input itself is saved, not its 2-D fold,
        # so that a double backward can reach it.
        needs_x, needs_w, _ = ctx.needs_input_grad
        ctx.save_for_backward(input if needs_w else None, weight if needs_x else None)
        ctx.input_shape = input.shape
        ctx.has_bias = bias is not None
        return result

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        needs_x, needs_w, needs_b = ctx.needs_input_grad
        needs_b = needs_b and ctx.has_bias
        g = _rows(grad_output)
        x = None if input is None else _rows(input)
        if torch.is_grad_enabled():
            # create_graph=True (double backward, gradient penalties): build the gradients from
            # differentiable pieces, each still one of our kernels: g @ W = linear(g, W^T),
            # g^T @ x = linear(g^T, x^T), and the column sums.
            gi = (B.apply(LinearFunction, g, weight.t(), None).view(ctx.input_shape)
                  if needs_x else None)
            gw = B.apply(LinearFunction, g.t(), x.t(), None) if needs_w else None
            gb = B.apply(BiasGradFunction, g) if needs_b else None
            return gi, gw, gb
        # The usual case: one call computes every requested gradient, and nothing else.
        opts = dict(dtype=g.dtype, device=g.device)
        gi = torch.empty(g.shape[0], weight.shape[1], **opts) if needs_x else None
        gw = torch.empty(g.shape[1], x.shape[1], **opts) if needs_w else None
        gb = torch.empty(g.shape[1], **opts) if needs_b else None
        if needs_x or needs_w or needs_b:
            vw = lambda t: None if t is None else B.view(t)  # noqa: E731
            B.launch("linear_backward", g, B.view(g), vw(x), vw(weight), vw(gi), vw(gw), vw(gb))
        if gi is not None:
            gi = gi.view(ctx.input_shape)
        return gi, gw, gb


class BiasGradFunction(torch.autograd.Function):
    """grad_bias = grad_output.sum(0) with our column-sum kernel; differentiable (its adjoint
    broadcasts back over the rows) for the double-backward path of LinearFunction."""

    @staticmethod
    def forward(ctx, g):
        out = torch.empty(g.shape[1], dtype=g.dtype, device=g.device)
        B.launch("linear_backward", g, B.view(g), None, None, None, None, B.view(out))
        ctx.rows = g.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad.expand(ctx.rows, grad.shape[0])


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
    return B.apply(LinearFunction, input, weight, bias)
