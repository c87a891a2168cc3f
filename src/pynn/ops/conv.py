"""conv2d: GEMM-based kernels (csrc/cpu/conv.cpp, csrc/cuda/conv.cu, index math in
csrc/math/conv.h) behind an autograd Function and torch.nn.functional.conv2d's signature.

The kernels take contiguous NCHW tensors; channels_last and other layouts are made contiguous
here, and the output is returned in the memory format torch would give (channels_last when the
input or the weight is channels_last, float64 on cuda excepted).

Workspaces are allocated here with torch and handed to the kernels:
- CPU forward (except 1x1, stride 1, unpadded), and the input gradient at stride 1 with >= 8
  channels per group (a forward convolution of grad_output): implicit GEMM. [slots, kcol*tile + 16 (+ phase copy at stride > 1)] column panels packed
  from the input, one row per thread working at once, kcol*tile <= max(_CPU_PANEL_ELEMS,
  _CPU_MIN_COLS*kcol) (384 KiB of float32, to stay in L2), plus the packed weights
  (groups * (rows + 7) * kcol, about the weight's size). The phase copy (stride > 1 along W)
  holds the input rows one tile reads, at most C/groups * H * (W + stride - 1).
- CPU weight gradient and strided input gradient: [slots, C/groups*KH*KW*tile_cols (+ phase
  copy for the weight gradient)], tile_cols chosen so that a row holds about _CPU_TILE_ELEMS
  elements (1 MiB of float32) and never fewer than _CPU_MIN_COLS output positions. The
  weight gradient adds [slots, Cout, C/groups*KH*KW] partial sums when slots > 1.
- CUDA: [nb, C*KH*KW, OH*OW], the columns of nb samples at once, nb chosen so this stays under
  _CUDA_WS_BYTES (at least one sample).
A depthwise convolution (one input channel per group) runs direct loops without columns (on
AVX-512 CPUs in float32 with unit stride along W, the vector kernels of conv_depthwise.h), and
a 1x1, stride-1, unpadded one reads the input as its own column matrix (CPU forward: gemm_cpu
per tile, no workspace).

Other CPU paths, chosen in the core (csrc/cpu/conv.cpp, conv_direct.h) with their own bounded
scratch:
- direct kernels for float32 layers with few channels on AVX-512 CPUs (at most 16 in and 16 out,
  stride 1: all three passes; at most 4 in and 16-64 out, e.g. RGB first layers: the forward).
  conv2d_direct_cpu tells Python which passes take them, and it allocates no workspace for those.
- the blocked kernel (conv_blocked.h) for float32 layers on AVX-512 CPUs with at least 16 input
  and 32 output channels per group that fill their 16-channel blocks and 32-channel panels (all
  of ResNet's and VGG's 3x3 layers, any stride, dilation or padding): output channels as the
  vector lanes, positions of the whole batch read from the input in place or from a
  16-channel-blocked copy of it. The forward, the input gradient (a convolution of
  grad_output at stride 1; at stride s x t, one per phase of grad_input, each with the kernel
  taps that reach it, written into every s-th row and t-th column; not for a 1x1 at stride >
  1) and the weight gradient (with at least 8 blocks of work); 1x1 kernels only up to 14 x 14
  output positions. Python allocates no workspace for these passes either (conv2d_direct_cpu
  says which).
- at most 100 output positions per sample (deep 7x7 layers), forward and stride-1 input
  gradient: one GEMM with positions as rows over a chunk of samples.
- other stride-1 float32 layers on AVX-512 CPUs whose padded rows waste at most 1 position in 8
  (3x3 at 56, 28 and 14), forward and input gradient: the padded input read in place, with no
  column panels (flat_conv).
The implicit GEMM's workspace is still allocated for the last two but never touched.
"""
from __future__ import annotations

import math
from numbers import Integral

import torch
from torch.autograd.function import once_differentiable

from .. import _backend as B

_CPU_TILE_ELEMS = 1 << 18
_CPU_MIN_COLS = 32
# Column panels of one implicit-GEMM tile: 96 Ki elements (384 KiB of float32) stay in the 1 MiB
# L2 next to the weight panels while every output channel's row of the tile is computed.
_CPU_PANEL_ELEMS = 96 << 10
_CUDA_WS_BYTES = 128 << 20

OP = "conv2d"


# ---- argument normalisation (torch's rules and messages, naming the argument) ----

def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, Integral) and not isinstance(value, bool):
        vals = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and all(
            isinstance(v, Integral) and not isinstance(v, bool) for v in value):
        if len(value) == 1:
            vals = (int(value[0]),) * 2
        elif len(value) == 2:
            vals = (int(value[0]), int(value[1]))
        else:
            raise ValueError(f"{OP}: expected {name} to be a single integer or a tuple of 2 "
                             f"integers, got {name}={tuple(value)}")
    else:
        raise TypeError(f"{OP}: {name} must be an int or a tuple of 2 ints, got {value!r}")
    if min(vals) < minimum:
        what = "negative" if minimum == 0 else "non-positive"
        raise ValueError(f"{OP}: {what} {name} is not supported, got {name}={vals}")
    return vals


def _padding(padding, kernel: tuple[int, int], stride: tuple[int, int],
             dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for an int, a pair, 'valid' or 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"{OP}: invalid padding string {padding!r}, expected 'same' or 'valid'")
        if stride != (1, 1):
            # the same condition and message as torch (which raises RuntimeError here)
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        out = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            # torch puts the odd extra row/column at the end (bottom/right)
            out += [total // 2, total - total // 2]
        return tuple(out)
    ph, pw = _pair(padding, "padding", 0)
    return (ph, ph, pw, pw)


def _is_channels_last(t: torch.Tensor) -> bool:
    return (t.dim() == 4 and not t.is_contiguous()
            and t.is_contiguous(memory_format=torch.channels_last))


def out_size(n: int, pad_total: int, k: int, s: int, d: int) -> int:
    return (n + pad_total - d * (k - 1) - 1) // s + 1


# ---- workspaces ----

def _threads() -> int:
    B._sync_threads()
    return B.get_num_threads()


def _needs_columns(weight, stride, pads, groups) -> bool:
    """False when the kernels work without a column workspace: a 1x1, stride-1, unpadded
    convolution (the input is its own column matrix) or a depthwise one (direct loops)."""
    pointwise = weight.shape[2:] == (1, 1) and stride == (1, 1) and pads == (0, 0, 0, 0)
    depthwise = weight.shape[1] == 1 and groups > 1
    return not (pointwise or depthwise)


def _cpu_workspace(ref, n_outer: int, kcol: int, P: int, columns: bool,
                   split_tiles: bool = True, phase=None):
    """(tile_cols, slots, workspace) for the CPU kernels.

    Work items are n_outer (samples x groups) times the tiles of P output positions, or just
    n_outer when tiles of one item may not run in parallel (the input gradient). One slot per
    thread that can be busy; a single slot lets the kernel parallelise inside the GEMM instead.
    phase: the weight gradient's (cin_g, H, W, OW, KH, sh, sw, dh), whose im2col at stride > 1
    reads a phase copy of the tile's input rows kept after the column tile (_phase_elems).
    """
    tile = min(max(P, 1), max(_CPU_MIN_COLS, _CPU_TILE_ELEMS // max(kcol, 1)))
    items = n_outer * (math.ceil(P / tile) if split_tiles else 1)
    slots = max(1, min(_threads(), items))
    extra = _phase_elems(*phase, tile) if phase is not None and columns else 0
    ws = torch.empty((slots, kcol * tile + extra if columns else 0), dtype=ref.dtype,
                     device=ref.device)
    return tile, slots, ws


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def _phase_elems(cin_g, H, W, OW, KH, sh, sw, dh, tile) -> int:
    """csrc/cpu/conv.cpp phase_elems: at stride > 1 along W a slot also holds the input rows one
    tile reads, each split into its sw phases (at most cin_g * H * (W + sw - 1) elements)."""
    if sw == 1:
        return 0
    rows = min(H, ((tile - 1) // OW + 1) * sh + (KH - 1) * dh + 1)
    return cin_g * rows * sw * math.ceil(W / sw)


def _cpu_panel_workspace(ref, n_outer: int, kcol: int, P: int, rows: int, groups: int,
                         phase=None):
    """(tile_cols, workspace, packed_weight) for the CPU implicit GEMM (forward, and the input
    gradient at stride 1): each slot holds one tile's column panels, packed from the input by
    the kernel, so a row is kcol * tile_cols (rounded up to the widest panel, 32) + 16 elements
    of alignment slack, with kcol * tile_cols <= max(_CPU_PANEL_ELEMS, _CPU_MIN_COLS * kcol).
    packed_weight holds the GEMM's A panels: `rows` (output channels per group) rounded up to
    the panel height (at most 8, so rows + 7 bound it), times kcol, per group."""
    tile = min(max(P, 1), max(_CPU_MIN_COLS,
                              min(_CPU_TILE_ELEMS, _CPU_PANEL_ELEMS) // max(kcol, 1)))
    if 32 <= tile < P:
        tile = tile // 32 * 32  # whole panels
    items = n_outer * math.ceil(P / tile)
    slots = max(1, min(_threads(), items))
    extra = _phase_elems(*phase, tile) if phase is not None else 0
    ws = torch.empty((slots, kcol * _round_up(tile, 32) + 16 + extra), dtype=ref.dtype,
                     device=ref.device)
    packed = torch.empty(groups * (rows + 7) * kcol, dtype=ref.dtype, device=ref.device)
    return tile, ws, packed


def _cuda_workspace(ref, n, ckk, P, columns):
    if not columns or n == 0:
        return torch.empty((1, 0), dtype=ref.dtype, device=ref.device)
    per_sample = ckk * P * ref.element_size()
    nb = max(1, min(n, _CUDA_WS_BYTES // max(per_sample, 1)))
    return torch.empty((nb, ckk * P), dtype=ref.dtype, device=ref.device)


# ---- autograd ----

class Conv2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, weight, bias, stride, pads, dilation, groups, channels_last):
        x = input.contiguous()
        w = weight.contiguous()
        b = bias.contiguous() if bias is not None else None
        N, C, H, W = x.shape
        Cout, _, KH, KW = w.shape
        OH = out_size(H, pads[0] + pads[1], KH, stride[0], dilation[0])
        OW = out_size(W, pads[2] + pads[3], KW, stride[1], dilation[1])
        y = torch.empty((N, Cout, OH, OW), dtype=x.dtype, device=x.device)
        columns = _needs_columns(w, stride, pads, groups)
        geom = (stride, pads, dilation, groups)
        bview = B.view(b) if b is not None else B.view(y.new_empty(0))
        if x.is_cuda:
            ws = _cuda_workspace(x, N, C * KH * KW, OH * OW, columns)
            B.launch("conv2d_forward", x, B.view(x), B.view(w), bview, b is not None, B.view(y),
                     B.view(ws), *geom)
        else:
            depthwise = w.shape[1] == 1 and groups > 1
            if depthwise or B._C.conv2d_direct_cpu(B.view(x), B.view(w), B.view(y), *geom, 0):
                tile, ws, packed = 1, x.new_empty((1, 0)), x.new_empty(0)
            elif not columns:  # 1x1, stride 1, unpadded: gemm_cpu straight from the input
                tile, _, ws = _cpu_workspace(x, N * groups, C // groups, OH * OW, False)
                packed = x.new_empty(0)
            else:
                phase = (C // groups, H, W, OW, KH, stride[0], stride[1], dilation[0])
                tile, ws, packed = _cpu_panel_workspace(x, N * groups, (C // groups) * KH * KW,
                                                        OH * OW, Cout // groups, groups, phase)
            B.launch("conv2d_forward", x, B.view(x), B.view(w), bview, b is not None, B.view(y),
                     B.view(ws), B.view(packed), *geom, tile)
        ctx.save_for_backward(x, w)
        ctx.geom = geom
        ctx.has_bias = b is not None
        ctx.channels_last = channels_last
        if channels_last:
            y = y.contiguous(memory_format=torch.channels_last)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x, w = ctx.saved_tensors
        stride, pads, dilation, groups = ctx.geom
        gy = grad_output.contiguous()
        N, C, H, W = x.shape
        Cout, cin_g, KH, KW = w.shape
        P = gy.shape[2] * gy.shape[3]
        columns = _needs_columns(w, stride, pads, groups)
        kcol = cin_g * KH * KW
        grad_input = grad_weight = grad_bias = None
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        # on the GPU both gradients use one column workspace, in turn on the same stream
        cuda_ws = (_cuda_workspace(x, N, C * KH * KW, P, columns)
                   if x.is_cuda and (need_x or need_w) else None)
        # the CPU's direct and blocked kernels need no workspace
        def direct(pass_):  # 1: input gradient, 2: weight gradient
            return not x.is_cuda and B._C.conv2d_direct_cpu(B.view(x), B.view(w), B.view(gy),
                                                            *ctx.geom, pass_)
        if need_x:
            grad_input = torch.empty_like(x)
            if x.is_cuda:
                B.launch("conv2d_backward_input", x, B.view(gy), B.view(w), B.view(grad_input),
                         B.view(cuda_ws), *ctx.geom)
            else:
                depthwise = cin_g == 1 and groups > 1
                if direct(1):
                    tile, ws, packed = 1, x.new_empty((1, 0)), x.new_empty(0)
                elif not depthwise and B._C.conv2d_input_grad_is_conv(stride, pads, dilation,
                                                                       KH, KW, cin_g):
                    tile, ws, packed = _cpu_panel_workspace(
                        x, N * groups, (Cout // groups) * KH * KW, H * W, cin_g, groups)
                else:
                    tile, _, ws = _cpu_workspace(x, N * groups, kcol, P, columns,
                                                 split_tiles=False)
                    packed = x.new_empty(0)
                B.launch("conv2d_backward_input", x, B.view(gy), B.view(w), B.view(grad_input),
                         B.view(ws), B.view(packed), *ctx.geom, tile)
            if ctx.channels_last:
                grad_input = grad_input.contiguous(memory_format=torch.channels_last)
        if need_w:
            grad_weight = torch.empty_like(w)
            if x.is_cuda:
                B.launch("conv2d_backward_weight", x, B.view(gy), B.view(x), B.view(grad_weight),
                         B.view(cuda_ws), *ctx.geom)
            else:
                if direct(2):
                    tile, ws, partial = 1, x.new_empty((1, 0)), x.new_empty(0)
                else:
                    phase = (cin_g, H, W, gy.shape[3], KH, stride[0], stride[1], dilation[0])
                    tile, slots, ws = _cpu_workspace(x, N * groups, kcol, P, columns, phase=phase)
                    # per-slot sums of grad_weight (the depthwise loops need none)
                    depthwise = cin_g == 1 and groups > 1
                    partial = (torch.empty((slots, Cout, kcol), dtype=x.dtype)
                               if slots > 1 and not depthwise else x.new_empty(0))
                B.launch("conv2d_backward_weight", x, B.view(gy), B.view(x), B.view(grad_weight),
                         B.view(ws), B.view(partial), *ctx.geom, tile)
        if need_b and ctx.has_bias:
            grad_bias = torch.empty(Cout, dtype=x.dtype, device=x.device)
            B.launch("conv2d_backward_bias", x, B.view(gy), B.view(grad_bias))
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


# ---- functional ----

def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d on pynn's kernels (float32/float64, cpu/cuda)."""
    B.check_tensor(input, OP, "input")
    B.check_tensor(weight, OP, "weight")
    if bias is not None:
        B.check_tensor(bias, OP, "bias")
    B.check_same(OP, input=input, weight=weight, bias=bias)
    if input.dim() not in (3, 4):
        raise ValueError(f"{OP}: expected a 3-D (unbatched) or 4-D (batched) input, got input "
                         f"of shape {tuple(input.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"{OP}: weight must be 4-D [out_channels, in_channels/groups, kH, kW], "
                         f"got shape {tuple(weight.shape)}")
    if not isinstance(groups, Integral) or isinstance(groups, bool) or groups <= 0:
        raise ValueError(f"{OP}: groups must be a positive integer, got {groups!r}")
    groups = int(groups)
    stride = _pair(stride, "stride", 1)
    dilation = _pair(dilation, "dilation", 1)
    Cout, cin_g, KH, KW = weight.shape
    pads = _padding(padding, (KH, KW), stride, dilation)
    if Cout == 0:
        raise ValueError(f"{OP}: weight {tuple(weight.shape)} has no output channels")
    if KH == 0 or KW == 0:
        raise ValueError(f"{OP}: weight {tuple(weight.shape)} has an empty kernel")
    if Cout % groups:
        raise ValueError(f"{OP}: groups={groups} must divide the output channels of weight "
                         f"{tuple(weight.shape)}")
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    C, H, W = x.shape[1:]
    if C == 0:
        # torch answers with a 0-channel output whatever the weight holds; refuse that instead
        raise ValueError(f"{OP}: input has no channels (shape {tuple(input.shape)}); "
                         "zero-channel convolutions are not supported")
    if C != cin_g * groups:
        raise ValueError(f"{OP}: given groups={groups} and weight of shape "
                         f"{tuple(weight.shape)}, input should have {cin_g * groups} channels, "
                         f"got input of shape {tuple(input.shape)}")
    if bias is not None and tuple(bias.shape) != (Cout,):
        raise ValueError(f"{OP}: bias must have shape ({Cout},), got {tuple(bias.shape)}")
    oh = out_size(H, pads[0] + pads[1], KH, stride[0], dilation[0])
    ow = out_size(W, pads[2] + pads[3], KW, stride[1], dilation[1])
    if oh <= 0 or ow <= 0:
        raise ValueError(f"{OP}: padded input of size ({H + pads[0] + pads[1]} x "
                         f"{W + pads[2] + pads[3]}) is smaller than the dilated kernel "
                         f"({dilation[0] * (KH - 1) + 1} x {dilation[1] * (KW - 1) + 1}); "
                         f"input shape {tuple(input.shape)}")
    # torch's rule: channels_last out when the input or the weight is channels_last, except for
    # float64 on cuda, where torch (cuDNN has no NHWC double kernels) returns NCHW.
    channels_last = (not unbatched and (_is_channels_last(x) or _is_channels_last(weight))
                     and not (x.is_cuda and x.dtype == torch.float64))
    y = B.apply(Conv2dFunction, x, weight, bias, stride, pads, dilation, groups, channels_last)
    return y.squeeze(0) if unbatched else y
