import pytest
import torch
import torch.nn.functional as TF

import pynn
import pynn.functional as F
from conftest import assert_close
from helpers import clone_leaf, non_contiguous


def naive_lrn(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """Straight from the definition, in float64: channel c sees channels
    c - size//2 .. c + (size-1)//2 (those that exist), averaged over size."""
    x = x.double()
    out = torch.empty_like(x)
    C = x.shape[1]
    for c in range(C):
        acc = torch.zeros_like(x[:, 0])
        for j in range(c - size // 2, c + (size - 1) // 2 + 1):
            if 0 <= j < C:
                acc = acc + x[:, j] * x[:, j]
        out[:, c] = x[:, c] / (k + alpha / size * acc) ** beta
    return out


def run_pair(x, *args, g=None):
    a, b = clone_leaf(x), clone_leaf(x)
    ya, yb = F.local_response_norm(a, *args), TF.local_response_norm(b, *args)
    g = torch.randn_like(yb) if g is None else g
    ya.backward(g)
    yb.backward(g)
    return ya, yb, a.grad, b.grad


# (shape, size): odd channel counts, size 1, even sizes, size > C, 3-D and 5-D, batch 1, and
# planes longer than one CPU block (P > 512) with a tail.
CASES = [
    ((2, 7, 5, 3), 5), ((2, 7, 5, 3), 1), ((2, 7, 5, 3), 2), ((2, 7, 5, 3), 4),
    ((1, 3, 4, 4), 9), ((3, 5, 11), 3), ((1, 6, 2, 3, 4), 6), ((2, 1, 3, 3), 3),
    ((2, 40, 37, 29), 5), ((3, 5, 1, 1), 3),
]


@pytest.mark.parametrize("shape,size", CASES, ids=[f"{s}-{n}" for s, n in CASES])
def test_parity_with_torch(shape, size, device, dtype):
    x = torch.randn(shape, dtype=dtype, device=device) * 3
    ya, yb, ga, gb = run_pair(x, size, 2e-2, 0.75, 1.5)
    assert_close(ya, yb)
    assert_close(ga, gb)


@pytest.mark.parametrize("beta", [0.75, 0.5, 1.0, 0.6, 2.0, -0.3, 0.0])
def test_betas_and_constants(beta, device, dtype):
    # 0.5, 0.75 and 1 take the square-root fast paths; the rest go through pow.
    x = torch.randn(2, 9, 4, 5, dtype=dtype, device=device) * 2
    for alpha, k in [(1e-4, 1.0), (0.5, 2.0), (3.0, 0.3)]:
        ya, yb, ga, gb = run_pair(x, 3, alpha, beta, k)
        assert_close(ya, yb)
        assert_close(ga, gb)


@pytest.mark.parametrize("shape,size", [((2, 7, 5, 3), 5), ((3, 5, 11), 4), ((1, 6, 2, 3, 4), 3)])
def test_matches_definition(shape, size, device):
    x = torch.randn(shape, dtype=torch.float64, device=device) * 4
    assert_close(F.local_response_norm(x, size, 0.3, 0.8, 1.2), naive_lrn(x, size, 0.3, 0.8, 1.2))


def test_float64_sliding_sum_keeps_small_channels(device):
    # A huge channel leaves the sliding window; the channels after it must keep full precision.
    x = torch.rand(2, 12, 3, 3, dtype=torch.float64, device=device) + 0.5
    x[:, 3] = 1e7
    y = F.local_response_norm(x, 3, 1.0, 0.75, 1.0)
    torch.testing.assert_close(y, naive_lrn(x, 3, 1.0, 0.75, 1.0), rtol=1e-13, atol=0)


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "channel_slice", "expanded_grad"])
def test_layouts(layout, device, dtype):
    x = torch.randn(2, 12, 5, 7, dtype=dtype, device=device)
    if layout == "channels_last":
        a = x.to(memory_format=torch.channels_last)
    elif layout == "transposed":
        a = non_contiguous(x)
    elif layout == "channel_slice":
        a = x[:, ::2]
    else:
        a = x
    a.requires_grad_()
    b = a.detach().clone().requires_grad_()
    ya, yb = F.local_response_norm(a, 3), TF.local_response_norm(b, 3)
    assert_close(ya, yb)
    if layout == "channels_last":
        assert ya.is_contiguous(memory_format=torch.channels_last)
    if layout == "expanded_grad":
        ya.sum().backward()  # the gradient arrives expanded (stride 0)
        yb.sum().backward()
    else:
        g = torch.randn_like(yb)
        ya.backward(g)
        yb.backward(g)
    assert_close(a.grad, b.grad)


def test_channels_last_3d(device, dtype):
    x = torch.randn(2, 5, 3, 4, 6, dtype=dtype, device=device).to(
        memory_format=torch.channels_last_3d)
    ya, yb, ga, gb = run_pair(x, 4)
    assert_close(ya, yb)
    assert_close(ga, gb)


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 0, 4), (2, 3, 0, 5)])
def test_zero_size(shape, device, dtype):
    x = torch.randn(shape, dtype=dtype, device=device, requires_grad=True)
    y = F.local_response_norm(x, 3)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("size", [1, 2, 5, 8])
def test_gradcheck(size, device):
    x = torch.randn(2, 5, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: F.local_response_norm(t, size, 0.5, 0.75, 1.0), (x,))
    assert torch.autograd.gradcheck(lambda t: F.local_response_norm(t, size, 0.2, 0.6, 2.0), (x,))


def test_gradcheck_channels_last_and_3d(device):
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, device=device)
    x = x.to(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: F.local_response_norm(t, 3, 0.5, 0.75, 1.0), (x,))
    x3 = torch.randn(3, 6, 4, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: F.local_response_norm(t, 4, 0.5, 1.0, 1.0), (x3,))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_stays_in_its_windows(bad, device, dtype):
    # A sliding sum must not spread a NaN/inf beyond the windows that contain it.
    x = torch.randn(2, 11, 3, 600, dtype=dtype, device=device)  # > one CPU block of pixels
    x[0, 2, 1, 7] = bad
    x[1, 9, 0, 599] = bad
    ya, yb = F.local_response_norm(x, 3), TF.local_response_norm(x, 3)
    torch.testing.assert_close(ya, yb, equal_nan=True, **_tol(dtype))
    xc = x.to(memory_format=torch.channels_last)
    torch.testing.assert_close(F.local_response_norm(xc, 3), yb, equal_nan=True, **_tol(dtype))


def test_non_finite_gradient_stays_local(device):
    x = torch.randn(2, 9, 4, 4, dtype=torch.float64, device=device)
    g = torch.randn_like(x)
    g[0, 4, 1, 1] = float("inf")
    ya, yb, ga, gb = run_pair(x, 3, g=g)
    torch.testing.assert_close(ga, gb, equal_nan=True)
    assert torch.isfinite(ga[1]).all() and torch.isfinite(ga[0, :, 0]).all()


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


def test_layer(device, dtype):
    x = torch.randn(2, 6, 4, 4, dtype=dtype, device=device)
    for args in [(5,), (3, 1e-3, 0.5, 2.0), (2,)]:
        ours, ref = pynn.nn.LocalResponseNorm(*args), torch.nn.LocalResponseNorm(*args)
        assert repr(ours) == repr(ref)
        assert_close(ours(x), ref(x))
        assert ours.state_dict().keys() == ref.state_dict().keys()
        ours.load_state_dict(ref.state_dict(), strict=True)


def test_no_grad_forward(device):
    x = torch.randn(2, 6, 4, 4, device=device)
    with torch.no_grad():
        assert_close(F.local_response_norm(x, 5), TF.local_response_norm(x, 5))


@pytest.mark.parametrize("call,exc,match", [
    (lambda d: F.local_response_norm(torch.randn(3, 4, device=d), 2), ValueError, "3D or higher"),
    (lambda d: F.local_response_norm(torch.randn(3, device=d), 2), ValueError, "3D or higher"),
    (lambda d: F.local_response_norm(torch.ones(2, 3, 4, dtype=torch.int64, device=d), 2),
     TypeError, "input must be float32 or float64"),
    (lambda d: F.local_response_norm(torch.ones(2, 3, 4, dtype=torch.float16, device=d), 2),
     TypeError, "float16"),
    (lambda d: F.local_response_norm([[1.0]], 2), TypeError, "input must be a Tensor"),
    (lambda d: F.local_response_norm(torch.randn(2, 3, 4, device=d), 0), ValueError, "size must be >= 1"),
    (lambda d: F.local_response_norm(torch.randn(2, 3, 4, device=d), -2), ValueError, "size must be >= 1"),
    (lambda d: F.local_response_norm(torch.randn(2, 3, 4, device=d), 2.5), TypeError, "size must be an int"),
    (lambda d: F.local_response_norm(torch.randn(2, 3, 4, device=d), 2, alpha="x"), TypeError, "alpha"),
])
def test_bad_input(call, exc, match, device):
    with pytest.raises(exc, match=match):
        call(device)


def test_kernel_rejects_mismatched_views():
    from pynn import _backend as B
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="output"):
        B.launch("lrn_forward", x, B.view(x), B.view(torch.empty(2, 3, 5)), B.view(torch.empty(2, 3, 4)),
                 3, 1e-4, 0.75, 1.0)
    with pytest.raises(TypeError, match="dtype"):
        B.launch("lrn_backward", x, B.view(x), B.view(x), B.view(x.double()), B.view(x), 3, 1e-4, 0.75)
    with pytest.raises(ValueError, match="size"):
        B.launch("lrn_forward", x, B.view(x), B.view(x.clone()), B.view(x.clone()), 0, 1e-4, 0.75, 1.0)
