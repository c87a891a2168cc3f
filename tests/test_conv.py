"""conv2d against torch: output and the three gradients over a grid of shapes and arguments,
layouts, workspace tiling, gradcheck, the drop-in layer and bad arguments."""
import os
import warnings

import pytest
import torch
import torch.nn.functional as TF

import pynn
import pynn.functional as F
import pynn.nn as pnn
from pynn import _backend
from pynn.ops import conv as conv_op
from conftest import assert_close
from helpers import clone_leaf, non_contiguous

# (id, input shape, weight shape, kwargs)
CASES = [
    ("basic", (2, 3, 7, 9), (4, 3, 3, 3), {}),
    ("batch1_pad1", (1, 3, 8, 8), (5, 3, 3, 3), dict(padding=1)),
    ("stride_gt_kernel", (2, 2, 11, 10), (3, 2, 2, 2), dict(stride=3)),
    ("stride_pad_tuple", (2, 3, 9, 8), (4, 3, 3, 5), dict(stride=(2, 1), padding=(1, 2))),
    ("dilation", (2, 3, 12, 11), (4, 3, 3, 3), dict(dilation=2, padding=2)),
    ("dilation_tuple", (1, 2, 10, 9), (2, 2, 2, 3), dict(dilation=(3, 1), stride=(1, 2))),
    ("kernel_fills_padded", (2, 3, 5, 6), (2, 3, 7, 8), dict(padding=1)),
    ("window_in_padding", (1, 2, 3, 3), (2, 2, 3, 3), dict(padding=3, stride=2)),
    ("depthwise", (2, 6, 9, 9), (6, 1, 3, 3), dict(groups=6, padding=1)),
    ("depthwise_mult", (2, 4, 8, 7), (8, 1, 3, 3), dict(groups=4, stride=2)),
    ("depthwise_same_dilated", (2, 3, 9, 8), (6, 1, 4, 3),
     dict(groups=3, padding="same", dilation=(1, 2))),
    ("depthwise_stride_pad", (1, 5, 10, 9), (5, 1, 5, 3), dict(groups=5, stride=(3, 2), padding=(2, 1))),
    ("groups2", (2, 4, 7, 7), (6, 2, 3, 3), dict(groups=2, padding=1)),
    ("1x1", (2, 5, 6, 7), (3, 5, 1, 1), {}),
    ("1x1_stride2", (2, 5, 7, 7), (3, 5, 1, 1), dict(stride=2)),
    ("1x1_groups2", (2, 4, 5, 5), (6, 2, 1, 1), dict(groups=2)),
    ("1x1_pad", (1, 3, 4, 4), (2, 3, 1, 1), dict(padding=1)),
    ("same_odd", (2, 3, 8, 9), (4, 3, 3, 3), dict(padding="same")),
    ("same_even", (2, 3, 8, 9), (4, 3, 4, 2), dict(padding="same")),
    ("same_even_dilated", (2, 3, 8, 9), (4, 3, 2, 2), dict(padding="same", dilation=(2, 3))),
    ("valid", (2, 3, 8, 9), (4, 3, 3, 3), dict(padding="valid")),
    ("multi_tile", (2, 8, 40, 41), (8, 8, 5, 5), dict(padding=2)),
    ("single_pixel", (3, 2, 1, 1), (4, 2, 1, 1), {}),
]
IDS = [c[0] for c in CASES]


def run_both(x, w, b, kw, grad=None):
    """Forward and all gradients for pynn and torch from identical leaves."""
    xa, wa = clone_leaf(x), clone_leaf(w)
    xb, wb = clone_leaf(x), clone_leaf(w)
    ba = clone_leaf(b) if b is not None else None
    bb = clone_leaf(b) if b is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about 'same' with even kernels
        ya = F.conv2d(xa, wa, ba, **kw)
        yb = TF.conv2d(xb, wb, bb, **kw)
    g = torch.randn_like(yb) if grad is None else grad(yb)
    ya.backward(g)
    yb.backward(g)
    return (ya, xa, wa, ba), (yb, xb, wb, bb)


def check_pair(ours, ref, reduce_len):
    ya, xa, wa, ba = ours
    yb, xb, wb, bb = ref
    assert ya.shape == yb.shape
    assert_close(ya, yb, scale=max(1.0, reduce_len ** 0.5))
    assert_close(xa.grad, xb.grad, scale=max(1.0, reduce_len ** 0.5))
    # the weight and bias gradients sum over the batch and every output position
    n = yb.numel() / max(yb.shape[1], 1)
    assert_close(wa.grad, wb.grad, scale=max(1.0, n ** 0.5))
    if ba is not None:
        assert_close(ba.grad, bb.grad, scale=max(1.0, n ** 0.5))


@pytest.mark.parametrize("name,xs,ws,kw", CASES, ids=IDS)
def test_parity_with_torch(name, xs, ws, kw, device, dtype):
    x = torch.randn(xs, dtype=dtype, device=device)
    w = torch.randn(ws, dtype=dtype, device=device)
    b = torch.randn(ws[0], dtype=dtype, device=device)
    ours, ref = run_both(x, w, b, kw)
    check_pair(ours, ref, ws[1] * ws[2] * ws[3])


def case(name):
    return next(c for c in CASES if c[0] == name)


@pytest.mark.parametrize("name,xs,ws,kw", [case("batch1_pad1"), case("depthwise"), case("1x1")],
                         ids=["pad", "dw", "1x1"])
def test_no_bias(name, xs, ws, kw, device, dtype):
    x = torch.randn(xs, dtype=dtype, device=device)
    w = torch.randn(ws, dtype=dtype, device=device)
    ours, ref = run_both(x, w, None, kw)
    check_pair(ours, ref, ws[1] * ws[2] * ws[3])


@pytest.fixture
def pool_threads():
    """Sets pynn's pool size for one test, then goes back to following torch."""
    def set_n(n):
        _backend.set_num_threads(n)
    yield set_n
    _backend._user_threads = None
    _backend._synced_threads = -1
    _backend._sync_threads()


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("tiny_tiles", [False, True], ids=["tiles", "tiny_tiles"])
@pytest.mark.parametrize("name,xs,ws,kw", [case(n) for n in (
    "stride_pad_tuple", "groups2", "1x1_groups2", "same_even_dilated", "depthwise_mult")],
    ids=["stride_pad", "groups2", "1x1_g2", "same_even_dil", "dw"])
def test_work_split(name, xs, ws, kw, threads, tiny_tiles, monkeypatch, pool_threads):
    """Slots, tiles that end mid-row and the per-slot weight-gradient sums give torch's answer
    whatever the pool size (one slot lets the GEMM use the pool instead)."""
    pool_threads(threads)
    if tiny_tiles:
        monkeypatch.setattr(conv_op, "_CPU_TILE_ELEMS", 1)
        monkeypatch.setattr(conv_op, "_CPU_MIN_COLS", 5)
    x = torch.randn(xs, dtype=torch.float64)
    w = torch.randn(ws, dtype=torch.float64)
    b = torch.randn(ws[0], dtype=torch.float64)
    ours, ref = run_both(x, w, b, kw)
    check_pair(ours, ref, 1)


def test_larger_batch_many_slots(device):
    x = torch.randn(9, 16, 13, 13, device=device)
    w = torch.randn(24, 16, 3, 3, device=device)
    b = torch.randn(24, device=device)
    ours, ref = run_both(x, w, b, dict(padding=1, stride=1))
    check_pair(ours, ref, 16 * 9)


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "strided_slice",
                                    "channels_last_weight"])
def test_layouts(layout, device, dtype):
    x = torch.randn(2, 4, 9, 8, dtype=dtype, device=device)
    w = torch.randn(6, 4, 3, 3, dtype=dtype, device=device)
    b = torch.randn(6, dtype=dtype, device=device)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = non_contiguous(x)
    elif layout == "strided_slice":
        x = torch.randn(3, 8, 12, 20, dtype=dtype, device=device)[::2, 1::2, ::1, 1::2]
    else:
        w = w.to(memory_format=torch.channels_last)
    assert not x.is_contiguous() or not w.is_contiguous()
    ours, ref = run_both(x, w, b, dict(padding=1, stride=(1, 2)))
    check_pair(ours, ref, 36)
    ya, yb = ours[0], ref[0]
    # the output takes the memory format torch gives it
    cl = torch.channels_last
    assert ya.is_contiguous(memory_format=cl) == yb.is_contiguous(memory_format=cl)
    assert ya.is_contiguous() == yb.is_contiguous()


def test_expanded_and_channels_last_grad_output(device):
    x = torch.randn(2, 3, 6, 6, device=device)
    w = torch.randn(4, 3, 3, 3, device=device)
    b = torch.randn(4, device=device)
    # d(sum)/dy arrives as an expanded (stride-0) tensor
    ours, ref = run_both(x, w, b, dict(padding=1), grad=lambda y: torch.ones(1, device=device)
                         .expand_as(y))
    check_pair(ours, ref, 27)
    ours, ref = run_both(x, w, b, dict(padding=1), grad=lambda y: torch.randn_like(y).to(
        memory_format=torch.channels_last))
    check_pair(ours, ref, 27)


@pytest.mark.parametrize("kw", [dict(padding=1), dict(padding="same", groups=2)])
def test_unbatched(kw, device, dtype):
    x = torch.randn(4, 7, 6, dtype=dtype, device=device)
    w = torch.randn(6, 4 // kw.get("groups", 1), 3, 3, dtype=dtype, device=device)
    b = torch.randn(6, dtype=dtype, device=device)
    ours, ref = run_both(x, w, b, kw)
    assert ours[0].dim() == 3
    check_pair(ours, ref, 36)


def test_zero_batch(device, dtype):
    x = torch.randn(0, 3, 7, 7, dtype=dtype, device=device)
    w = torch.randn(4, 3, 3, 3, dtype=dtype, device=device)
    b = torch.randn(4, dtype=dtype, device=device)
    ours, ref = run_both(x, w, b, dict(padding=1))
    assert ours[0].shape == (0, 4, 7, 7)
    check_pair(ours, ref, 1)
    assert (ours[2].grad == 0).all() and (ours[3].grad == 0).all()


def test_zero_input_channels_is_refused(device):
    # torch returns an output with 0 channels here whatever the weight says; we refuse instead
    x = torch.randn(2, 0, 5, 5, device=device)
    w = torch.randn(3, 0, 3, 3, device=device)
    with pytest.raises(ValueError, match="input has no channels"):
        F.conv2d(x, w)


def test_nan_and_inf_propagate(device):
    x = torch.randn(1, 2, 5, 5, device=device)
    x[0, 0, 2, 2] = float("nan")
    x[0, 1, 0, 0] = float("inf")
    w = torch.randn(3, 2, 3, 3, device=device)
    torch.testing.assert_close(F.conv2d(x, w, padding=1), TF.conv2d(x, w, padding=1),
                               equal_nan=True)


@pytest.mark.parametrize("kw,xs,ws", [
    (dict(stride=2, padding=1), (2, 2, 5, 6), (3, 2, 3, 2)),
    (dict(dilation=2, groups=2, padding=(2, 1)), (1, 4, 6, 5), (4, 2, 2, 3)),
    (dict(padding="same"), (2, 2, 4, 5), (2, 2, 2, 3)),
    (dict(groups=3), (2, 3, 4, 4), (3, 1, 1, 1)),
    (dict(groups=2, stride=2, padding=(1, 2), dilation=(2, 1)), (2, 2, 6, 5), (4, 1, 3, 2)),
])
def test_gradcheck(kw, xs, ws, device):
    x = torch.randn(xs, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(ws, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(ws[0], dtype=torch.float64, device=device, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.autograd.gradcheck(lambda x, w, b: F.conv2d(x, w, b, **kw), (x, w, b))


# ---- the layer ----

LAYER_ARGS = [
    dict(in_channels=3, out_channels=6, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0),
         dilation=(1, 2), groups=2, bias=False),
    dict(in_channels=4, out_channels=4, kernel_size=4, padding="same", groups=4),
    dict(in_channels=3, out_channels=5, kernel_size=3, padding=2, padding_mode="reflect"),
    dict(in_channels=3, out_channels=5, kernel_size=(3, 4), padding="same",
         padding_mode="circular"),
    dict(in_channels=3, out_channels=5, kernel_size=3, stride=2, padding=1,
         padding_mode="replicate"),
    dict(in_channels=3, out_channels=2, kernel_size=1, padding="valid"),
]


@pytest.mark.parametrize("args", LAYER_ARGS, ids=range(len(LAYER_ARGS)))
def test_layer_loads_torch_state_dict(args, device, dtype):
    ref = torch.nn.Conv2d(**args, device=device, dtype=dtype)
    ours = pnn.Conv2d(**args, device=device, dtype=dtype)
    assert repr(ours) == repr(ref)
    assert list(ours.state_dict().keys()) == list(ref.state_dict().keys())
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, args["in_channels"], 9, 10, device=device, dtype=dtype)
    xa, xb = clone_leaf(x), clone_leaf(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ya, yb = ours(xa), ref(xb)
    assert_close(ya, yb)
    g = torch.randn_like(yb)
    ya.backward(g)
    yb.backward(g)
    assert_close(xa.grad, xb.grad)
    for (name, pa), (_, pb) in zip(ours.named_parameters(), ref.named_parameters()):
        assert_close(pa.grad, pb.grad, scale=10, msg=name)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular"])
def test_layer_unbatched(mode, device):
    ref = torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode=mode, device=device)
    ours = pnn.Conv2d(3, 4, 3, padding=1, padding_mode=mode, device=device)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 6, 5, device=device)
    assert_close(ours(x), ref(x))


def test_layer_init_matches_torch():
    torch.manual_seed(123)
    ref = torch.nn.Conv2d(6, 8, (3, 5), groups=2)
    torch.manual_seed(123)
    ours = pnn.Conv2d(6, 8, (3, 5), groups=2)
    torch.testing.assert_close(ours.weight, ref.weight, rtol=0, atol=0)
    torch.testing.assert_close(ours.bias, ref.bias, rtol=0, atol=0)
    assert ours.weight.dtype == torch.get_default_dtype()
    assert pnn.Conv2d(2, 2, 1, dtype=torch.float64).weight.dtype == torch.float64
    ours.reset_parameters()
    bound = 1 / (3 * 3 * 5) ** 0.5
    assert ours.weight.abs().max() <= bound and ours.bias.abs().max() <= bound


@pytest.mark.parametrize("args,match", [
    (dict(in_channels=3, out_channels=4, kernel_size=3, groups=2), "in_channels"),
    (dict(in_channels=4, out_channels=3, kernel_size=3, groups=2), "out_channels"),
    (dict(in_channels=4, out_channels=4, kernel_size=3, groups=0), "groups"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, padding="full"), "padding"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, padding="same", stride=2), "strided"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, padding_mode="mirror"), "padding_mode"),
    (dict(in_channels=3, out_channels=4, kernel_size=0), "kernel_size"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, stride=0), "stride"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, padding=-1), "padding"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, dilation=(1, 0)), "dilation"),
])
def test_layer_bad_args(args, match):
    with pytest.raises(ValueError, match=match):
        pnn.Conv2d(**args)


# ---- bad input to the functional ----

def _bad(device):
    x = torch.randn(2, 4, 8, 8, device=device)
    w = torch.randn(6, 4, 3, 3, device=device)
    return [
        (lambda: F.conv2d(x.double(), w), TypeError, "weight"),
        (lambda: F.conv2d(x.long(), w.long()), TypeError, "input must be float"),
        (lambda: F.conv2d(x, w, torch.zeros(6, dtype=torch.float64, device=device)), TypeError,
         "bias"),
        (lambda: F.conv2d(x, [1.0]), TypeError, "weight must be a Tensor"),
        (lambda: F.conv2d(x[0, 0], w), ValueError, "input"),
        (lambda: F.conv2d(x[None], w), ValueError, "input"),
        (lambda: F.conv2d(x, w[0]), ValueError, "weight must be 4-D"),
        (lambda: F.conv2d(x, w[:, :3]), ValueError, "channels"),
        (lambda: F.conv2d(x, w, groups=3), ValueError, "groups"),
        (lambda: F.conv2d(x, w[:, :2], groups=2), None, None),  # valid: a control
        (lambda: F.conv2d(x, w[:5, :2], groups=2), ValueError, "groups=2 must divide"),
        (lambda: F.conv2d(x, w, groups=0), ValueError, "groups"),
        (lambda: F.conv2d(x, w, torch.zeros(5, device=device)), ValueError, "bias"),
        (lambda: F.conv2d(x, torch.randn(6, 4, 9, 9, device=device)), ValueError,
         "smaller than the dilated kernel"),
        (lambda: F.conv2d(x, w, dilation=5), ValueError, "smaller than the dilated kernel"),
        (lambda: F.conv2d(x, w, stride=0), ValueError, "stride"),
        (lambda: F.conv2d(x, w, stride=(1, 2, 3)), ValueError, "stride"),
        (lambda: F.conv2d(x, w, dilation=(1, -1)), ValueError, "dilation"),
        (lambda: F.conv2d(x, w, padding=-1), ValueError, "padding"),
        (lambda: F.conv2d(x, w, padding="full"), ValueError, "padding"),
        (lambda: F.conv2d(x, w, padding=1.5), TypeError, "padding"),
        (lambda: F.conv2d(x, w, padding="same", stride=2), RuntimeError, "strided"),
        (lambda: F.conv2d(x, w[:0]), ValueError, "no output channels"),
        (lambda: F.conv2d(x, w[:, :, :0]), ValueError, "empty kernel"),
        (lambda: F.conv2d(torch.randn(2, 4, 0, 8, device=device), w), ValueError,
         "smaller than the dilated kernel"),
    ]


def test_bad_input_raises_naming_the_argument(device):
    for fn, exc, match in _bad(device):
        if exc is None:
            fn()
            continue
        with pytest.raises(exc, match=match):
            fn()


def test_device_mismatch_raises(device):
    x = torch.randn(1, 2, 5, 5, device=device)
    w = torch.randn(3, 2, 3, 3, device="meta" if device == "cpu" else "cpu")
    with pytest.raises(RuntimeError, match="weight|device"):
        F.conv2d(x, w)


def test_kernel_rejects_inconsistent_views(monkeypatch):
    """The C++ entry point checks what it gets even when Python is bypassed. (The workspace is
    the implicit GEMM's: the direct kernels, which would take these few channels, need none.)"""
    monkeypatch.setenv("PYNN_CONV_DIRECT", "0")
    x = torch.randn(1, 2, 5, 5)
    w = torch.randn(3, 2, 3, 3)
    y = torch.empty(1, 3, 4, 4)  # should be 3x3
    ws = torch.empty(1, 2 * 9 * 9)
    V = _backend.view
    with pytest.raises(ValueError, match="output has shape"):
        _backend._C.conv2d_forward_cpu(V(x), V(w), V(y), False, V(y), V(ws), V(w), (1, 1), (0, 0, 0, 0),
                                       (1, 1), 1, 9)
    y = torch.empty(1, 3, 3, 3)
    with pytest.raises(ValueError, match="workspace"):
        _backend._C.conv2d_forward_cpu(V(x), V(w), V(y), False, V(y), V(torch.empty(1, 5)),
                                       V(w), (1, 1), (0, 0, 0, 0), (1, 1), 1, 9)
    with pytest.raises(TypeError, match="dtype"):
        _backend._C.conv2d_forward_cpu(V(x), V(w.double()), V(y), False, V(y), V(ws), V(w), (1, 1),
                                       (0, 0, 0, 0), (1, 1), 1, 9)
    with pytest.raises(ValueError, match="contiguous"):
        _backend._C.conv2d_forward_cpu(V(x.transpose(2, 3)), V(w), V(y), False, V(y), V(ws),
                                       V(w), (1, 1), (0, 0, 0, 0), (1, 1), 1, 9)


def test_cuda_element_math_matches_cpu_kernels():
    """The CUDA kernels' per-element functions (gather col2im, im2col, depthwise) against the CPU
    kernels, which the tests above check against torch."""
    assert _backend._C.conv2d_math_selfcheck_cpu() < 1e-12


# ---- the CPU implicit GEMM (csrc/cpu/conv.cpp: column panels packed from the input) ----
# Panels are 32 (f32) or 16 (f64) positions wide under AVX-512, 16/8 under AVX2 and 8/4 in the
# generic kernel; 16-position groups read one or two row segments with masked loads, or
# gather when they span three rows; stride > 1 reads a phase-split copy of the tile's rows; the
# input gradient at stride 1 with >= 8 input channels per group runs as a forward convolution
# of grad_output.
IMPLICIT = [
    # 33 x 37: no image row is a multiple of a panel, last panel partial; 9 input channels, so
    # the input gradient runs as a convolution (>= 8 channels per group) with a 1-row A edge
    ("edges_odd", (1, 9, 33, 37), (5, 9, 3, 3), dict(padding=1)),
    # padding on every side, different per side, with dilation: masks at all four borders
    ("pads_all_sides", (2, 8, 13, 17), (7, 8, 3, 4), dict(padding=(2, 3), dilation=(2, 1))),
    # stride 2 and 3 along W (phase copy) with padding, dilation and an 11-tap kernel
    ("stride_w2", (2, 3, 19, 23), (6, 3, 3, 5), dict(stride=2, padding=2)),
    ("stride_w3_dil", (1, 2, 17, 29), (4, 2, 4, 3), dict(stride=(1, 3), padding=(1, 2),
                                                            dilation=(1, 2))),
    ("alexnet_like", (2, 3, 35, 35), (9, 3, 11, 11), dict(stride=4, padding=2)),
    # rows of 5 outputs: 16 positions span four rows (gather), groups with 9 output channels
    ("narrow_rows_groups", (2, 24, 5, 5), (9, 8, 2, 2), dict(groups=3, padding=1)),
    # the input gradient takes GEMM + col2im: pad beyond the kernel's reach, or < 8 channels
    ("pad_beyond_kernel", (1, 8, 6, 7), (3, 8, 2, 2), dict(padding=2)),
    ("few_channels", (2, 3, 10, 11), (4, 3, 3, 3), dict(padding=1)),
    # output channels past one A panel (8) with a remainder; 1x1 rows that straddle groups
    ("cout_19_1x1", (3, 24, 9, 11), (19, 24, 1, 1), {}),
]


@pytest.mark.parametrize("name,xs,ws,kw", IMPLICIT, ids=[c[0] for c in IMPLICIT])
def test_implicit_gemm_paths(name, xs, ws, kw, dtype, monkeypatch):
    monkeypatch.setenv("PYNN_CONV_DIRECT", "0")  # the few-channel cases here would go direct
    x = torch.randn(xs, dtype=dtype)
    w = torch.randn(ws, dtype=dtype)
    b = torch.randn(ws[0], dtype=dtype)
    ours, ref = run_both(x, w, b, kw)
    check_pair(ours, ref, ws[1] * ws[2] * ws[3])


@pytest.mark.parametrize("kernel", ["avx512", "avx2", "generic"])
@pytest.mark.parametrize("tiny_tiles", [False, True], ids=["tiles", "tiny_tiles"])
def test_implicit_gemm_every_panel_width(kernel, tiny_tiles, dtype, monkeypatch):
    """The panels follow the GEMM kernel's width: forcing each kernel (the AVX2 f64 and generic
    widths take the scalar packer) and tiles that end mid-panel give torch's answer."""
    monkeypatch.setenv("PYNN_GEMM_KERNEL", kernel)
    monkeypatch.setenv("PYNN_CONV_DIRECT", "0")  # the implicit GEMM even where AVX-512 could
    try:
        F.conv2d(torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, 1))
    except RuntimeError as e:
        assert "cannot run" in str(e) and kernel != "generic"
        pytest.skip(f"this CPU cannot run the {kernel} kernel")
    if tiny_tiles:
        monkeypatch.setattr(conv_op, "_CPU_TILE_ELEMS", 1)
        monkeypatch.setattr(conv_op, "_CPU_MIN_COLS", 7)
    for name, xs, ws, kw in IMPLICIT[:5]:
        x = torch.randn(xs, dtype=dtype)
        w = torch.randn(ws, dtype=dtype)
        b = torch.randn(ws[0], dtype=dtype)
        ours, ref = run_both(x, w, b, kw)
        check_pair(ours, ref, ws[1] * ws[2] * ws[3])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_implicit_gemm_channels_last_batch1(threads, pool_threads):
    pool_threads(threads)
    x = torch.randn(1, 16, 15, 21).to(memory_format=torch.channels_last)
    w = torch.randn(24, 16, 3, 3)
    b = torch.randn(24)
    ours, ref = run_both(x, w, b, dict(padding=1))
    assert ours[0].is_contiguous(memory_format=torch.channels_last)
    check_pair(ours, ref, 16 * 9)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("groups,cout", [(1, 20), (3, 36)], ids=["one_group", "groups3"])
def test_weight_panels_packed_by_several_threads(threads, groups, cout, pool_threads):
    """Deep weights (kcol >= 2048) are packed in (group, panel) chunks on several threads: a chunk
    may start mid-group, end in the next group, or hold a partial last panel (20 = 8 + 8 + 4
    rows). The forward and the stride-1 input gradient (flipped weights) both pack them."""
    pool_threads(threads)
    cin = 240 * groups  # 240 * 9 = 2160 columns per group, one panel per chunk
    # 11 x 10 = 110 positions: past the few-positions GEMM's limit of 100, so both passes pack
    x = torch.randn(2, cin, 11, 10, dtype=torch.float64)
    w = torch.randn(cout, cin // groups, 3, 3, dtype=torch.float64)
    b = torch.randn(cout, dtype=torch.float64)
    ours, ref = run_both(x, w, b, dict(padding=1, groups=groups))
    check_pair(ours, ref, 1)


# ---- the CPU's direct kernels for few channels (csrc/cpu/conv_direct.h) ----

DIRECT = [
    # LeNet-5's layers: 1 -> 6 (two vectors along a 28-wide row), 6 -> 16 (rows of 10)
    ("lenet_c1", (3, 1, 32, 32), (6, 1, 5, 5), {}),
    ("lenet_c2", (5, 6, 14, 14), (16, 6, 5, 5), {}),
    # 9..16 output channels: two blocks of rows, the second partial; 16 input channels
    ("c16_to_11_pad1", (2, 16, 9, 37), (11, 16, 3, 3), dict(padding=1)),
    # asymmetric padding ('same' with an even kernel), kernel width 7 and 1
    ("same_even", (2, 3, 12, 13), (5, 3, 4, 4), dict(padding="same")),
    ("k7_pad3", (1, 2, 8, 21), (3, 2, 7, 7), dict(padding=3)),
    ("k1x1", (2, 7, 5, 6), (4, 7, 1, 1), {}),
    ("pad_rect", (2, 4, 11, 7), (7, 4, 3, 5), dict(padding=(2, 0))),
]


def _direct_taken(xs, ws, kw, dtype=torch.float32, pass_=None):
    """Whether the direct kernels run the forward and both gradients (pass_=None) or one pass
    (0 forward, 1 input gradient, 2 weight gradient)."""
    x = torch.zeros(xs, dtype=dtype)
    w = torch.zeros(ws, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = TF.conv2d(x, w, **kw)
    stride = conv_op._pair(kw.get("stride", 1), "stride", 1)
    dilation = conv_op._pair(kw.get("dilation", 1), "dilation", 1)
    pads = conv_op._padding(kw.get("padding", 0), ws[2:], stride, dilation)
    V = _backend.view
    taken = [_backend._C.conv2d_direct_cpu(V(x), V(w), V(y), stride, pads, dilation,
                                           kw.get("groups", 1), p) for p in range(3)]
    return all(taken) if pass_ is None else taken[pass_]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("name,xs,ws,kw", DIRECT, ids=[c[0] for c in DIRECT])
def test_direct_kernels_match_torch(name, xs, ws, kw, threads, pool_threads):
    """Forward, input and weight gradients of the direct path (rows split among 1-3 threads,
    sometimes mid-sample) against torch, and against the implicit GEMM on the same shapes."""
    if not _direct_taken(xs, ws, kw):
        assert os.environ.get("PYNN_GEMM_KERNEL", "auto") not in ("auto", "avx512") or \
            not _cpu_has_avx512(), f"{name} should take the direct path on this CPU"
        pytest.skip("the direct kernels need AVX-512")
    pool_threads(threads)
    x, w, b = torch.randn(xs), torch.randn(ws), torch.randn(ws[0])
    ours, ref = run_both(x, w, b, kw)
    check_pair(ours, ref, ws[1] * ws[2] * ws[3])


def _cpu_has_avx512() -> bool:
    return "avx512f" in open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else False


@pytest.mark.parametrize("xs,ws,kw,dtype", [
    ((2, 6, 14, 14), (16, 6, 5, 5), {}, torch.float64),              # float32 only
    ((2, 6, 14, 14), (17, 6, 5, 5), {}, torch.float32),              # > 16 output channels
    ((2, 17, 14, 14), (16, 17, 5, 5), {}, torch.float32),            # > 16 input channels
    ((2, 6, 14, 14), (16, 6, 5, 5), dict(stride=2), torch.float32),
    ((2, 6, 14, 14), (16, 6, 5, 5), dict(dilation=2), torch.float32),
    ((2, 6, 14, 14), (16, 3, 5, 5), dict(groups=2), torch.float32),
    ((2, 6, 14, 14), (16, 6, 3, 8), {}, torch.float32),              # kernel width 8
    ((2, 6, 14, 14), (16, 6, 3, 3), dict(padding=3), torch.float32),  # padding past K - 1
], ids=["f64", "cout17", "cin17", "stride2", "dilation2", "groups2", "kw8", "pad3"])
def test_direct_kernels_step_aside(xs, ws, kw, dtype):
    assert not _direct_taken(xs, ws, kw, dtype)


def test_direct_kernels_follow_the_switches(monkeypatch):
    """PYNN_CONV_DIRECT=0 and a non-AVX-512 PYNN_GEMM_KERNEL send the same shape to the implicit
    GEMM, which still gives torch's answer."""
    xs, ws = (3, 6, 14, 14), (16, 6, 5, 5)
    if not _cpu_has_avx512():
        pytest.skip("the direct kernels need AVX-512")
    assert _direct_taken(xs, ws, {})
    for var, value in (("PYNN_CONV_DIRECT", "0"), ("PYNN_GEMM_KERNEL", "avx2")):
        monkeypatch.setenv(var, value)
        assert not _direct_taken(xs, ws, {})
        x, w, b = torch.randn(xs), torch.randn(ws), torch.randn(ws[0])
        ours, ref = run_both(x, w, b, {})
        check_pair(ours, ref, ws[1] * ws[2] * ws[3])
        monkeypatch.delenv(var)


CHANNELS = [
    # AlexNet's first layer on a small image: windows cross the padding at both ends of a row
    ("alexnet_c1", (2, 3, 39, 43), (64, 3, 11, 11), dict(stride=4, padding=2)),
    ("resnet_c1", (2, 3, 20, 23), (32, 3, 7, 7), dict(stride=2, padding=3)),
    ("vgg_c1_48", (1, 3, 9, 30), (48, 3, 3, 3), dict(padding=1)),
    ("dilated_gray", (2, 1, 12, 17), (16, 1, 3, 3), dict(padding=2, dilation=2)),
    ("rect_stride", (2, 4, 13, 29), (16, 4, 5, 4), dict(stride=(2, 3), padding=(1, 2))),
    # kernel wider than the padded input leaves no interior position: all edge windows
    ("wide_kernel", (1, 2, 6, 5), (16, 2, 3, 7), dict(padding=(0, 1))),
]


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("name,xs,ws,kw", CHANNELS, ids=[c[0] for c in CHANNELS])
def test_direct_channels_kernel_matches_torch(name, xs, ws, kw, threads, pool_threads):
    """The forward with output channels as the vector lanes (first layers on RGB input), with
    interior blocks, windows in the padding and every thread count; the gradients go through
    whichever path applies."""
    if not _direct_taken(xs, ws, kw, pass_=0):
        assert not _cpu_has_avx512() or os.environ.get("PYNN_GEMM_KERNEL", "auto") not in (
            "auto", "avx512"), f"{name} should take the direct forward on this CPU"
        pytest.skip("the direct kernels need AVX-512")
    pool_threads(threads)
    x, w, b = torch.randn(xs), torch.randn(ws), torch.randn(ws[0])
    ours, ref = run_both(x, w, b, kw)
    check_pair(ours, ref, ws[1] * ws[2] * ws[3])
    # no bias
    with torch.no_grad():
        assert_close(F.conv2d(x, w, **kw), TF.conv2d(x, w, **kw), scale=(x.shape[1] * 121) ** 0.5)


@pytest.mark.parametrize("ws", [(24, 3, 3, 3), (80, 3, 3, 3), (64, 5, 3, 3)],
                         ids=["cout24", "cout80", "cin5"])
def test_direct_channels_kernel_steps_aside(ws):
    assert not _direct_taken((2, ws[1], 9, 9), ws, {}, pass_=0)


@pytest.mark.parametrize("xs,ws,kw", [
    ((3, 72, 5, 6), (64, 72, 3, 3), dict(padding=1)),              # forward and input gradient
    ((2, 72, 9, 9), (80, 72, 3, 3), dict(stride=2, padding=1)),    # strided forward
    ((17, 512, 5, 6), (64, 512, 3, 3), dict(padding=1)),           # two chunks of samples
], ids=["pad1", "stride2", "two_chunks"])
def test_few_output_positions_gemm(xs, ws, kw, dtype, pool_threads, monkeypatch):
    """Deep layers with at most 100 output positions run as one GEMM with positions as rows
    (Y^T = cols^T W^T), samples side by side, then transpose to NCHW (where the blocked kernel
    does not take them: float64, or with PYNN_CONV_BLOCKED=0 as here)."""
    monkeypatch.setenv("PYNN_CONV_BLOCKED", "0")
    pool_threads(2)
    x, w, b = torch.randn(xs, dtype=dtype), torch.randn(ws, dtype=dtype), torch.randn(ws[0], dtype=dtype)
    ours, ref = run_both(x, w, b, kw)
    check_pair(ours, ref, ws[1] * ws[2] * ws[3])


# Stride-1 float32 layers whose output rows are at least 7/8 of the padded input's width run the
# flat kernel (csrc/cpu/conv.cpp, flat_conv): 32 flat positions of the padded sample per register
# tile, read in place; the forward and the input gradient (a stride-1 convolution itself) both.
# The grid covers several input-channel blocks (> 32), output channels that end mid-panel,
# dilation, the asymmetric padding of padding="same", groups, and the three ways the work is
# split: whole samples per thread, and one padded sample shared by threads that split its tiles
# (batch 1, or 3 samples over 2 threads). The blocked kernel, which would take "wide", is off.
FLAT_GRID = [
    ("blocks", (2, 40, 11, 20), (12, 40, 3, 3), dict(padding=1)),
    ("dilation", (2, 8, 12, 40), (16, 8, 3, 3), dict(padding=2, dilation=2)),
    ("same_even", (2, 6, 9, 33), (8, 6, 2, 4), dict(padding="same")),
    ("groups", (3, 16, 10, 30), (24, 8, 3, 3), dict(padding=1, groups=2)),
    ("batch1_unpadded", (1, 5, 13, 40), (9, 5, 5, 3), {}),
    ("wide", (2, 64, 9, 56), (64, 64, 3, 3), dict(padding=1)),
]


@pytest.mark.parametrize("name,xs,ws,kw", FLAT_GRID, ids=[c[0] for c in FLAT_GRID])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_flat_stride1_kernel_matches_torch(name, xs, ws, kw, threads, pool_threads,
                                           monkeypatch):
    monkeypatch.setenv("PYNN_CONV_BLOCKED", "0")
    pool_threads(threads)
    x, w, b = torch.randn(xs), torch.randn(ws), torch.randn(ws[0])
    ours, ref = run_both(x, w, b, kw)
    check_pair(ours, ref, ws[1] * ws[2] * ws[3])


# float32 layers with at least 16 input and 32 output channels per group run the blocked kernel
# (csrc/cpu/conv_blocked.cpp) on AVX-512 CPUs: output channels as the vector lanes, up to 8
# positions of one output row as the rows (8 across rows and samples where rows are narrower than
# 4), in 16-channel blocks. The forward and input gradient read their source in place at
# horizontal stride 1 or 2 with whole blocks, else from a padded copy (channel_tails,
# stride3_copy, pointwise_stride2, narrow_rows and the input gradient of channel_tails); the
# weight gradient reads the input in place with whole blocks at any stride (all its cases but
# channel_tails). The grid covers one 7-wide tile per row (7 x 7, every tile at the padding), a
# last channel block and panel that are partly padding (56 channels), two K blocks and tiles
# split into chunks (160 input channels, 800 positions), stride, dilation with a rectangular
# kernel, asymmetric padding, groups, an unpadded 5x5 on one sample, weight gradients summed over
# chunks of rows (20 x 40 outputs), and 1x1 kernels up to 14 x 14 outputs. The input gradient at
# stride > 1 runs as one convolution per phase of grad_input (the stride2_* and stride3_4x4
# cases): phases of 1, 2, 2 and 4 taps over unequal sizes, taps two apart in the weight (5x5),
# stride along H only, phases no tap reaches (dilation 2) written as zeros, phase rows of 3 read
# from a copy, groups, stride 3, and a single input row (the taps of the odd rows' phase, which
# has no inputs, are packed nowhere). A phase whose leading padding would be negative
# (stride3_copy's third) sends the whole gradient to the other paths, as does a 1x1 kernel at
# stride > 1. `passes` lists the passes it takes: f forward, i input gradient, w weight gradient
# (>= 8 items of 32 output x 16 input channels).
BLOCKED_GRID = [
    ("deep_7x7", (4, 64, 7, 7), (64, 64, 3, 3), dict(padding=1), "fiw"),
    ("channel_tails", (2, 56, 9, 11), (56, 56, 3, 3), dict(padding=1), "fiw"),
    ("k_blocks", (2, 160, 20, 20), (64, 160, 3, 3), dict(padding=1), "fiw"),
    ("stride2", (2, 48, 15, 17), (96, 48, 3, 3), dict(stride=2, padding=1), "fw"),
    ("stride3_copy", (2, 64, 16, 19), (64, 64, 3, 3), dict(stride=3, padding=1), "fw"),
    ("dilation_rect", (2, 64, 12, 14), (64, 64, 3, 5), dict(padding=(2, 4), dilation=2), "fiw"),
    ("same_even", (2, 32, 9, 10), (32, 32, 2, 4), dict(padding="same"), "fi"),
    ("groups", (2, 128, 8, 9), (128, 64, 3, 3), dict(padding=1, groups=2), "fiw"),
    ("unpadded_5x5_batch1", (1, 16, 12, 13), (32, 16, 5, 5), {}, "f"),
    ("row_chunks", (2, 32, 20, 40), (128, 32, 3, 3), dict(padding=1), "fiw"),
    # weight panels copied along each of the source's unit strides: a 1x1 forward (input
    # channels, a last block of 8), a 1x1 input gradient (output channels), and a 2x2 kernel
    # (neither: one by one)
    ("pointwise_stride2", (2, 56, 13, 13), (64, 56, 1, 1), dict(stride=2), "fw"),
    ("pointwise_7x7", (3, 64, 7, 7), (96, 64, 1, 1), {}, "fiw"),
    ("k2x2", (2, 64, 10, 11), (64, 64, 2, 2), dict(padding=1), "fiw"),
    # products with the padding skipped per tile (TapClasses): rows of 13 in tiles of 6 and 7,
    # rows of 3 too narrow for tiles of their own (tiles of 8 across rows and samples), and a
    # padding wider than the kernel, whose outer positions read nothing but padding
    ("uneven_row_tiles", (2, 32, 11, 13), (64, 32, 3, 3), dict(padding=1), "fi"),
    ("narrow_rows", (3, 64, 3, 3), (128, 64, 3, 3), dict(padding=1), "fiw"),
    ("padding_beyond_kernel", (2, 64, 6, 6), (64, 64, 3, 3), dict(padding=3), "fw"),
    ("stride2_phases", (2, 64, 15, 17), (64, 64, 3, 3), dict(stride=2, padding=1), "fiw"),
    ("stride2_5x5", (2, 32, 18, 21), (32, 32, 5, 5), dict(stride=2, padding=2), "fi"),
    ("stride_h_only", (2, 64, 12, 13), (64, 64, 3, 3), dict(stride=(2, 1), padding=1), "fiw"),
    ("stride2_dilation2", (2, 64, 12, 13), (64, 64, 3, 3), dict(stride=2, padding=2, dilation=2),
     "fiw"),
    ("stride2_narrow_phases", (2, 64, 6, 6), (64, 64, 3, 3), dict(stride=2, padding=1), "fiw"),
    ("stride2_groups", (2, 128, 10, 11), (128, 64, 3, 3), dict(stride=2, padding=1, groups=2),
     "fiw"),
    ("stride3_4x4", (2, 64, 16, 19), (64, 64, 4, 4), dict(stride=3, padding=1), "fiw"),
    ("stride2_one_row", (2, 64, 1, 9), (64, 64, 5, 5), dict(stride=2, padding=2), "fiw"),
]


@pytest.mark.parametrize("name,xs,ws,kw,passes", BLOCKED_GRID, ids=[c[0] for c in BLOCKED_GRID])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_blocked_kernel_matches_torch(name, xs, ws, kw, passes, threads, pool_threads):
    taken = "".join(p for i, p in enumerate("fiw") if _direct_taken(xs, ws, kw, pass_=i))
    if _cpu_has_avx512() and os.environ.get("PYNN_GEMM_KERNEL", "auto") in ("auto", "avx512"):
        assert taken == passes, f"{name}: the blocked kernel takes {taken!r}, expected {passes!r}"
    else:
        assert taken == ""  # the other paths compute the same answers below
    pool_threads(threads)
    x, w, b = torch.randn(xs), torch.randn(ws), torch.randn(ws[0])
    ours, ref = run_both(x, w, b, kw)
    check_pair(ours, ref, ws[1] * ws[2] * ws[3])
    with torch.no_grad():  # no bias
        assert_close(F.conv2d(x, w, **kw), TF.conv2d(x, w, **kw),
                     scale=(ws[1] * ws[2] * ws[3]) ** 0.5)


@pytest.mark.parametrize("xs,ws,kw,dtype,passes", [
    ((2, 32, 9, 9), (32, 32, 3, 3), dict(padding=1), torch.float64, ""),  # float32 only
    # 40 of 48 input channels busy; its input gradient (32 -> 40) has 40 of 64 lanes busy
    ((2, 40, 9, 9), (32, 40, 3, 3), dict(padding=1), torch.float32, ""),
    # 48 of 64 lanes busy; its input gradient (48 -> 32) fills them
    ((2, 32, 9, 9), (48, 32, 3, 3), dict(padding=1), torch.float32, "i"),
    # 1x1: all passes run here up to 14 x 14 positions; past that the GEMM reads the input in
    # place
    ((2, 64, 16, 16), (64, 64, 1, 1), {}, torch.float32, ""),
    ((2, 64, 14, 14), (64, 64, 1, 1), {}, torch.float32, "fiw"),
    # a 1x1's input gradient at stride 2 (one phase of 14 x 14) goes to the GEMM path
    ((2, 64, 28, 28), (64, 64, 1, 1), dict(stride=2), torch.float32, "fw"),
], ids=["f64", "cin40", "cout48", "pointwise16", "pointwise14", "pointwise_stride2"])
def test_blocked_kernel_steps_aside(xs, ws, kw, dtype, passes):
    if not _cpu_has_avx512() or os.environ.get("PYNN_GEMM_KERNEL", "auto") not in ("auto",
                                                                                    "avx512"):
        passes = ""
    taken = "".join(p for i, p in enumerate("fiw") if _direct_taken(xs, ws, kw, dtype, pass_=i))
    assert taken == passes


def test_blocked_kernel_follows_the_switches(monkeypatch):
    """PYNN_CONV_BLOCKED=0, PYNN_CONV_DIRECT=0 and a non-AVX-512 PYNN_GEMM_KERNEL each send a
    blocked shape to the other paths, which give torch's answer too."""
    xs, ws, kw = (2, 64, 7, 7), (64, 64, 3, 3), dict(padding=1)
    if not _cpu_has_avx512():
        pytest.skip("the blocked kernel needs AVX-512")
    assert _direct_taken(xs, ws, kw)
    for var, value in (("PYNN_CONV_BLOCKED", "0"), ("PYNN_CONV_DIRECT", "0"),
                       ("PYNN_GEMM_KERNEL", "avx2")):
        monkeypatch.setenv(var, value)
        assert not any(_direct_taken(xs, ws, kw, pass_=p) for p in range(3))
        x, w, b = torch.randn(xs), torch.randn(ws), torch.randn(ws[0])
        ours, ref = run_both(x, w, b, kw)
        check_pair(ours, ref, ws[1] * ws[2] * ws[3])
        monkeypatch.delenv(var)


# Depthwise float32 layers with unit stride along W run the AVX-512 depthwise kernels
# (csrc/cpu/conv_depthwise.cpp): 16 outputs of a row per vector summing every tap in a register,
# masked loads at the row ends. The grid has rows of several vectors with a partial last one,
# a channel multiplier (the input gradient sums 3 output channels), stride along H only,
# dilation, the asymmetric padding of 'same', and a 5x7 kernel whose 35 taps are too many for
# the weight gradient's accumulators. `passes` as in BLOCKED_GRID; stride along W takes none.
DEPTHWISE_GRID = [
    ("mobilenet", (2, 32, 20, 37), (32, 1, 3, 3), dict(padding=1, groups=32), "fiw"),
    ("multiplier", (2, 8, 11, 19), (24, 1, 3, 3), dict(padding=1, groups=8), "fiw"),
    ("stride_h", (2, 16, 15, 33), (16, 1, 3, 3), dict(stride=(2, 1), padding=1, groups=16), "fw"),
    ("dilated_5x5", (1, 6, 17, 40), (6, 1, 5, 5), dict(padding=4, dilation=2, groups=6), "fiw"),
    ("same_even", (2, 4, 9, 18), (4, 1, 2, 4), dict(padding="same", groups=4), "fiw"),
    ("k5x7", (2, 4, 12, 20), (8, 1, 5, 7), dict(groups=4), "fi"),
    ("stride_w", (2, 8, 12, 20), (8, 1, 3, 3), dict(stride=2, padding=1, groups=8), ""),
]


@pytest.mark.parametrize("name,xs,ws,kw,passes", DEPTHWISE_GRID,
                         ids=[c[0] for c in DEPTHWISE_GRID])
@pytest.mark.parametrize("threads", [1, 3])
def test_depthwise_kernels_match_torch(name, xs, ws, kw, passes, threads, pool_threads):
    taken = "".join(p for i, p in enumerate("fiw") if _direct_taken(xs, ws, kw, pass_=i))
    if _cpu_has_avx512() and os.environ.get("PYNN_GEMM_KERNEL", "auto") in ("auto", "avx512"):
        assert taken == passes, f"{name}: the depthwise kernels take {taken!r}, expected {passes!r}"
    else:
        assert taken == ""
    pool_threads(threads)
    x, w, b = torch.randn(xs), torch.randn(ws), torch.randn(ws[0])
    ours, ref = run_both(x, w, b, kw)
    check_pair(ours, ref, ws[1] * ws[2] * ws[3])
    with torch.no_grad():  # no bias
        assert_close(F.conv2d(x, w, **kw), TF.conv2d(x, w, **kw), scale=(ws[2] * ws[3]) ** 0.5)
