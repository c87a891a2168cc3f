import math

import pytest
import torch
import torch.nn.functional as TF

import pynn
import pynn.functional as F
from conftest import assert_close
from helpers import clone_leaf, non_contiguous

# (input shape, kernel_size, stride, padding, dilation, ceil_mode): the window edge cases.
MAX_CASES = [
    ((2, 3, 9, 11), 3, 2, 1, 1, False),            # overlapping 3/2 with padding, odd sizes
    ((2, 3, 9, 11), 3, 2, 1, 1, True),             # ceil_mode: last window starts in padding
    ((1, 2, 6, 7), 2, 2, 1, 1, True),              # ceil_mode window dropped (would start in pad)
    ((1, 2, 10, 10), 2, 3, 0, 1, False),           # stride > kernel: gaps between windows
    ((2, 2, 12, 13), 3, 1, 1, 2, False),           # dilation
    ((1, 3, 11, 9), (3, 2), (2, 1), (1, 0), (2, 3), True),  # everything rectangular
    ((1, 1, 5, 5), 5, 1, 0, 1, False),             # kernel as large as the input
    ((2, 1, 3, 4), (5, 5), 1, 2, 1, False),        # kernel as large as the padded input
    ((3, 2, 8, 8), 1, 1, 0, 1, False),             # 1x1 identity
    ((2, 3, 23, 70), 3, 2, 1, 1, False),           # wide rows: vector block path and its tail
    ((1, 2, 15, 61), 3, 1, 1, 1, True),            # stride-1 blocks
    ((1, 2, 9, 80), (2, 3), (1, 3), (1, 1), (1, 2), True),  # generic stride, dilated blocks
    ((1, 2, 20, 21), 17, 1, 2, 1, False),          # 289 taps: argmax kept as int32, not uint8
]
MAX_IDS = [f"{s}-k{k}-s{st}-p{p}-d{d}-c{int(c)}" for s, k, st, p, d, c in MAX_CASES]


def _distinct(shape, dtype, device):
    """Values without ties (a max with ties has no unique gradient for gradcheck)."""
    n = math.prod(shape)
    return (torch.randperm(n, device=device).to(dtype) / n - 0.5).reshape(shape) * 4


def _compare(ours, ref, x, *, scale=1.0, equal_nan=False):
    """Forward and input-gradient parity of ours(x) against ref(x), x's layout kept."""
    a, b = clone_leaf(x), clone_leaf(x)
    ya, yb = ours(a), ref(b)
    assert ya.shape == yb.shape
    assert_close(ya, yb, scale=scale, equal_nan=equal_nan)
    g = torch.randn_like(yb)
    ya.backward(g)
    yb.backward(g)
    assert_close(a.grad, b.grad, scale=scale)
    return ya, yb


@pytest.mark.parametrize("shape,k,s,p,d,ceil", MAX_CASES, ids=MAX_IDS)
def test_max_pool2d_parity(shape, k, s, p, d, ceil, device, dtype):
    x = _distinct(shape, dtype, device)
    y, ind = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    y_ref, ind_ref = TF.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    assert ind.dtype == torch.int64
    assert torch.equal(y, y_ref)
    assert torch.equal(ind, ind_ref)
    # Inference (no grad: no indices kept at all) and training (int32 indices kept) paths.
    assert torch.equal(F.max_pool2d(x, k, s, p, d, ceil), y_ref)
    _compare(lambda t: F.max_pool2d(t, k, s, p, d, ceil),
             lambda t: TF.max_pool2d(t, k, s, p, d, ceil), x)
    # The stride defaults to the kernel size.
    if s == k:
        assert torch.equal(F.max_pool2d(x, k, None, p, d, ceil), y_ref)


@pytest.mark.parametrize("shape,k,s,p,d,ceil", MAX_CASES[:4] + MAX_CASES[9:10],
                         ids=MAX_IDS[:4] + MAX_IDS[9:10])
def test_max_pool2d_ties_and_nan(shape, k, s, p, d, ceil, device, dtype):
    # Ties: every window is constant, torch takes the first maximum in scan order.
    for x in (torch.full(shape, 1.5, dtype=dtype, device=device),
              torch.randint(0, 3, shape, device=device).to(dtype),
              torch.full(shape, -math.inf, dtype=dtype, device=device)):
        y, ind = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
        y_ref, ind_ref = TF.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
        assert torch.equal(y, y_ref) and torch.equal(ind, ind_ref)
        _compare(lambda t: F.max_pool2d(t, k, s, p, d, ceil),
                 lambda t: TF.max_pool2d(t, k, s, p, d, ceil), x)
    # NaN is the maximum of any window holding one; with several, torch reports the last.
    x = torch.randn(shape, dtype=dtype, device=device)
    x.view(-1)[::7] = math.nan
    x.view(-1)[3::11] = math.nan
    y, ind = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    y_ref, ind_ref = TF.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    torch.testing.assert_close(y, y_ref, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(ind, ind_ref)
    _compare(lambda t: F.max_pool2d(t, k, s, p, d, ceil),
             lambda t: TF.max_pool2d(t, k, s, p, d, ceil), x, equal_nan=True)


def test_max_pool2d_window_only_in_padding(device):
    # With dilation a window's taps can all land in padding: torch gives -inf and its own index.
    x = torch.randn(1, 1, 2, 2, device=device)
    y, ind = F.max_pool2d(x, 2, 1, 1, 3, return_indices=True)
    y_ref, ind_ref = TF.max_pool2d(x, 2, 1, 1, 3, return_indices=True)
    assert torch.equal(y, y_ref) and torch.equal(ind, ind_ref)
    a = x.clone().requires_grad_()
    F.max_pool2d(a, 2, 1, 1, 3).sum().backward()
    assert torch.equal(a.grad, torch.zeros_like(x))  # such a window passes no gradient


# (input shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CASES = [
    ((2, 3, 9, 11), 3, 2, 1, False, True, None),
    ((2, 3, 9, 11), 3, 2, 1, True, True, None),    # overhang beyond the padding not counted
    ((2, 3, 9, 11), 3, 2, 1, True, False, None),
    ((1, 2, 6, 7), 2, 2, 1, True, True, None),
    ((1, 2, 10, 10), 2, 3, 0, False, True, None),  # stride > kernel
    ((1, 3, 11, 9), (3, 2), (2, 1), (1, 0), True, False, None),
    ((2, 2, 7, 8), 3, 2, 1, True, True, 5),        # divisor_override
    ((1, 2, 7, 8), 2, 1, 1, False, False, -3),
    ((1, 1, 5, 5), 5, 1, 0, False, True, None),    # kernel as large as the input
    ((2, 1, 3, 4), 5, 1, 2, False, False, None),   # kernel as large as the padded input
    ((2, 3, 23, 70), 3, 2, 1, False, True, None),  # interior sweep
    ((1, 2, 13, 40), 3, 1, 1, True, False, None),
    ((1, 2, 9, 50), 2, 3, 1, True, True, None),
]
AVG_IDS = [f"{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}-c{int(c[4])}-i{int(c[5])}-d{c[6]}" for c in AVG_CASES]


@pytest.mark.parametrize("shape,k,s,p,ceil,cip,div", AVG_CASES, ids=AVG_IDS)
def test_avg_pool2d_parity(shape, k, s, p, ceil, cip, div, device, dtype):
    x = torch.randn(shape, dtype=dtype, device=device)
    _compare(lambda t: F.avg_pool2d(t, k, s, p, ceil, cip, div),
             lambda t: TF.avg_pool2d(t, k, s, p, ceil, cip, div), x)


ADAPTIVE_CASES = [
    ((2, 3, 9, 11), 1),         # global average pooling
    ((2, 3, 9, 11), (3, 4)),    # uneven, overlapping windows
    ((2, 3, 9, 11), (None, 5)),
    ((1, 2, 5, 7), (9, 13)),    # output larger than the input
    ((2, 4, 13, 13), 6),        # AlexNet's head
    ((1, 2, 8, 8), (8, None)),  # identity
    ((3, 5, 7, 7), (1, 1)),
]


@pytest.mark.parametrize("shape,size", ADAPTIVE_CASES, ids=[f"{s}-{o}" for s, o in ADAPTIVE_CASES])
def test_adaptive_avg_pool2d_parity(shape, size, device, dtype):
    x = torch.randn(shape, dtype=dtype, device=device)
    _compare(lambda t: F.adaptive_avg_pool2d(t, size),
             lambda t: TF.adaptive_avg_pool2d(t, size), x, scale=10)


OPS = {
    "max": (lambda t: F.max_pool2d(t, 3, 2, 1), lambda t: TF.max_pool2d(t, 3, 2, 1)),
    "max_ceil_dil": (lambda t: F.max_pool2d(t, 2, 2, 1, 2, True),
                     lambda t: TF.max_pool2d(t, 2, 2, 1, 2, True)),
    "avg": (lambda t: F.avg_pool2d(t, 3, 2, 1, True, False),
            lambda t: TF.avg_pool2d(t, 3, 2, 1, True, False)),
    "adaptive": (lambda t: F.adaptive_avg_pool2d(t, (3, 5)),
                 lambda t: TF.adaptive_avg_pool2d(t, (3, 5))),
    "global": (lambda t: F.adaptive_avg_pool2d(t, 1), lambda t: TF.adaptive_avg_pool2d(t, 1)),
}


def _via_nchw(ref):
    return lambda t: ref(t.contiguous()).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("layout", ["channels_last", "transposed", "strided", "batch1_cl"])
def test_layouts(op, layout, device, dtype):
    ours, ref = OPS[op]
    if device == "cuda" and op == "avg" and layout in ("channels_last", "batch1_cl"):
        # torch's CUDA channels_last avg_pool2d backward ignored the padding until
        # pytorch/pytorch#188344 was fixed (wrong gradients on torch 2.11); its NCHW kernel is
        # the reference here, its output put back in torch's channels_last format.
        ref = _via_nchw(ref)
    x = torch.randn(2, 5, 9, 40, dtype=dtype, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = non_contiguous(x)
    elif layout == "strided":
        x = x[:, ::2, 1:, ::2]
    else:
        x = x[:1].contiguous(memory_format=torch.channels_last)
    ya, yb = _compare(ours, ref, x)
    if layout in ("channels_last", "batch1_cl"):
        # channels_last in, channels_last out, as torch does
        assert ya.is_contiguous(memory_format=torch.channels_last)
        assert yb.is_contiguous(memory_format=torch.channels_last)
    # The gradient of a sum arrives expanded (stride 0).
    a, b = clone_leaf(x), clone_leaf(x)
    ours(a).sum().backward()
    ref(b).sum().backward()
    assert_close(a.grad, b.grad)


def test_max_pool2d_channels_last_indices(device, dtype):
    x = _distinct((2, 6, 11, 37), dtype, device).contiguous(memory_format=torch.channels_last)
    x.as_strided((x.numel(),), (1,))[::13] = math.nan
    for args in [(3, 2, 1), (2, 1, 1, 2, True), ((3, 2), (1, 2), 0, 1, True)]:
        y, ind = F.max_pool2d(x, *args, return_indices=True)
        y_ref, ind_ref = TF.max_pool2d(x, *args, return_indices=True)
        torch.testing.assert_close(y, y_ref, equal_nan=True, rtol=0, atol=0)
        assert torch.equal(ind, ind_ref)
        assert ind.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("op", list(OPS))
def test_unbatched_and_zero_batch(op, device, dtype):
    ours, ref = OPS[op]
    _compare(ours, ref, torch.randn(3, 9, 10, dtype=dtype, device=device))
    for x in (torch.randn(0, 3, 9, 10, dtype=dtype, device=device),
              torch.randn(0, 3, 9, 10, dtype=dtype, device=device).contiguous(
                  memory_format=torch.channels_last)):
        a, b = clone_leaf(x), clone_leaf(x)
        ya, yb = ours(a), ref(b)
        assert ya.shape == yb.shape
        ya.sum().backward()
        assert a.grad.shape == x.shape


def test_return_indices_unbatched_and_layer(device):
    x = _distinct((3, 9, 10), torch.float32, device)
    y, ind = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    y_ref, ind_ref = TF.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert torch.equal(y, y_ref) and torch.equal(ind, ind_ref)
    y, ind = pynn.nn.MaxPool2d(3, 2, 1, return_indices=True)(x)
    assert torch.equal(ind, ind_ref)
    y2, ind2 = F.max_pool2d_with_indices(x, 3, 2, 1)
    assert torch.equal(ind2, ind_ref)
    # The indices carry no gradient; the values do.
    a = x.clone().requires_grad_()
    y, ind = F.max_pool2d(a, 3, 2, 1, return_indices=True)
    assert not ind.requires_grad and y.requires_grad


def test_adaptive_to_empty_output(device):
    x = torch.randn(2, 3, 5, 5, device=device, requires_grad=True)
    y = F.adaptive_avg_pool2d(x, 0)
    assert y.shape == TF.adaptive_avg_pool2d(x.detach(), 0).shape == (2, 3, 0, 0)
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_gradcheck(device):
    x = _distinct((2, 2, 7, 8), torch.float64, device).requires_grad_()
    fns = [
        lambda t: F.max_pool2d(t, 3, 2, 1),
        lambda t: F.max_pool2d(t, (2, 3), (1, 2), (1, 1), (2, 1), True),
        lambda t: F.avg_pool2d(t, 3, 2, 1, True, False),
        lambda t: F.avg_pool2d(t, 2, 1, 1, False, True, 3),
        lambda t: F.adaptive_avg_pool2d(t, (3, 5)),
        lambda t: F.adaptive_avg_pool2d(t, 1),
    ]
    for fn in fns:
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradcheck(fn, (x.detach().contiguous(
            memory_format=torch.channels_last).requires_grad_(),))


LAYERS = [
    (lambda m: m.MaxPool2d(3), {}),
    (lambda m: m.MaxPool2d((3, 2), stride=(2, 1), padding=1, dilation=(1, 2), ceil_mode=True), {}),
    (lambda m: m.AvgPool2d(3, 2, 1), {}),
    (lambda m: m.AvgPool2d((3, 2), None, (1, 0), True, False, 4), {}),
    (lambda m: m.AdaptiveAvgPool2d((None, 3)), {}),
    (lambda m: m.AdaptiveAvgPool2d(1), {}),
]


@pytest.mark.parametrize("make,_", LAYERS, ids=range(len(LAYERS)))
def test_layers_match_torch(make, _, device, dtype):
    ours, ref = make(pynn.nn), make(torch.nn)
    assert repr(ours) == repr(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for attr in ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices",
                 "count_include_pad", "divisor_override", "output_size"):
        assert getattr(ours, attr, None) == getattr(ref, attr, None), attr
    x = torch.randn(2, 3, 9, 10, dtype=dtype, device=device)
    _compare(ours, ref, x)


@pytest.mark.parametrize("call,exc,match", [
    (lambda x: F.max_pool2d(x.long(), 2), TypeError, "input must be float32 or float64"),
    (lambda x: F.avg_pool2d(x.half(), 2), TypeError, "input must be float32 or float64"),
    (lambda x: F.adaptive_avg_pool2d(x.int(), 2), TypeError, "input must be float32 or float64"),
    (lambda x: F.max_pool2d([1.0], 2), TypeError, "input must be a Tensor"),
    (lambda x: F.max_pool2d(x[0, 0], 2), ValueError, "input must be 3-D or 4-D"),
    (lambda x: F.avg_pool2d(x[None], 2), ValueError, "input must be 3-D or 4-D"),
    (lambda x: F.adaptive_avg_pool2d(x[0, 0], 2), ValueError, "input must be 3-D or 4-D"),
    (lambda x: F.max_pool2d(x[:, :, :0], 2), ValueError, "non-zero size"),
    (lambda x: F.avg_pool2d(x[:, :0], 2), ValueError, "non-zero size"),
    (lambda x: F.adaptive_avg_pool2d(x[0, :, :0], 2), ValueError, "non-zero size"),
    (lambda x: F.max_pool2d(x, 3, 1, 2), ValueError, "padding should be at most half of kernel_size"),
    (lambda x: F.max_pool2d(x, 3, 1, 2, dilation=2), ValueError, "padding should be at most half"),
    (lambda x: F.avg_pool2d(x, 2, 1, 2), ValueError, "padding should be at most half of kernel_size"),
    (lambda x: F.max_pool2d(x, 6), ValueError, "output size is too small"),
    (lambda x: F.max_pool2d(x, 3, dilation=3), ValueError, "output size is too small"),
    (lambda x: F.avg_pool2d(x, (2, 7)), ValueError, "output size is too small"),
    (lambda x: F.max_pool2d(x, 0), ValueError, "kernel_size must be positive"),
    (lambda x: F.max_pool2d(x, 2, -1), ValueError, "stride must be positive"),
    (lambda x: F.max_pool2d(x, 2, 0), ValueError, "stride must be positive"),
    (lambda x: F.max_pool2d(x, 2, 1, -1), ValueError, "padding must be non-negative"),
    (lambda x: F.max_pool2d(x, 2, 1, 0, 0), ValueError, "dilation must be positive"),
    (lambda x: F.max_pool2d(x, (2, 2, 2)), ValueError, "kernel_size must either be a single int"),
    (lambda x: F.max_pool2d(x, 2.0), TypeError, "kernel_size must be an int"),
    (lambda x: F.avg_pool2d(x, 2, "1"), TypeError, "stride must be an int"),
    (lambda x: F.avg_pool2d(x, 2, divisor_override=0), ValueError, "divisor_override must be non-zero"),
    (lambda x: F.avg_pool2d(x, 2, divisor_override=1.5), TypeError, "divisor_override must be an int"),
    (lambda x: F.adaptive_avg_pool2d(x, -1), ValueError, "output_size entries must be >= 0"),
    (lambda x: F.adaptive_avg_pool2d(x, (1, 2, 3)), ValueError, "output_size must be an int or"),
    (lambda x: F.adaptive_avg_pool2d(x, 1.5), TypeError, "output_size must be an int or"),
    (lambda x: F.adaptive_avg_pool2d(x, (2, 2.5)), TypeError, "output_size entries must be ints"),
    (lambda x: F.max_pool2d(x, 2, ceil_mode=None), TypeError, "ceil_mode must be a bool"),
])
def test_bad_input(call, exc, match, device):
    x = torch.randn(2, 3, 5, 5, device=device)
    with pytest.raises(exc, match=match):
        call(x)


@pytest.mark.parametrize("fn", [lambda t: F.max_pool2d(t, 2), lambda t: F.avg_pool2d(t, 2),
                                lambda t: F.adaptive_avg_pool2d(t, 2)])
def test_unsupported_device(fn):
    with pytest.raises(RuntimeError, match="input is on meta; pynn runs on cpu and cuda"):
        fn(torch.empty(2, 3, 5, 5, device="meta"))


def test_nan_inf_inputs_propagate_like_torch(device):
    x = torch.randn(2, 3, 8, 9, device=device)
    x[0, 0, 1, 1] = math.nan
    x[1, 2, 4, 4] = math.inf
    x[1, 1, 0, 0] = -math.inf
    for ours, ref in OPS.values():
        torch.testing.assert_close(ours(x), ref(x), equal_nan=True)


def test_kernel_level_checks():
    """The compiled core rejects mismatched shapes and layouts on its own, naming the argument."""
    from pynn import _backend as B
    # Views carry raw pointers: every tensor must stay referenced while the kernel runs.
    x = torch.randn(1, 2, 6, 6)
    none = torch.empty(0, dtype=torch.int64)
    wrong_h = torch.empty(1, 2, 4, 3)
    with pytest.raises(ValueError, match="output size 4 along height"):
        B._C.max_pool2d_forward_cpu(B.view(x), B.view(wrong_h), B.view(none),
                                    2, 2, 2, 2, 0, 0, 1, 1)
    transposed = torch.empty(1, 2, 3, 3).transpose(2, 3)
    with pytest.raises(ValueError, match="both be contiguous or both channels_last"):
        B._C.avg_pool2d_forward_cpu(B.view(x), B.view(transposed), 2, 2, 2, 2, 0, 0, True, 0)
    out, float_ind = torch.empty(1, 2, 3, 3), torch.empty(1, 2, 3, 3)
    with pytest.raises(TypeError, match="indices must be int64, int32 or uint8"):
        B._C.max_pool2d_forward_cpu(B.view(x), B.view(out), B.view(float_ind),
                                    2, 2, 2, 2, 0, 0, 1, 1)
    grad, bad_ind, grad_in = (torch.ones(1, 2, 3, 3), torch.full((1, 2, 3, 3), 99, dtype=torch.int32),
                              torch.empty_like(x))
    with pytest.raises(ValueError, match="indices holds 99, which names no input position"):
        B._C.max_pool2d_backward_cpu(B.view(grad), B.view(bad_ind), B.view(grad_in),
                                     2, 2, 2, 2, 0, 0, 1, 1)
