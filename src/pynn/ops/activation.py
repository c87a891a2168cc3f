"""sigmoid, tanh, relu, leaky_relu: one kernel family (csrc/cpu/activation.cpp,
csrc/cuda/activation.cu, math in csrc/math/activation.h)."""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .. import _backend as B

SIGMOID, TANH, RELU, LEAKY_RELU = 0, 1, 2, 3
_NAMES = {SIGMOID: "sigmoid", TANH: "tanh", RELU: "relu", LEAKY_RELU: "leaky_relu"}


class ActivationFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, kind: int, slope: float, inplace: bool):
        x, out = B.dense_pair(input)
        # In place needs the input itself to be walkable flat; otherwise compute and copy back.
        in_place_kernel = inplace and x is input
        if in_place_kernel:
            out = input
        save_input = kind == LEAKY_RELU and slope < 0
        if save_input and inplace and input.requires_grad:
            raise RuntimeError(
                "leaky_relu: in-place with a negative slope cannot be differentiated "
                "(the input is overwritten); use inplace=False"
            )
        B.launch("activation_forward", x, B.view(x), B.view(out), kind, float(slope))
        if inplace:
            if not in_place_kernel:
                input.copy_(out)
                out = input
            ctx.mark_dirty(input)
        ctx.kind, ctx.slope = kind, float(slope)
        ctx.save_for_backward(x if save_input else out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (saved,) = ctx.saved_tensors
        g = B.like(grad_output, saved)
        grad_input = torch.empty_like(saved)
        B.launch("activation_backward", saved, B.view(g), B.view(saved), B.view(grad_input),
                 ctx.kind, ctx.slope)
        return grad_input, None, None, None


def _activation(input, kind: int, slope: float = 0.0, inplace: bool = False):
    op = _NAMES[kind]
    B.check_tensor(input, op, "input")
    return B.apply(ActivationFunction, input, kind, slope, inplace)


def sigmoid(input):
    return _activation(input, SIGMOID)


def tanh(input):
    return _activation(input, TANH)


def relu(input, inplace: bool = False):
    return _activation(input, RELU, 0.0, inplace)


def relu_(input):
    return _activation(input, RELU, 0.0, True)


def leaky_relu(input, negative_slope: float = 0.01, inplace: bool = False):
    return _activation(input, LEAKY_RELU, negative_slope, inplace)


def leaky_relu_(input, negative_slope: float = 0.01):
    return _activation(input, LEAKY_RELU, negative_slope, True)
