import warnings

import pytest
import torch
import torch.nn.functional as TF
from torch.utils._python_dispatch import TorchDispatchMode

import pynn
import pynn.functional as F
from conftest import assert_close
from helpers import clone_leaf, non_contiguous

OPS = [("softmax", F.softmax, TF.softmax), ("log_softmax", F.log_softmax, TF.log_softmax)]
OP_IDS = [o[0] for o in OPS]
# (shape, dim): batch 1, one class, odd and classifier-sized rows, first/middle/last/negative dims,
# a row longer than a warp's stride, zero-size tensors (empty rows and no rows) and 0-D. Rows of
# 45 take each part of the CPU's vector reductions (cpu/row_reduce.h): 32 at a time, 8 at a time
# and a scalar tail for the sums, 16 at a time and a tail for the maximum. 300 positions behind
# the dim split into two CPU tiles of columns (160 + 140).
GRID = [
    ((1, 1), -1), ((1, 1000), 1), ((32, 10), 1), ((3, 1000), -1), ((3, 45), 1), ((7,), 0),
    ((5, 3), 0), ((2, 3, 300), 1),
    ((2, 3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), -1), ((2, 5, 3, 4), 2), ((2, 1001, 3), -2),
    ((2, 5, 17), 1),
    ((0, 4), 1), ((4, 0), 1), ((4, 0), 0), ((), 0), ((), -1),
]


@pytest.mark.parametrize("name,ours,ref", OPS, ids=OP_IDS)
@pytest.mark.parametrize("shape,dim", GRID, ids=[f"{s}-d{d}" for s, d in GRID])
def test_forward_backward_parity(name, ours, ref, shape, dim, device, dtype):
    x = torch.randn(shape, dtype=dtype, device=device) * 3
    a, b = clone_leaf(x), clone_leaf(x)
    ya, yb = ours(a, dim), ref(b, dim)
    assert ya.shape == yb.shape and ya.dtype == yb.dtype
    assert_close(ya, yb)
    g = torch.randn_like(yb)
    ya.backward(g)
    yb.backward(g)
    assert_close(a.grad, b.grad, scale=10)


@pytest.mark.parametrize("name,ours,ref", OPS, ids=OP_IDS)
@pytest.mark.parametrize("layout", ["transposed", "strided_slice", "channels_last", "expanded"])
def test_layouts(name, ours, ref, layout, device):
    x = torch.randn(2, 6, 4, 5, device=device)
    if layout == "transposed":
        x = non_contiguous(x)
    elif layout == "strided_slice":
        x = x[:, ::2, 1:, ::2]
    elif layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    else:
        x = torch.randn(1, 6, 1, 5, device=device).expand(2, 6, 4, 5)
    for dim in (1, -1):
        a = x.detach().clone().requires_grad_() if layout != "expanded" else x.clone().requires_grad_()
        if layout == "transposed":
            a = non_contiguous(x.detach()).requires_grad_()
        b = a.detach().clone().requires_grad_()
        ya, yb = ours(a, dim), ref(b, dim)
        assert_close(ya, yb)
        w = torch.arange(ya.numel(), device=device, dtype=ya.dtype).view_as(ya)
        (ya * w).sum().backward()
        (yb * w).sum().backward()
        assert_close(a.grad, b.grad, scale=100)
        # the gradient of a plain sum arrives expanded (stride 0): the backward must cope
        a.grad, b.grad = None, None
        ours(a, dim).sum().backward()
        ref(b, dim).sum().backward()
        assert_close(a.grad, b.grad, scale=100)


@pytest.mark.parametrize("name,ours,ref", OPS, ids=OP_IDS)
def test_huge_logits_do_not_overflow(name, ours, ref, device, dtype):
    big = 1e4 if dtype == torch.float32 else 1e30
    x = torch.tensor([[big, -big, 0.0, big - 1], [-big, -big, -big, -big + 2]], dtype=dtype,
                     device=device, requires_grad=True)
    y = ours(x, 1)
    assert torch.isfinite(y).all()
    x2 = x.detach().clone().requires_grad_()
    y2 = ref(x2, 1)
    assert_close(y, y2)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    assert torch.isfinite(x.grad).all()
    assert_close(x.grad, x2.grad)


@pytest.mark.parametrize("name,ours,ref", OPS, ids=OP_IDS)
def test_nan_inf_propagate_like_torch(name, ours, ref, device):
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([[1.0, nan, 2.0], [1.0, inf, 2.0], [-inf, -inf, -inf], [-inf, 0.0, 1.0],
                      [inf, inf, 0.0]], device=device)
    torch.testing.assert_close(ours(x, 1), ref(x, 1), equal_nan=True)


@pytest.mark.parametrize("name,ours,ref", OPS, ids=OP_IDS)
@pytest.mark.parametrize("shape,dim", [((4, 6), 1), ((4, 6), 0), ((2, 3, 4), 1)])
def test_gradcheck(name, ours, ref, shape, dim, device):
    x = torch.randn(shape, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ours(t, dim), (x,))


@pytest.mark.parametrize("name,ours,ref", OPS, ids=OP_IDS)
def test_dtype_argument_casts_first(name, ours, ref, device):
    x = torch.randn(3, 5, device=device, requires_grad=True)
    y = ours(x, 1, dtype=torch.float64)
    assert y.dtype == torch.float64
    x2 = x.detach().clone().requires_grad_()
    y2 = ref(x2, 1, dtype=torch.float64)
    assert_close(y, y2)
    y.sum().backward()
    y2.sum().backward()
    assert x.grad.dtype == torch.float32
    assert_close(x.grad, x2.grad)
    # integer input is fine once a floating dtype is asked for
    xi = torch.arange(6, device=device).view(2, 3)
    assert_close(ours(xi, 1, dtype=torch.float32), ref(xi, 1, dtype=torch.float32))


@pytest.mark.parametrize("name,ours,ref", OPS, ids=OP_IDS)
@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4), (2, 3, 4, 5)], ids=str)
def test_implicit_dim_follows_torch_and_warns(name, ours, ref, shape, device):
    x = torch.randn(shape, device=device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = ours(x)
        expected = ref(x)
    assert_close(y, expected)
    msgs = [str(w.message) for w in caught]
    assert sum("Implicit dimension choice" in m for m in msgs) == 2
    # the warning points at the caller, as torch's does
    assert all(w.filename == __file__ for w in caught)


def test_no_aten_softmax_or_reduction_dispatched(device):
    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    x = torch.randn(4, 7, device=device, requires_grad=True)
    with Record():
        y = F.log_softmax(F.softmax(x, 1), 0)
        y.backward(torch.ones_like(y))
    bad = [op for op in seen if any(k in op for k in ("softmax", "sum", "mean", "exp", "max"))]
    assert not bad, bad


@pytest.mark.parametrize("bad,kw,exc,match", [
    (lambda d: torch.ones(3, dtype=torch.int64, device=d), {}, TypeError, "input must be float32"),
    (lambda d: [1.0, 2.0], {}, TypeError, "input must be a Tensor"),
    (lambda d: torch.ones(3, dtype=torch.float16, device=d), {}, TypeError, "float16"),
    (lambda d: torch.ones(3, 4, device=d), {"dim": 2}, IndexError, "dim 2 is out of range"),
    (lambda d: torch.ones(3, 4, device=d), {"dim": -3}, IndexError, "out of range"),
    (lambda d: torch.tensor(1.0, device=d), {"dim": 1}, IndexError, "out of range"),
    (lambda d: torch.ones(3, 4, device=d), {"dim": 1.0}, TypeError, "dim must be an int"),
    (lambda d: torch.ones(3, device=d), {"dim": 0, "dtype": torch.float16}, TypeError, "dtype"),
    (lambda d: torch.ones(3, device="meta"), {"dim": 0}, RuntimeError, "input is on meta"),
])
@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax], ids=["softmax", "log_softmax"])
def test_bad_input(fn, bad, kw, exc, match, device):
    with pytest.raises(exc, match=match):
        fn(bad(device), **kw)


@pytest.mark.parametrize("ours,ref", [(pynn.nn.Softmax, torch.nn.Softmax),
                                      (pynn.nn.LogSoftmax, torch.nn.LogSoftmax)])
def test_layers_match_torch(ours, ref, device):
    for dim in (None, 0, 1, -1):
        a, b = ours(dim), ref(dim)
        assert repr(a) == repr(b)
        a.load_state_dict(b.state_dict(), strict=True)
        x = torch.randn(3, 4, 5, device=device, requires_grad=True)
        x2 = x.detach().clone().requires_grad_()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ya, yb = a(x), b(x2)
        assert_close(ya, yb)
        g = torch.randn_like(yb)
        ya.backward(g)
        yb.backward(g)
        assert_close(x.grad, x2.grad)
    assert not isinstance(pynn.nn.LogSoftmax(1), pynn.nn.Softmax)
