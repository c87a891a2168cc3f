"""Elman RNN (tanh / relu) and LSTM: cells and multi-layer, optionally bidirectional sequences.

Kernels: csrc/cpu/rnn.cpp, csrc/cuda/rnn.cu, time loops in csrc/ops/rnn_loop.h, per-element
math in csrc/math/rnn.h. One C++ call runs one layer in one direction over the whole sequence
(forward or backward); Python only allocates the outputs and workspaces and walks the layers.

The functions here take time-major tensors that the layers in pynn/nn/rnn.py have already
checked; they are the functional form of those layers (torch keeps the equivalents in torch._VF).
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple, Sequence

import torch
from torch.autograd.function import once_differentiable

from .. import _backend as B

# Nonlinearity codes of csrc/math/activation.h (ActKind).
TANH, RELU = 1, 2
NONLINEARITIES = {"tanh": TANH, "relu": RELU}

# Steps of gate / cell workspace an LSTM forward without autograd keeps (a ring; see
# csrc/ops/rnn.h). Enough steps that an input projection computed a ring at a time is still a
# tall GEMM, few enough that a long sequence needs no [T, B, 5H] buffers.
INFERENCE_RING_STEPS = 32


def _absent(ref: torch.Tensor) -> tuple:
    """The view of an absent optional tensor (no bias, no projection, a zero gradient)."""
    return (0, (0,), (1,), B._DTYPE_CODES[ref.dtype], 1 if ref.is_cuda else 0,
            ref.device.index or 0)


def _opt(t, ref):
    return B.view(t) if t is not None else _absent(ref)


def _workspaces(ref: torch.Tensor, keep: bool, shapes):
    """Tensors of the given shapes (None for None): fresh when a backward will read them (keep),
    else scratch valid inside the with block only (_backend.scratch)."""
    if keep:
        return contextlib.nullcontext([None if s is None else ref.new_empty(s) for s in shapes])
    return B.scratch(ref, *shapes)


def _step(t: torch.Tensor) -> tuple:
    """A [B, W] tensor seen as a one-step sequence [1, B, W], without making a torch view."""
    return _as_step(B.view(t))


def _as_step(v: tuple) -> tuple:
    """_step from the tensor's view, for a tensor the call also passes as itself."""
    return (v[0], (1,) + v[1], (0,) + v[2], v[3], v[4], v[5])


# ---- cells -------------------------------------------------------------------------------------

class LSTMCellFunction(torch.autograd.Function):
    """One LSTM step: two GEMMs and one fused gate kernel forward, the mirror image backward."""

    @staticmethod
    def forward(ctx, input, hx, cx, w_ih, w_hh, b_ih, b_hh):
        batch, hidden = cx.shape
        h = input.new_empty(batch, hidden)
        c = input.new_empty(batch, hidden)
        gates = input.new_empty(1, batch, 4 * hidden)
        absent = _absent(input)
        vh, vc = B.view(h), B.view(c)
        # h_n / c_n are the step's own output buffers: the kernel sees they alias and skips the copy.
        B.launch("lstm_forward", input, _step(input), B.view(hx), B.view(cx), B.view(w_ih),
                 B.view(w_hh), _opt(b_ih, input), _opt(b_hh, input), absent, _as_step(vh), vh,
                 vc, B.view(gates), _as_step(vc), absent, False, ctx is not None)
        if ctx is not None:
            ctx.save_for_backward(input, hx, cx, w_ih, w_hh, h, c)
            ctx.gates = gates
            ctx.has_bias = b_ih is not None
        return h, c

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h, grad_c):
        input, hx, cx, w_ih, w_hh, h, c = ctx.saved_tensors
        gates = ctx.gates
        # Named locals: a view tuple holds a raw pointer, so the tensor must outlive the launch.
        grad_h, grad_c = _dense(grad_h), _dense(grad_c)
        absent = _absent(input)
        dgates = torch.empty_like(gates)
        grad_input = torch.empty_like(input) if ctx.needs_input_grad[0] else None
        grad_hx, grad_cx = torch.empty_like(hx), torch.empty_like(cx)
        gw_ih = torch.empty_like(w_ih, memory_format=torch.contiguous_format)
        gw_hh = torch.empty_like(w_hh, memory_format=torch.contiguous_format)
        gb_ih = gb_hh = None
        if ctx.has_bias:
            gb_ih = input.new_empty(w_ih.shape[0])
            gb_hh = input.new_empty(w_ih.shape[0])
        B.launch("lstm_backward", input, _step(input), B.view(hx), B.view(cx), B.view(w_ih),
                 B.view(w_hh), absent, _step(h), B.view(gates), _step(c), absent,
                 _step(grad_h) if grad_h is not None else absent, absent, _opt(grad_c, input), B.view(dgates), absent, absent,
                 _step(grad_input) if grad_input is not None else absent, B.view(grad_hx),
                 B.view(grad_cx), B.view(gw_ih), B.view(gw_hh), _opt(gb_ih, input),
                 _opt(gb_hh, input), absent, False, False)
        return grad_input, grad_hx, grad_cx, gw_ih, gw_hh, gb_ih, gb_hh


class RNNCellFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, hx, w_ih, w_hh, b_ih, b_hh, kind: int):
        h = torch.empty_like(hx, memory_format=torch.contiguous_format)
        vh = B.view(h)
        B.launch("rnn_forward", input, _step(input), B.view(hx), B.view(w_ih), B.view(w_hh),
                 _opt(b_ih, input), _opt(b_hh, input), _as_step(vh), vh, kind, False)
        if ctx is not None:
            ctx.save_for_backward(input, hx, w_ih, w_hh, h)
            ctx.kind = kind
            ctx.has_bias = b_ih is not None
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h):
        input, hx, w_ih, w_hh, h = ctx.saved_tensors
        absent = _absent(input)
        grad_h = _dense(grad_h)
        dpre = torch.empty_like(h)
        grad_input = torch.empty_like(input) if ctx.needs_input_grad[0] else None
        grad_hx = torch.empty_like(hx)
        gw_ih = torch.empty_like(w_ih, memory_format=torch.contiguous_format)
        gw_hh = torch.empty_like(w_hh, memory_format=torch.contiguous_format)
        gb_ih = gb_hh = None
        if ctx.has_bias:
            gb_ih, gb_hh = input.new_empty(w_ih.shape[0]), input.new_empty(w_ih.shape[0])
        B.launch("rnn_backward", input, _step(input), B.view(hx), B.view(w_ih), B.view(w_hh),
                 _step(h), _step(grad_h), absent, _step(dpre),
                 _step(grad_input) if grad_input is not None else absent, B.view(grad_hx),
                 B.view(gw_ih), B.view(gw_hh), _opt(gb_ih, input), _opt(gb_hh, input), ctx.kind,
                 False, False)
        return grad_input, grad_hx, gw_ih, gw_hh, gb_ih, gb_hh, None


def _dense(t):
    """A gradient as the kernels read it: unit stride in the last dimension (an expanded
    gradient, e.g. of a sum, arrives with stride 0)."""
    if t is None:
        return None
    return t if t.stride(-1) == 1 and all(s != 0 for s in t.stride()) else t.contiguous()


def lstm_cell(input, hx, cx, w_ih, w_hh, b_ih=None, b_hh=None):
    """(h', c') of one LSTM step on 2-D [batch, features] tensors (torch._VF.lstm_cell)."""
    args = (_row_major(input), _row_major(hx), _row_major(cx), w_ih, w_hh, _row_major(b_ih),
            _row_major(b_hh))
    if _needs_graph(args):
        return B.apply(LSTMCellFunction, *args)
    return LSTMCellFunction.forward(None, *args)


def rnn_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity: str = "tanh"):
    """h' of one Elman RNN step on 2-D tensors (torch._VF.rnn_tanh_cell / rnn_relu_cell)."""
    args = (_row_major(input), _row_major(hx), w_ih, w_hh, _row_major(b_ih), _row_major(b_hh),
            NONLINEARITIES[nonlinearity])
    if _needs_graph(args):
        return B.apply(RNNCellFunction, *args)
    return RNNCellFunction.forward(None, *args)


def _needs_graph(args) -> bool:
    """Whether a cell step must record an autograd node. Without one (inference, no_grad) the
    forward runs directly: a step loop driven from Python then skips Function.apply's cost."""
    return torch.is_grad_enabled() and B._requires_grad(args)


def _row_major(t):
    """t with unit stride in its last dimension, as the cell kernels read x, h, c and biases.
    is_contiguous answers the common case in 60 ns, stride(-1) takes 170."""
    if t is None or t.is_contiguous():
        return t
    return t if t.dim() == 0 or t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()


# ---- sequences ---------------------------------------------------------------------------------

class RecurrentConfig(NamedTuple):
    mode: str            # "LSTM", "RNN_TANH" or "RNN_RELU"
    num_layers: int
    bidirectional: bool
    bias: bool
    hidden_size: int
    proj_size: int
    dropout: float       # between layers, applied only when training
    training: bool


def _layer_weights(cfg: RecurrentConfig, weights: Sequence[torch.Tensor], layer: int, d: int):
    """(w_ih, w_hh, b_ih, b_hh, w_hr) of one layer and direction, in torch's flat order."""
    per = 2 + 2 * cfg.bias + (cfg.proj_size > 0)
    ws = list(weights[(layer * (2 if cfg.bidirectional else 1) + d) * per:][:per])
    w_ih, w_hh = ws[0], ws[1]
    b_ih, b_hh = (ws[2], ws[3]) if cfg.bias else (None, None)
    w_hr = ws[-1] if cfg.proj_size > 0 else None
    return w_ih, w_hh, b_ih, b_hh, w_hr


class RecurrentFunction(torch.autograd.Function):
    """Every layer and direction of an RNN / LSTM over a whole time-major sequence.

    One node in the autograd graph for the whole stack: inter-layer dropout, the per-layer
    outputs and the gate workspaces stay inside it, and the backward walks the layers in
    reverse, one C++ call per layer and direction.
    """

    @staticmethod
    def forward(ctx, input, h0, c0, cfg: RecurrentConfig, *weights):
        lstm = cfg.mode == "LSTM"
        kind = RELU if cfg.mode == "RNN_RELU" else TANH
        D = 2 if cfg.bidirectional else 1
        T, batch, _ = input.shape
        H = cfg.hidden_size
        P = cfg.proj_size or H
        absent = _absent(input)
        # With no backward to come, a step's gates and cells are dead once the next step has
        # read them: the kernels take a ring of a few steps instead of [T, ...] workspaces,
        # and the rings are scratch that outlives no call.
        keep = any(ctx.needs_input_grad)
        slots = T if keep else min(T, INFERENCE_RING_STEPS)
        h_n = input.new_empty(cfg.num_layers * D, batch, P)
        c_n = input.new_empty(cfg.num_layers * D, batch, H) if lstm else input.new_empty(0)
        layers = []
        layer_in = input
        for layer in range(cfg.num_layers):
            out = input.new_empty(T, batch, D * P)
            work = []
            for d in range(D):
                k = layer * D + d
                w_ih, w_hh, b_ih, b_hh, w_hr = _layer_weights(cfg, weights, layer, d)
                y = out[:, :, d * P:(d + 1) * P]
                if lstm:
                    shapes = ((slots, batch, 4 * H), (slots, batch, H),
                              (slots, batch, H) if w_hr is not None else None)
                    with _workspaces(input, keep, shapes) as (gates, cs, hr):
                        B.launch("lstm_forward", input, B.view(layer_in), B.view(h0[k]),
                                 B.view(c0[k]), B.view(w_ih), B.view(w_hh), _opt(b_ih, input),
                                 _opt(b_hh, input), _opt(w_hr, input), B.view(y),
                                 B.view(h_n[k]), B.view(c_n[k]), B.view(gates), B.view(cs),
                                 _opt(hr, input), d == 1, keep)
                    work.append((gates, cs, hr) if keep else None)
                else:
                    B.launch("rnn_forward", input, B.view(layer_in), B.view(h0[k]),
                             B.view(w_ih), B.view(w_hh), _opt(b_ih, input), _opt(b_hh, input),
                             B.view(y), B.view(h_n[k]), kind, d == 1)
                    work.append(None)
            mask = None
            next_in = out
            if layer + 1 < cfg.num_layers and cfg.training and cfg.dropout > 0:
                # torch draws the mask; our kernel applies it, forward and backward.
                mask = torch.empty_like(out).bernoulli_(1.0 - cfg.dropout)
                next_in = torch.empty_like(out)
                B.launch("rnn_dropout", out, B.view(out), B.view(mask), B.view(next_in),
                         _dropout_scale(cfg.dropout))
            layers.append([layer_in, out, work, mask])
            layer_in = next_in
        # The returned output and the user's input go through save_for_backward (version checks,
        # and no ctx -> output -> grad_fn -> ctx cycle); the rest is internal to this node.
        layers[0][0] = None
        layers[-1][1] = None
        ctx.cfg = cfg
        ctx.layers = layers
        final = out
        ctx.save_for_backward(input, h0, c0, final, *weights)
        if not lstm:
            ctx.mark_non_differentiable(c_n)
        return final, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_hn, grad_cn):
        cfg = ctx.cfg
        input, h0, c0, final, *weights = ctx.saved_tensors
        lstm = cfg.mode == "LSTM"
        kind = RELU if cfg.mode == "RNN_RELU" else TANH
        D = 2 if cfg.bidirectional else 1
        T, batch, _ = input.shape
        H = cfg.hidden_size
        P = cfg.proj_size or H
        absent = _absent(input)
        grad_out, grad_hn = _dense(grad_out), _dense(grad_hn)
        grad_cn = _dense(grad_cn) if lstm else None
        grad_h0 = torch.empty_like(h0)
        grad_c0 = torch.empty_like(c0) if lstm else None
        proj = lstm and cfg.proj_size > 0
        grad_w = [torch.empty_like(w, memory_format=torch.contiguous_format) for w in weights]
        # The gate gradients (and dy, dhr with a projection) are dead once the layer is done.
        with B.scratch(input, (T, batch, (4 if lstm else 1) * H),
                       (T, batch, P) if proj else None,
                       (batch, H) if proj else None) as (dgates, dy, dhr):
            per = 2 + 2 * cfg.bias + (cfg.proj_size > 0)
            grad_input = None
            g = grad_out
            for layer in reversed(range(cfg.num_layers)):
                layer_in, out, work, mask = ctx.layers[layer]
                layer_in = input if layer == 0 else layer_in
                out = final if layer == cfg.num_layers - 1 else out
                want_gx = layer > 0 or ctx.needs_input_grad[0]
                gx = (torch.empty_like(layer_in, memory_format=torch.contiguous_format)
                      if want_gx else None)
                for d in range(D):
                    k = layer * D + d
                    w_ih, w_hh, _, _, w_hr = _layer_weights(cfg, weights, layer, d)
                    gws = grad_w[k * per:(k + 1) * per]
                    gb_ih, gb_hh = (gws[2], gws[3]) if cfg.bias else (None, None)
                    gy = _opt(g[:, :, d * P:(d + 1) * P] if g is not None else None, input)
                    ghn = _opt(grad_hn[k] if grad_hn is not None else None, input)
                    gx_view = B.view(gx) if gx is not None else absent
                    if lstm:
                        gates, cs, hr = work[d]
                        gcn = _opt(grad_cn[k] if grad_cn is not None else None, input)
                        B.launch("lstm_backward", input, B.view(layer_in), B.view(h0[k]),
                                 B.view(c0[k]), B.view(w_ih), B.view(w_hh), _opt(w_hr, input),
                                 B.view(out[:, :, d * P:(d + 1) * P]), B.view(gates),
                                 B.view(cs), _opt(hr, input), gy, ghn, gcn, B.view(dgates),
                                 _opt(dy, input), _opt(dhr, input), gx_view,
                                 B.view(grad_h0[k]), B.view(grad_c0[k]), B.view(gws[0]),
                                 B.view(gws[1]), _opt(gb_ih, input), _opt(gb_hh, input),
                                 _opt(gws[-1] if proj else None, input), d == 1, d == 1)
                    else:
                        B.launch("rnn_backward", input, B.view(layer_in), B.view(h0[k]),
                                 B.view(w_ih), B.view(w_hh),
                                 B.view(out[:, :, d * P:(d + 1) * P]),
                                 gy, ghn, B.view(dgates), gx_view, B.view(grad_h0[k]),
                                 B.view(gws[0]), B.view(gws[1]), _opt(gb_ih, input),
                                 _opt(gb_hh, input), kind, d == 1, d == 1)
                if layer > 0:
                    _, _, _, below_mask = ctx.layers[layer - 1]
                    if below_mask is not None:
                        g = torch.empty_like(gx)
                        B.launch("rnn_dropout", gx, B.view(gx), B.view(below_mask), B.view(g),
                                 _dropout_scale(cfg.dropout))
                    else:
                        g = gx
                else:
                    grad_input = gx
        return (grad_input, grad_h0, grad_c0, None, *grad_w)


def _dropout_scale(p: float) -> float:
    return 0.0 if p >= 1.0 else 1.0 / (1.0 - p)


def recurrent(input, h0, c0, weights: Sequence[torch.Tensor], cfg: RecurrentConfig):
    """(output, h_n, c_n) of a whole RNN / LSTM stack on a time-major [T, B, I] input.

    h0: [layers * directions, B, proj_size or hidden_size]; c0 (LSTM): [..., B, hidden_size];
    weights: torch's flat order (w_ih, w_hh[, b_ih, b_hh][, w_hr] per layer and direction).
    For RNN modes c_n is an empty placeholder.
    """
    if not input.is_contiguous():
        input = input.contiguous()
    h0 = h0.contiguous()
    c0 = c0.contiguous() if c0 is not None else input.new_empty(0)
    return B.apply(RecurrentFunction, input, h0, c0, cfg, *weights)
