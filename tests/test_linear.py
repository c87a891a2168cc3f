"""pynn.functional.linear and pynn.nn.Linear against torch: forward, every gradient, layouts,
zero-size shapes, gradcheck, bad input, and the layer's init / state_dict / repr."""
import math

import pytest
import torch
import torch.nn.functional as TF

import pynn
import pynn.functional as F
from pynn import _backend as B
from conftest import CUDA, assert_close
from helpers import clone_leaf

# (input shape, out_features): the last input dim is in_features. Batch 1, odd sizes, 1-D and
# 3-D inputs, zero-size batch / in_features / out_features, and one shape big enough for the
# GEMM's blocking (K > 256) and the bias-gradient's split over rows. Few outputs for a batch of
# 40 or 600 take the CPU forward that puts the batch on the vector lanes (linear.cpp,
# narrow_forward): one chunk with a partial panel, and three chunks of 256, 256 and 88 rows.
SHAPES = [
    ((1, 5), 3),
    ((7, 13), 1),
    ((2, 3, 9), 17),
    ((9,), 4),
    ((0, 6), 5),
    ((2, 0, 6), 5),
    ((4, 0), 3),
    ((3, 8), 0),
    ((40, 10), 10),
    ((600, 64), 3),
    ((600, 300), 130),
]


def _ref_grads(x, w, b, g):
    """torch's linear in float64 and its gradients, cast back to x's dtype."""
    xd, wd = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    bd = None if b is None else b.detach().double().requires_grad_()
    y = TF.linear(xd, wd, bd)
    y.backward(g.double())
    out = [y.detach(), xd.grad, wd.grad, None if bd is None else bd.grad]
    return [None if t is None else t.to(x.dtype) for t in out]


@pytest.mark.parametrize("shape,out_features", SHAPES, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_forward_backward_parity(shape, out_features, bias, device, dtype):
    in_features = shape[-1]
    x = torch.randn(shape, dtype=dtype, device=device, requires_grad=True)
    w = torch.randn(out_features, in_features, dtype=dtype, device=device, requires_grad=True)
    b = torch.randn(out_features, dtype=dtype, device=device, requires_grad=True) if bias else None
    y = F.linear(x, w, b)
    assert y.shape == (*shape[:-1], out_features)
    g = torch.randn_like(y)
    y.backward(g)
    ey, egx, egw, egb = _ref_grads(x, w, b, g)
    rows = math.prod(shape[:-1])
    assert_close(y, ey, scale=max(1.0, math.sqrt(in_features)))
    assert_close(x.grad, egx, scale=max(1.0, math.sqrt(out_features)))
    assert_close(w.grad, egw, scale=max(1.0, math.sqrt(rows)))
    if bias:
        assert_close(b.grad, egb, scale=max(1.0, math.sqrt(rows)))


@pytest.mark.parametrize("layout", ["transposed_input", "sliced_3d_input", "transposed_weight",
                                    "strided_bias", "expanded_grad", "noncontig_grad"])
@pytest.mark.parametrize("rows", [6, 40])  # 40: the CPU's narrow forward (see SHAPES)
def test_layouts(layout, rows, device):
    x = torch.randn(rows, 10, device=device)
    w = torch.randn(7, 10, device=device)
    b = torch.randn(7, device=device)
    if layout == "transposed_input":
        x = torch.randn(10, rows, device=device).t()
    elif layout == "sliced_3d_input":
        x = torch.randn(4, rows, 20, device=device)[::2, :, ::2]
    elif layout == "transposed_weight":
        w = torch.randn(10, 7, device=device).t()
    elif layout == "strided_bias":
        b = torch.randn(14, device=device)[::2]
    assert layout in ("expanded_grad", "noncontig_grad") or not (
        x.is_contiguous() and w.is_contiguous() and b.is_contiguous())
    xa, wa, ba = clone_leaf(x), clone_leaf(w), clone_leaf(b)
    xb, wb, bb = clone_leaf(x), clone_leaf(w), clone_leaf(b)
    ya, yb = F.linear(xa, wa, ba), TF.linear(xb, wb, bb)
    assert_close(ya, yb, scale=3)
    if layout == "expanded_grad":
        ya.sum().backward()  # the gradient arrives with stride 0 in every dim
        yb.sum().backward()
    else:
        g = torch.randn(*reversed(ya.shape), device=device).transpose(0, -1)
        ya.backward(g)
        yb.backward(g)
    for a, b_ in [(xa, xb), (wa, wb), (ba, bb)]:
        assert_close(a.grad, b_.grad, scale=3)


def test_needs_input_grad_computes_only_what_is_asked(monkeypatch, device):
    """The backward is handed None for every gradient nobody asked for, so it does no GEMM for
    it; and the gradients that are asked for are still right."""
    calls = []
    real_launch = B.launch

    def spy(name, ref, *args):
        if name == "linear_backward":
            calls.append([a is not None for a in args[3:]])  # grad_input, grad_weight, grad_bias
        return real_launch(name, ref, *args)

    monkeypatch.setattr(B, "launch", spy)
    x0, w0, b0 = (torch.randn(5, 4, device=device), torch.randn(3, 4, device=device),
                  torch.randn(3, device=device))
    for req in [(True, False, False), (False, True, False), (False, False, True),
                (True, True, True), (False, True, True)]:
        calls.clear()
        x, w, b = (t.clone().requires_grad_(r) for t, r in zip((x0, w0, b0), req))
        F.linear(x, w, b).pow(2).sum().backward()
        assert calls == [list(req)]
        xr, wr, br = (t.clone().requires_grad_(r) for t, r in zip((x0, w0, b0), req))
        TF.linear(xr, wr, br).pow(2).sum().backward()
        for ours, ref in [(x, xr), (w, wr), (b, br)]:
            if ref.requires_grad:
                assert_close(ours.grad, ref.grad, scale=3)
            else:
                assert ours.grad is None


@pytest.mark.parametrize("shape,bias", [((4, 6), True), ((2, 3, 5), True), ((5,), False)],
                         ids=str)
def test_gradcheck(shape, bias, device):
    x = torch.randn(shape, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(3, shape[-1], dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, device=device, requires_grad=True) if bias else None
    assert torch.autograd.gradcheck(F.linear, (x, w, b))
    # double backward (gradient penalties) as torch.nn.Linear allows
    assert torch.autograd.gradgradcheck(F.linear, (x, w, b))


def test_nan_and_inf_propagate_like_torch(device):
    x = torch.tensor([[1.0, float("nan")], [float("inf"), 2.0], [1.0, 2.0]], device=device)
    w = torch.tensor([[1.0, 1.0], [0.5, -1.0]], device=device)
    b = torch.tensor([0.0, 1.0], device=device)
    torch.testing.assert_close(F.linear(x, w, b), TF.linear(x, w, b), equal_nan=True)


@pytest.mark.parametrize("kernel", ["avx512", "avx2", "generic"])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_narrow_forward_every_kernel(kernel, nthreads, dtype, monkeypatch):
    """The CPU forward for few outputs (linear.cpp, narrow_forward) runs on whichever GEMM kernel
    PYNN_GEMM_KERNEL forces, and splits a long batch into chunks over the threads: each gives the
    float64 answer. 20000 rows make dozens of chunks; 33 rows end mid-panel."""
    monkeypatch.setenv("PYNN_GEMM_KERNEL", kernel)
    try:
        F.linear(torch.ones(1, 1), torch.ones(1, 1))
    except RuntimeError as e:
        assert "cannot run" in str(e) and kernel != "generic"
        pytest.skip(f"this CPU cannot run the {kernel} kernel")
    old = torch.get_num_threads()
    torch.set_num_threads(nthreads)
    try:
        for rows, k, n in [(33, 5, 4), (40, 10, 3), (20000, 64, 1)]:
            x = torch.randn(rows, k, dtype=dtype)
            w = torch.randn(n, k, dtype=dtype)
            b = torch.randn(n, dtype=dtype)
            want = TF.linear(x.double(), w.double(), b.double()).to(dtype)
            assert_close(F.linear(x, w, b), want, scale=k)
            assert_close(F.linear(x, w), want - b, scale=k)
    finally:
        torch.set_num_threads(old)


def test_float64_stays_float64(device):
    x = torch.randn(3, 4, dtype=torch.float64, device=device)
    w = torch.randn(2, 4, dtype=torch.float64, device=device)
    y = F.linear(x, w)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, x @ w.t(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make,exc,match", [
    (lambda d: (torch.randn(3, 5, device=d), torch.randn(2, 4, device=d), None),
     ValueError, r"input has 5 features .* expects in_features=4"),
    (lambda d: (torch.randn(3, 4, device=d), torch.randn(2, 4, 1, device=d), None),
     ValueError, "weight must be 2-D"),
    (lambda d: (torch.randn(3, 4, device=d), torch.randn(4, device=d), None),
     ValueError, "weight must be 2-D"),
    (lambda d: (torch.randn(3, 4, device=d), torch.randn(2, 4, device=d), torch.randn(3, device=d)),
     ValueError, "bias has 3 elements .* out_features=2"),
    (lambda d: (torch.randn(3, 4, device=d), torch.randn(2, 4, device=d), torch.randn(1, 2, device=d)),
     ValueError, "bias must be 1-D"),
    (lambda d: (torch.randn(3, 4, device=d), torch.randn(2, 4, dtype=torch.float64, device=d), None),
     TypeError, "input is torch.float32 but weight is torch.float64"),
    (lambda d: (torch.randn(3, 4, device=d), torch.randn(2, 4, device=d), torch.randn(2, dtype=torch.float64, device=d)),
     TypeError, "bias is torch.float64"),
    (lambda d: (torch.ones(3, 4, dtype=torch.int64, device=d), torch.randn(2, 4, device=d), None),
     TypeError, "input must be float32 or float64"),
    (lambda d: (torch.randn(3, 4, device=d), torch.ones(2, 4, dtype=torch.int32, device=d), None),
     TypeError, "weight must be float32 or float64"),
    (lambda d: (torch.randn(3, 4, dtype=torch.float16, device=d), torch.randn(2, 4, dtype=torch.float16, device=d), None),
     TypeError, "float16"),
    (lambda d: (torch.tensor(1.0, device=d), torch.randn(2, 1, device=d), None),
     ValueError, "input must have at least 1 dim"),
    (lambda d: ([[1.0, 2.0]], torch.randn(2, 2, device=d), None),
     TypeError, "input must be a Tensor"),
    (lambda d: (torch.randn(3, 4, device=d), torch.randn(2, 4, device="meta"), None),
     RuntimeError, "weight is on meta"),
])
def test_bad_input(make, exc, match, device):
    x, w, b = make(device)
    with pytest.raises(exc, match=match):
        F.linear(x, w, b)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU to mix devices")
@pytest.mark.parametrize("which", ["weight", "bias"])
def test_mixed_devices_raise(which):
    x, w, b = torch.randn(3, 4, device="cuda"), torch.randn(2, 4, device="cuda"), torch.randn(2, device="cuda")
    if which == "weight":
        w = w.cpu()
    else:
        b = b.cpu()
    with pytest.raises(RuntimeError, match=f"input is on cuda:0 and {which} is on cpu"):
        F.linear(x, w, b)


def test_kernel_rejects_inconsistent_views_without_crashing():
    """The C++ entry point re-checks what Python already checked, so a direct call with
    mismatched views raises instead of reading out of bounds."""
    x, w, out = torch.randn(3, 4), torch.randn(2, 5), torch.empty(3, 2)
    with pytest.raises(ValueError, match="input has 4 features"):
        B._C.linear_forward_cpu(B.view(x), B.view(w), None, B.view(out))
    w = torch.randn(2, 4)
    with pytest.raises(ValueError, match="output has shape"):
        B._C.linear_forward_cpu(B.view(x), B.view(w), None, B.view(torch.empty(3, 3)))
    with pytest.raises(ValueError, match="grad_weight needs input"):
        B._C.linear_backward_cpu(B.view(torch.randn(3, 2)), None, B.view(w), None,
                                 B.view(torch.empty(2, 4)), None)


# ---- the layer -------------------------------------------------------------------------------

def test_layer_init_matches_torch_for_the_same_seed():
    for bias in (True, False):
        torch.manual_seed(123)
        ours = pynn.nn.Linear(37, 11, bias=bias)
        torch.manual_seed(123)
        ref = torch.nn.Linear(37, 11, bias=bias)
        torch.testing.assert_close(ours.weight, ref.weight, rtol=0, atol=0)
        if bias:
            torch.testing.assert_close(ours.bias, ref.bias, rtol=0, atol=0)
        else:
            assert ours.bias is None
        assert repr(ours) == repr(ref)
        assert list(ours.state_dict()) == list(ref.state_dict())


def test_reset_parameters_bounds():
    layer = pynn.nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
    layer.reset_parameters()
    for p in (layer.weight, layer.bias):
        assert p.abs().max() <= bound
        assert p.abs().max() > 0.9 * bound  # spread over the whole interval, not a fixed value
    # U(-b, b) has std b / sqrt(3); 120000 draws pin it to well under 1%
    assert abs(layer.weight.std().item() - bound / math.sqrt(3)) < 0.01 * bound


def test_layer_loads_torch_state_dict_and_matches(device, dtype):
    ref = torch.nn.Linear(9, 5, device=device, dtype=dtype)
    ours = pynn.nn.Linear(9, 5, device=device, dtype=dtype)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(4, 3, 9, device=device, dtype=dtype)
    xa, xb = clone_leaf(x), clone_leaf(x)
    ya, yb = ours(xa), ref(xb)
    assert_close(ya, yb, scale=3)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert_close(xa.grad, xb.grad, scale=3)
    assert_close(ours.weight.grad, ref.weight.grad, scale=4)
    assert_close(ours.bias.grad, ref.bias.grad, scale=4)
    # and the other way round
    ref2 = torch.nn.Linear(9, 5, device=device, dtype=dtype)
    ref2.load_state_dict(ours.state_dict(), strict=True)
    assert_close(ref2(x), ours(x), scale=3)


def test_layer_device_dtype_and_no_bias(device):
    layer = pynn.nn.Linear(3, 2, bias=False, device=device, dtype=torch.float64)
    assert layer.weight.device.type == device and layer.weight.dtype == torch.float64
    assert layer.bias is None and "bias" not in layer.state_dict()
    x = torch.randn(4, 3, device=device, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ layer.weight.t())
    assert repr(layer) == "Linear(in_features=3, out_features=2, bias=False)"


def test_output_accepts_in_place_ops_like_torch(device):
    # torch.nn.Linear followed by ReLU(inplace=True) is the classic classifier head
    x = torch.randn(3, 2, 5, device=device, requires_grad=True)
    w = torch.randn(4, 5, device=device, requires_grad=True)
    y = F.linear(x, w)
    y.relu_()
    y.sum().backward()
    x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    torch.nn.functional.linear(x2, w2).relu_().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(w.grad, w2.grad)
