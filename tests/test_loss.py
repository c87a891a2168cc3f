import warnings

import pytest
import torch
import torch.nn.functional as TF
from torch.utils._python_dispatch import TorchDispatchMode

import pynn
import pynn.functional as F
from conftest import assert_close
from helpers import clone_leaf, non_contiguous

REDUCTIONS = ["none", "mean", "sum"]


def _on(device, kw):
    """Tensor keyword arguments moved to the device under test, so that each bad-input case
    fails on the property it names rather than on a device mismatch."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


def run_pair(ours, ref, tensors, grad_scale=10.0, check_grads=True, tol_dtype=None):
    """Calls ours and ref on identical leaf copies; compares outputs and every gradient."""
    a = [clone_leaf(t, t.requires_grad) for t in tensors]
    b = [clone_leaf(t, t.requires_grad) for t in tensors]
    ya, yb = ours(*a), ref(*b)
    assert ya.shape == yb.shape and ya.dtype == yb.dtype
    assert_close(ya, yb, tol_dtype, scale=grad_scale, equal_nan=True)
    if check_grads and any(t.requires_grad for t in tensors):
        g = torch.randn_like(yb)
        ya.backward(g)
        yb.backward(g)
        for ta, tb in zip(a, b):
            if tb.requires_grad:
                assert_close(ta.grad, tb.grad, tol_dtype, scale=grad_scale)
    return ya, yb


class RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


# ---------------------------------------------------------------------------- mse_loss

MSE_SHAPES = [(1,), (7,), (3, 5), (2, 3, 4, 5), (0, 4), (65537,)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", MSE_SHAPES, ids=str)
def test_mse_parity(shape, reduction, device, dtype):
    x = torch.randn(shape, dtype=dtype, device=device, requires_grad=True)
    t = torch.randn(shape, dtype=dtype, device=device, requires_grad=True)
    run_pair(lambda x, t: F.mse_loss(x, t, reduction=reduction),
             lambda x, t: TF.mse_loss(x, t, reduction=reduction), [x, t])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_weight(reduction, device, dtype):
    x = torch.randn(4, 5, dtype=dtype, device=device, requires_grad=True)
    t = torch.randn(4, 5, dtype=dtype, device=device, requires_grad=True)
    w = torch.rand(4, 5, dtype=dtype, device=device, requires_grad=True)
    run_pair(lambda x, t, w: F.mse_loss(x, t, reduction=reduction, weight=w),
             lambda x, t, w: TF.mse_loss(x, t, reduction=reduction, weight=w), [x, t, w])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_mse_broadcast_warns_like_torch(reduction, weighted, device):
    x = torch.randn(3, 1, device=device, requires_grad=True)
    t = torch.randn(3, 4, device=device, requires_grad=True)
    tensors = [x, t] + ([torch.rand(3, 1, device=device, requires_grad=True)] if weighted else [])
    with pytest.warns(UserWarning, match="different to the input size"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="torch")
            run_pair(lambda *a: F.mse_loss(*a[:2], reduction=reduction, weight=a[2] if weighted else None),
                     lambda *a: TF.mse_loss(*a[:2], reduction=reduction, weight=a[2] if weighted else None),
                     tensors)


@pytest.mark.parametrize("size_average", [None, True, False])
@pytest.mark.parametrize("reduce", [None, True, False])
def test_mse_legacy_args(size_average, reduce, device):
    x = torch.randn(3, 4, device=device, requires_grad=True)
    t = torch.randn(3, 4, device=device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_pair(lambda x, t: F.mse_loss(x, t, size_average, reduce, reduction="sum"),
                 lambda x, t: TF.mse_loss(x, t, size_average, reduce, reduction="sum"), [x, t])
    legacy = [w for w in caught if "size_average and reduce args will be deprecated" in str(w.message)]
    assert len(legacy) == (0 if size_average is None and reduce is None else 2)


def test_mse_layouts_and_mixed_dtypes(device):
    x = non_contiguous(torch.randn(5, 6, device=device)).requires_grad_()
    t = torch.randn(6, 5, device=device).t()
    run_pair(F.mse_loss, TF.mse_loss, [x, t])
    # float32 input against a float64 target computes in float64, as torch promotes. The
    # reference promotes explicitly: torch 2.11's own mixed-dtype mse_loss backward fails
    # ("Found dtype Double but expected Float").
    x32 = torch.randn(3, 4, device=device, requires_grad=True)
    t64 = torch.randn(3, 4, device=device, dtype=torch.float64, requires_grad=True)
    run_pair(F.mse_loss, lambda a, b: TF.mse_loss(a.double(), b), [x32, t64])


def test_mse_gradcheck(device):
    kw = dict(dtype=torch.float64, device=device, requires_grad=True)
    x, t, w = torch.randn(3, 4, **kw), torch.randn(3, 4, **kw), torch.rand(3, 4, **kw)
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(lambda x, t: F.mse_loss(x, t, reduction=reduction), (x, t))
        assert torch.autograd.gradcheck(
            lambda x, t, w: F.mse_loss(x, t, reduction=reduction, weight=w), (x, t, w))


def test_mse_nan_and_empty_like_torch(device):
    x = torch.tensor([1.0, float("nan"), 2.0, float("inf")], device=device)
    t = torch.zeros(4, device=device)
    for reduction in REDUCTIONS:
        torch.testing.assert_close(F.mse_loss(x, t, reduction=reduction),
                                   TF.mse_loss(x, t, reduction=reduction), equal_nan=True)
    e = torch.empty(0, device=device)
    torch.testing.assert_close(F.mse_loss(e, e), TF.mse_loss(e, e), equal_nan=True)  # nan
    torch.testing.assert_close(F.mse_loss(e, e, reduction="sum"), TF.mse_loss(e, e, reduction="sum"))


@pytest.mark.parametrize("args,kw,exc,match", [
    (lambda d: (torch.ones(3, dtype=torch.int64, device=d), torch.ones(3, device=d)), {},
     TypeError, "input must be float32"),
    (lambda d: (torch.ones(3, device=d), torch.ones(3, dtype=torch.int64, device=d)), {},
     TypeError, "target must be float32"),
    (lambda d: (torch.ones(3, device=d), [1.0, 2.0, 3.0]), {}, TypeError, "target must be a Tensor"),
    (lambda d: (torch.ones(3, device=d), torch.ones(4, device=d)), {}, ValueError,
     "cannot be broadcast"),
    (lambda d: (torch.ones(3, device=d), torch.ones(3, device="meta")), {}, RuntimeError,
     "target is on meta"),
    (lambda d: (torch.ones(3, device=d), torch.ones(3, device=d)), {"reduction": "avg"},
     ValueError, "avg is not a valid value for reduction"),
    (lambda d: (torch.ones(3, device=d), torch.ones(3, device=d)), {"weight": "w"}, TypeError,
     "weight must be a Tensor"),
    (lambda d: (torch.ones(3, device=d), torch.ones(3, device=d)),
     {"weight": torch.ones(2)}, ValueError, "weight must have the input's size"),
])
def test_mse_bad_input(args, kw, exc, match, device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc, match=match):
            F.mse_loss(*args(device), **_on(device, kw))


# ---------------------------------------------------------------------------- cross_entropy

# (input shape): unbatched, batch 1, one class, odd and classifier-sized class counts, K-dim
# (17 and 300 positions: one CPU tile of columns, and two of 160 and 140). 45 classes take each
# part of the CPU's vector sums over a row (32 at a time, 8 at a time, a scalar tail).
CE_SHAPES = [(7,), (1, 1), (1, 3), (5, 3), (32, 10), (3, 45), (4, 1000), (2, 3, 4),
             (2, 5, 3, 4), (2, 3, 17), (2, 3, 300), (0, 3)]


def class_target(shape, device, ignore_index=-100, every=3):
    classes = shape[1] if len(shape) > 1 else shape[0]
    tshape = (shape[0],) + shape[2:] if len(shape) > 1 else ()
    t = torch.randint(0, classes, tshape, device=device)
    if t.dim() and t.numel() > 1:
        t.view(-1)[1::every] = ignore_index  # some ignored samples, never all
    return t


def prob_target(shape, device, dtype):
    dim = 1 if len(shape) > 1 else 0
    return torch.softmax(torch.randn(shape, device=device, dtype=dtype) * 2, dim)


@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("smoothing", [0.0, 0.15])
def test_ce_class_targets(shape, weighted, smoothing, device, dtype):
    x = torch.randn(shape, dtype=dtype, device=device, requires_grad=True) * 3
    classes = shape[1] if len(shape) > 1 else shape[0]
    t = class_target(shape, device)
    w = torch.rand(classes, dtype=dtype, device=device) + 0.1 if weighted else None
    for reduction in REDUCTIONS:
        kw = dict(weight=w, reduction=reduction, label_smoothing=smoothing)
        run_pair(lambda x: F.cross_entropy(x, t, **kw), lambda x: TF.cross_entropy(x, t, **kw),
                 [x.detach().requires_grad_()])


@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("smoothing", [0.0, 0.15])
def test_ce_prob_targets(shape, weighted, smoothing, device, dtype):
    x = torch.randn(shape, dtype=dtype, device=device) * 3
    classes = shape[1] if len(shape) > 1 else shape[0]
    p = prob_target(shape, device, dtype)
    w = torch.rand(classes, dtype=dtype, device=device) + 0.1 if weighted else None
    for reduction in REDUCTIONS:
        kw = dict(weight=w, reduction=reduction, label_smoothing=smoothing)
        ya, yb = run_pair(lambda x, p: F.cross_entropy(x, p, **kw),
                          lambda x, p: TF.cross_entropy(x, p, **kw),
                          [x.requires_grad_(), p.requires_grad_()])
        if x.numel() == 0 and reduction == "mean":
            assert ya.isnan() and yb.isnan()


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
def test_ce_ignore_index(smoothing, weighted, device):
    x = torch.randn(6, 4, device=device, requires_grad=True)
    w = torch.rand(4, device=device) + 0.1 if weighted else None
    # an in-range ignore_index, a custom negative one, and every target ignored (mean is nan)
    for t, ignore in [(torch.tensor([0, 1, 2, 3, 1, 1]), 1), (torch.tensor([0, -1, 2, -1, 3, 0]), -1),
                      (torch.full((6,), -100), -100)]:
        t = t.to(device)
        for reduction in REDUCTIONS:
            kw = dict(weight=w, ignore_index=ignore, reduction=reduction, label_smoothing=smoothing)
            ya, yb = run_pair(lambda x: F.cross_entropy(x, t, **kw),
                              lambda x: TF.cross_entropy(x, t, **kw), [x])
            torch.testing.assert_close(ya, yb, equal_nan=True)
    assert F.cross_entropy(x, torch.full((6,), -100, device=device)).isnan()


@pytest.mark.parametrize("layout", ["transposed", "channels_last", "strided_slice"])
def test_ce_layouts(layout, device, dtype):
    if layout == "transposed":
        x = non_contiguous(torch.randn(6, 5, dtype=dtype, device=device))
    elif layout == "channels_last":
        x = torch.randn(2, 5, 3, 4, dtype=dtype, device=device).to(memory_format=torch.channels_last)
    else:
        x = torch.randn(6, 10, dtype=dtype, device=device)[::2, 1::2]
    x.requires_grad_()
    t = class_target(tuple(x.shape), device)
    p = non_contiguous(prob_target(tuple(x.shape), device, dtype)).requires_grad_()
    for reduction in REDUCTIONS:
        run_pair(lambda x: F.cross_entropy(x, t, reduction=reduction),
                 lambda x: TF.cross_entropy(x, t, reduction=reduction), [x])
        run_pair(lambda x, p: F.cross_entropy(x, p, reduction=reduction),
                 lambda x, p: TF.cross_entropy(x, p, reduction=reduction), [x, p])


def test_ce_huge_logits(device, dtype):
    big = 1e4 if dtype == torch.float32 else 1e30
    x = torch.tensor([[big, -big, 0.0], [-big, big, big], [0.0, 0.0, -big]], dtype=dtype,
                     device=device, requires_grad=True)
    t = torch.tensor([1, 2, 0], device=device)
    p = torch.tensor([[0.2, 0.3, 0.5]] * 3, dtype=dtype, device=device)
    for target in (t, p):
        for reduction in REDUCTIONS:
            ya, _ = run_pair(lambda x: F.cross_entropy(x, target, reduction=reduction, label_smoothing=0.1),
                             lambda x: TF.cross_entropy(x, target, reduction=reduction, label_smoothing=0.1),
                             [x], grad_scale=1.0)
            assert torch.isfinite(ya).all()


def test_ce_nan_propagates_like_torch(device):
    x = torch.randn(3, 4, device=device)
    x[1, 2] = float("nan")
    t = torch.tensor([0, 1, 3], device=device)
    for reduction in REDUCTIONS:
        torch.testing.assert_close(F.cross_entropy(x, t, reduction=reduction),
                                   TF.cross_entropy(x, t, reduction=reduction), equal_nan=True)
        p = prob_target((3, 4), device, torch.float32)
        torch.testing.assert_close(F.cross_entropy(x, p, reduction=reduction),
                                   TF.cross_entropy(x, p, reduction=reduction), equal_nan=True)


def test_ce_target_forms(device):
    x = torch.randn(5, device=device, requires_grad=True)
    for t in (torch.tensor(3), torch.tensor([3]), torch.tensor(3, dtype=torch.uint8)):
        t = t.to(device)
        for reduction in REDUCTIONS:
            # torch's own backward rejects the one-element 1-D target, so compare forward only
            run_pair(lambda x: F.cross_entropy(x, t, reduction=reduction),
                     lambda x: TF.cross_entropy(x, t, reduction=reduction), [x],
                     check_grads=t.dim() == 0)
    xb = torch.randn(4, 3, device=device, requires_grad=True)
    tb = torch.tensor([0, 2, 1, 2], dtype=torch.uint8, device=device)
    run_pair(lambda x: F.cross_entropy(x, tb), lambda x: TF.cross_entropy(x, tb), [xb])
    # float32 logits against float64 probabilities give a float64 loss as in torch; we promote
    # before the log_softmax, torch after it, so they agree to float32 precision
    p = prob_target((4, 3), device, torch.float64)
    run_pair(lambda x: F.cross_entropy(x, p), lambda x: TF.cross_entropy(x, p), [xb],
             tol_dtype=torch.float32)


@pytest.mark.parametrize("size_average", [None, True, False])
@pytest.mark.parametrize("reduce", [None, True, False])
def test_ce_legacy_args(size_average, reduce, device):
    x = torch.randn(4, 3, device=device, requires_grad=True)
    t = torch.tensor([0, 2, 1, 2], device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_pair(lambda x: F.cross_entropy(x, t, size_average=size_average, reduce=reduce),
                 lambda x: TF.cross_entropy(x, t, size_average=size_average, reduce=reduce), [x])


def test_ce_gradcheck(device):
    kw = dict(dtype=torch.float64, device=device)
    x = torch.randn(4, 5, 3, **kw, requires_grad=True)
    t = torch.tensor([[0, 4, -100], [1, 1, 2], [3, -100, 0], [2, 2, 2]], device=device)
    w = torch.rand(5, **kw) + 0.1
    p = prob_target((4, 5, 3), device, torch.float64).requires_grad_()
    for reduction in REDUCTIONS:
        for weight in (None, w):
            for ls in (0.0, 0.2):
                f = lambda x: F.cross_entropy(x, t, weight, reduction=reduction, label_smoothing=ls)
                assert torch.autograd.gradcheck(f, (x,))
                g = lambda x, p: F.cross_entropy(x, p, weight, reduction=reduction, label_smoothing=ls)
                assert torch.autograd.gradcheck(g, (x, p))


def test_no_aten_loss_or_reduction_dispatched(device):
    x = torch.randn(8, 5, device=device, requires_grad=True)
    t = torch.randint(0, 5, (8,), device=device)
    p = prob_target((8, 5), device, torch.float32)
    y = torch.randn(8, 5, device=device)
    with RecordOps() as rec:
        loss = (F.cross_entropy(x, t, label_smoothing=0.1) + F.cross_entropy(x, p)
                + F.mse_loss(x, y) + F.mse_loss(x, y, reduction="sum"))
        loss.backward()
    bad = [op for op in rec.ops
           if any(k in op for k in ("softmax", "nll", "mse", "cross_entropy", "sum", "mean", "exp"))]
    assert not bad, bad


CE_BAD = [
    (lambda d: (torch.ones(3, 4, dtype=torch.int64, device=d), torch.zeros(3, dtype=torch.int64, device=d)),
     {}, TypeError, "input must be float32"),
    (lambda d: (torch.ones(3, 4, device=d), torch.zeros(2, dtype=torch.int64, device=d)), {},
     ValueError, r"batch_size \(3\) to match target batch_size \(2\)"),
    (lambda d: (torch.ones(2, 4, 5, device=d), torch.zeros(2, 6, dtype=torch.int64, device=d)), {},
     ValueError, "target must have shape"),
    (lambda d: (torch.ones(3, 4, device=d), torch.zeros(3, dtype=torch.int32, device=d)), {},
     TypeError, "target must hold int64 class indices"),
    (lambda d: (torch.ones(3, 4, device=d), torch.zeros(3, device=d)), {}, TypeError,
     "target must hold int64"),
    (lambda d: (torch.ones(3, 4, device=d), torch.zeros(3, 4, dtype=torch.int64, device=d)), {},
     TypeError, "must be floating point"),
    (lambda d: (torch.ones(3, 4, device=d), torch.zeros(3, dtype=torch.int64, device=d)),
     {"weight": torch.ones(5)}, ValueError, "weight must be 1-D with one entry per class"),
    (lambda d: (torch.ones(3, 4, device=d), torch.zeros(3, dtype=torch.int64, device=d)),
     {"weight": torch.ones(4, dtype=torch.float64)}, TypeError, "weight is torch.float64"),
    (lambda d: (torch.ones(3, 4, device=d), torch.tensor([0, 4, 1], device=d)), {}, ValueError,
     "target 4 is out of bounds"),
    (lambda d: (torch.ones(3, 4, device=d), torch.tensor([0, -3, 1], device=d)), {}, ValueError,
     "target -3 is out of bounds"),
    (lambda d: (torch.ones(3, 4, device=d), torch.tensor([0, -100, 1], device=d)),
     {"reduction": "sum", "ignore_index": 2}, ValueError, "target -100 is out of bounds"),
    (lambda d: (torch.tensor(1.0, device=d), torch.tensor(0, device=d)), {}, ValueError,
     "got a 0-D tensor"),
    (lambda d: (torch.ones(3, 4, device=d), torch.zeros(3, dtype=torch.int64, device="meta")), {},
     RuntimeError, "target is on meta"),
    (lambda d: (torch.ones(3, 4, device=d), torch.zeros(3, dtype=torch.int64, device=d)),
     {"label_smoothing": 1.5}, ValueError, "label_smoothing must be between"),
    (lambda d: (torch.ones(3, 4, device=d), torch.ones(3, 4, device=d)), {"ignore_index": 1},
     ValueError, "ignore_index is not supported for probability targets"),
    (lambda d: (torch.ones(3, 4, device=d), torch.zeros(3, dtype=torch.int64, device=d)),
     {"reduction": "avg"}, ValueError, "avg is not a valid value"),
    (lambda d: (torch.ones(4, device=d), torch.zeros(2, dtype=torch.int64, device=d)), {},
     ValueError, "must be a 0-D class index"),
]


@pytest.mark.parametrize("args,kw,exc,match", CE_BAD)
def test_ce_bad_input(args, kw, exc, match, device):
    with pytest.raises(exc, match=match):
        F.cross_entropy(*args(device), **_on(device, kw))


def test_mixed_devices_raise_clearly():
    if not pynn.cuda_available():
        pytest.skip("needs a CUDA GPU for a second real device (meta-device cases run above)")
    x = torch.randn(3, 4, device="cuda")
    with pytest.raises(RuntimeError, match="target is on cpu"):
        F.cross_entropy(x, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="weight is on cpu"):
        F.cross_entropy(x, torch.zeros(3, dtype=torch.int64, device="cuda"), torch.ones(4))
    with pytest.raises(RuntimeError, match="target is on cpu"):
        F.mse_loss(x, torch.zeros(3, 4))


# ---------------------------------------------------------------------------- layers

def test_mse_layer_matches_torch(device):
    for kw in ({}, {"reduction": "sum"}, {"reduction": "none"}, {"size_average": False},
               {"reduce": False}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a, b = pynn.nn.MSELoss(**kw), torch.nn.MSELoss(**kw)
        assert repr(a) == repr(b) and a.reduction == b.reduction
        a.load_state_dict(b.state_dict(), strict=True)
        x = torch.randn(3, 4, device=device, requires_grad=True)
        t = torch.randn(3, 4, device=device)
        run_pair(a, b, [x, t])


def test_ce_layer_matches_torch(device):
    w = torch.rand(5) + 0.1
    for kw in ({}, {"weight": w, "ignore_index": 2, "label_smoothing": 0.1},
               {"weight": w, "reduction": "sum"}, {"reduction": "none", "label_smoothing": 0.2},
               {"size_average": False}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a, b = pynn.nn.CrossEntropyLoss(**kw), torch.nn.CrossEntropyLoss(**kw)
        assert repr(a) == repr(b)
        assert list(a.state_dict()) == list(b.state_dict())
        assert [n for n, _ in a.named_buffers()] == [n for n, _ in b.named_buffers()]
        a = a.to(device)
        a.load_state_dict(b.state_dict(), strict=True)
        b = b.to(device)
        if "weight" in kw:
            assert a.weight.device.type == device
        x = torch.randn(6, 5, 2, device=device, requires_grad=True)
        t = torch.randint(0, 5, (6, 2), device=device)
        run_pair(lambda x: a(x, t), lambda x: b(x, t), [x])
    # the weight buffer follows dtype moves like torch's
    layer = pynn.nn.CrossEntropyLoss(weight=torch.ones(3)).double()
    assert layer.weight.dtype == torch.float64


def test_reductions_over_many_blocks(device, dtype):
    # Enough samples that the CUDA reductions fill their capped grid and loop (CPU: many blocks).
    x = torch.randn(5000, 3, dtype=dtype, device=device, requires_grad=True)
    t = torch.randint(0, 3, (5000,), device=device)
    t[::7] = -100
    p = prob_target((5000, 3), device, dtype)
    for reduction in ("mean", "sum"):
        run_pair(lambda x: F.cross_entropy(x, t, reduction=reduction, label_smoothing=0.1),
                 lambda x: TF.cross_entropy(x, t, reduction=reduction, label_smoothing=0.1), [x],
                 grad_scale=100)
        run_pair(lambda x: F.cross_entropy(x, p, reduction=reduction),
                 lambda x: TF.cross_entropy(x, p, reduction=reduction), [x], grad_scale=100)
    a = torch.randn(300001, dtype=dtype, device=device, requires_grad=True)
    b = torch.randn(300001, dtype=dtype, device=device)
    for reduction in ("mean", "sum"):
        run_pair(lambda a: F.mse_loss(a, b, reduction=reduction),
                 lambda a: TF.mse_loss(a, b, reduction=reduction), [a], grad_scale=100)


def test_cpu_reductions_do_not_depend_on_thread_count():
    from pynn import _backend as B
    # float64, so that a different summation order would show in the last bits
    x = torch.randn(3000, 50, dtype=torch.float64)
    t = torch.randint(0, 50, (3000,))
    y = torch.randn(3000, 50, dtype=torch.float64)
    results = []
    try:
        for n in (1, 2, 3):
            pynn.set_num_threads(n)
            results.append((F.cross_entropy(x, t, label_smoothing=0.1), F.mse_loss(x, y)))
    finally:
        B._user_threads = None  # follow torch.get_num_threads() again
        B._synced_threads = -1
    for ce, mse in results[1:]:
        assert torch.equal(ce, results[0][0]) and torch.equal(mse, results[0][1])
