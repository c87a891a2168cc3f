import pytest
import torch
import torch.nn.functional as TF

import pynn
import pynn.functional as F
from conftest import assert_close
from helpers import clone_leaf, non_contiguous

CASES = [
    ("sigmoid", F.sigmoid, torch.sigmoid),
    ("tanh", F.tanh, torch.tanh),
    ("relu", F.relu, TF.relu),
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2)),
    ("leaky_relu_neg", lambda x: F.leaky_relu(x, -0.3), lambda x: TF.leaky_relu(x, -0.3)),
]
SHAPES = [(1,), (7,), (3, 5), (2, 3, 4, 5), (0, 4), (65537,)]


@pytest.mark.parametrize("name,ours,ref", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_backward_parity(name, ours, ref, shape, device, dtype):
    x = (torch.randn(shape, dtype=dtype, device=device) * 3)
    a, b = clone_leaf(x), clone_leaf(x)
    ya, yb = ours(a), ref(b)
    assert_close(ya, yb)
    g = torch.randn_like(yb)
    ya.backward(g)
    yb.backward(g)
    assert_close(a.grad, b.grad)


@pytest.mark.parametrize("name,ours,ref", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("layout", ["transposed", "channels_last", "strided_slice", "expanded"])
def test_layouts(name, ours, ref, layout, device):
    x = torch.randn(2, 3, 4, 5, device=device)
    if layout == "transposed":
        x = non_contiguous(x)
    elif layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "strided_slice":
        x = x[:, ::2, 1:, ::3]
    else:
        x = torch.randn(1, 3, 1, 5, device=device).expand(2, 3, 4, 5)
    a = x.detach().clone().requires_grad_() if layout != "expanded" else x.clone().requires_grad_()
    y = ours(x)
    assert_close(y, ref(x))
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    # the gradient of a sum arrives expanded (stride 0): the backward must cope
    a2 = a.detach().clone().requires_grad_()
    ours(a).sum().backward()
    ref(a2).sum().backward()
    assert_close(a.grad, a2.grad)


@pytest.mark.parametrize("name,ours,ref", CASES, ids=[c[0] for c in CASES])
def test_gradcheck(name, ours, ref, device):
    x = torch.randn(4, 6, dtype=torch.float64, device=device)
    x = x + 0.1 * torch.sign(x)  # keep away from the kink at 0
    assert torch.autograd.gradcheck(ours, (x.requires_grad_(),))


def test_nan_inf_propagate_like_torch(device):
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e30, -1e30],
                     device=device)
    for _, ours, ref in CASES:
        torch.testing.assert_close(ours(x), ref(x), equal_nan=True)


@pytest.mark.parametrize("fn,ref", [(F.relu, TF.relu), (lambda x, inplace: F.leaky_relu(x, 0.1, inplace),
                                                        lambda x, inplace: TF.leaky_relu(x, 0.1, inplace))])
def test_inplace(fn, ref, device):
    base = torch.randn(4, 5, device=device, requires_grad=True)
    a = base * 1.0
    out = fn(a, inplace=True)
    assert out is a
    b = base.detach().clone().requires_grad_()
    expected = ref(b * 1.0, inplace=True)
    assert_close(a, expected)
    g = torch.randn(4, 5, device=device)
    out.backward(g)
    expected.backward(g)
    assert_close(base.grad, b.grad)
    # in place on a non-dense view writes through to the base tensor
    m = torch.randn(6, 6, device=device)
    view = m[:, ::2]
    want = ref(view.clone(), inplace=False)
    fn(view, inplace=True)
    assert_close(m[:, ::2], want)


def test_inplace_on_leaf_requiring_grad_raises(device):
    x = torch.randn(3, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        F.relu(x, inplace=True)


def test_layers_match_torch(device):
    x = torch.randn(3, 4, device=device)
    for ours, ref in [(pynn.nn.Sigmoid(), torch.nn.Sigmoid()), (pynn.nn.Tanh(), torch.nn.Tanh()),
                      (pynn.nn.ReLU(), torch.nn.ReLU()),
                      (pynn.nn.LeakyReLU(0.3), torch.nn.LeakyReLU(0.3))]:
        assert_close(ours(x), ref(x))
        assert repr(ours) == repr(ref)


@pytest.mark.parametrize("bad,exc,match", [
    (lambda d: torch.ones(3, dtype=torch.int64, device=d), TypeError, "input must be float32 or float64"),
    (lambda d: [1.0, 2.0], TypeError, "input must be a Tensor"),
    (lambda d: torch.ones(3, dtype=torch.float16, device=d), TypeError, "float16"),
])
def test_bad_input(bad, exc, match, device):
    with pytest.raises(exc, match=match):
        F.relu(bad(device))
