import math

import pytest
import torch
import torch.nn.functional as TF

import pynn
import pynn.functional as F
from conftest import assert_close
from helpers import clone_leaf, non_contiguous
from pynn.nn.batchnorm import TORCH_BATCHNORM_HAS_BIAS


def _scale(x):
    """atol scale for sums over a channel (DESIGN.md: scaled by magnitude for reductions)."""
    return max(1.0, math.sqrt(x.numel() / max(x.shape[1], 1)))


def run_pair(x, training, affine=True, with_running=True, momentum=0.1, eps=1e-5, g=None):
    """Our batch_norm and torch's on the same input/parameters; returns both sides' results."""
    C = x.shape[1]
    dev, dt = x.device, x.dtype
    w = torch.randn(C, dtype=dt, device=dev) if affine else None
    b = torch.randn(C, dtype=dt, device=dev) if affine else None
    rm = torch.randn(C, dtype=dt, device=dev) if with_running else None
    rv = torch.rand(C, dtype=dt, device=dev) + 0.5 if with_running else None
    out = []
    for fn in (F.batch_norm, TF.batch_norm):
        xi = clone_leaf(x)
        wi = w.clone().requires_grad_() if affine else None
        bi = b.clone().requires_grad_() if affine else None
        rmi = rm.clone() if with_running else None
        rvi = rv.clone() if with_running else None
        y = fn(xi, rmi, rvi, wi, bi, training, momentum, eps)
        gg = torch.randn_like(y) if g is None else g
        g = gg
        y.backward(gg)
        out.append(dict(y=y, x=xi.grad, w=wi.grad if affine else None,
                        b=bi.grad if affine else None, rm=rmi, rv=rvi))
    return out


def check_pair(ours, ref, x):
    s = _scale(x)
    assert_close(ours["y"], ref["y"])
    assert_close(ours["x"], ref["x"], scale=s)
    for k in ("w", "b"):
        if ref[k] is not None:
            assert_close(ours[k], ref[k], scale=s)
    for k in ("rm", "rv"):
        if ref[k] is not None:
            assert_close(ours[k], ref[k])


# (N, C), (N, C, L), (N, C, H, W), 5-D; odd sizes; a plane longer than one CPU tile (16384);
# (N, C) with several row tiles.
SHAPES = [(8, 3), (5, 7, 9), (4, 3, 5, 7), (2, 3, 3, 4, 5), (2, 2, 130, 130), (5000, 7),
          (3, 1, 4, 4), (2, 5, 1, 1)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_parity_with_torch(shape, training, device, dtype):
    x = torch.randn(shape, dtype=dtype, device=device) * 2 + 0.5
    ours, ref = run_pair(x, training)
    check_pair(ours, ref, x)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine,with_running", [(False, True), (True, False), (False, False)])
def test_optional_arguments(training, affine, with_running, device, dtype):
    if not training and not with_running:
        pytest.skip("eval needs running statistics (tested in test_bad_input)")
    x = torch.randn(4, 3, 5, 6, dtype=dtype, device=device)
    ours, ref = run_pair(x, training, affine=affine, with_running=with_running)
    check_pair(ours, ref, x)


def test_weight_without_bias(device, dtype):
    x = torch.randn(4, 3, 5, dtype=dtype, device=device)
    w = torch.randn(3, dtype=dtype, device=device)
    a, b, wa, wb = clone_leaf(x), clone_leaf(x), clone_leaf(w), clone_leaf(w)
    ya = F.batch_norm(a, None, None, wa, None, True)
    yb = TF.batch_norm(b, None, None, wb, None, True)
    assert_close(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert_close(a.grad, b.grad)
    assert_close(wa.grad, wb.grad, scale=_scale(x))


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "channel_slice", "expanded_grad"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_layouts(layout, training, device, dtype):
    base = torch.randn(4, 16, 33, 35, dtype=dtype, device=device) + 1.0
    if layout == "channels_last":
        x = base.to(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = non_contiguous(base)
    elif layout == "channel_slice":
        x = base[:, ::2, 1:, ::2]
    else:
        x = base
    g = torch.ones(1, 1, 1, 1, dtype=dtype, device=device).expand(x.shape) \
        if layout == "expanded_grad" else None
    ours, ref = run_pair(x, training, g=g)
    check_pair(ours, ref, x)
    if layout == "channels_last":
        assert ours["y"].is_contiguous(memory_format=torch.channels_last)


def test_batch_of_one_in_eval(device, dtype):
    for shape in [(1, 4), (1, 4, 1), (1, 4, 1, 1)]:
        x = torch.randn(shape, dtype=dtype, device=device)
        ours, ref = run_pair(x, False)
        check_pair(ours, ref, x)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1)])
def test_single_value_per_channel_in_training_raises(shape, device):
    x = torch.randn(shape, device=device)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        F.batch_norm(x, None, None, training=True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        pynn.nn.BatchNorm1d(3).to(device)(x.reshape(1, 3)) if len(shape) < 4 else \
            pynn.nn.BatchNorm2d(3).to(device)(x)


@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 4, 4), (0, 3, 5)])
def test_zero_size_batch_in_training(shape, device, dtype):
    # torch: an empty output, running statistics untouched, zero weight and bias gradients.
    x = torch.randn(shape, dtype=dtype, device=device)
    ours, ref = run_pair(x, True)
    assert ours["y"].shape == ref["y"].shape
    assert ours["x"].shape == x.shape
    for k in ("w", "b", "rm", "rv"):
        assert_close(ours[k], ref[k])


def test_zero_size_batch_in_eval(device, dtype):
    x = torch.randn(0, 3, 4, dtype=dtype, device=device)
    ours, ref = run_pair(x, False)
    for k in ("w", "b", "rm", "rv"):
        assert_close(ours[k], ref[k])


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_running_statistics_over_steps(momentum, device, dtype):
    ours = pynn.nn.BatchNorm2d(5, momentum=momentum, device=device, dtype=dtype)
    ref = torch.nn.BatchNorm2d(5, momentum=momentum, device=device, dtype=dtype)
    for step in range(4):
        x = torch.randn(3, 5, 4, 6, dtype=dtype, device=device) * (step + 1) + step
        a, b = clone_leaf(x), clone_leaf(x)
        ya, yb = ours(a), ref(b)
        assert_close(ya, yb)
        g = torch.randn_like(ya)
        ya.backward(g)
        yb.backward(g)
        assert_close(a.grad, b.grad, scale=_scale(x))
    assert_close(ours.running_mean, ref.running_mean)
    assert_close(ours.running_var, ref.running_var)
    assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item() == 4
    assert ours.num_batches_tracked.dtype == torch.int64
    assert_close(ours.weight.grad, ref.weight.grad, scale=_scale(x) * 2)
    assert_close(ours.bias.grad, ref.bias.grad, scale=_scale(x) * 2)
    ours.eval()
    ref.eval()
    x = torch.randn(2, 5, 3, 3, dtype=dtype, device=device)
    assert_close(ours(x), ref(x))


# Interleaved layouts ((N, C) and channels_last) large enough that the CPU splits the statistics
# and gradient sums over several row chunks and channel blocks (csrc/cpu/batchnorm.cpp
# interleaved_sums: 65536 elements a chunk, 256 channels a block), with chunk boundaries inside
# a sample so that runs of rows stop mid-sample.
SPLIT_CASES = [((600, 300), "nc"), ((7, 40, 29, 31), "channels_last"),
               ((3, 300, 11, 13), "channels_last")]


def _layout(x, layout):
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


@pytest.mark.parametrize("shape,layout", SPLIT_CASES, ids=[str(s) for s, _ in SPLIT_CASES])
def test_interleaved_statistics_over_chunks_and_blocks(shape, layout, device, dtype):
    x = _layout(torch.randn(*shape, device=device, dtype=dtype) * 3 + 5, layout)
    ours, ref = run_pair(x, True)
    check_pair(ours, ref, x)


@pytest.mark.parametrize("shape,layout", SPLIT_CASES, ids=[str(s) for s, _ in SPLIT_CASES])
def test_cpu_interleaved_sums_do_not_depend_on_the_thread_count(shape, layout, cpu_threads):
    # float64 throughout: a change in summation order shows in the last bits of the results
    dt = torch.float64
    x = _layout(torch.randn(*shape, dtype=dt) + 1e3, layout)
    C = shape[1]
    g = torch.randn_like(x)
    w, b = torch.randn(C, dtype=dt), torch.randn(C, dtype=dt)
    results = []
    for n in (1, 2, 3):
        cpu_threads(n)
        xi, wi, bi = (t.clone().requires_grad_() for t in (x, w, b))
        rm, rv = torch.zeros(C, dtype=dt), torch.ones(C, dtype=dt)
        F.batch_norm(xi, rm, rv, wi, bi, training=True).backward(g)
        results.append([xi.grad, wi.grad, bi.grad, rm, rv])
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert torch.equal(a, c)


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "nc"])
def test_large_mean_float32(layout, device):
    # mean 1e4, std 1: float32 keeps only ~1e-3 of the spread in each value; the statistics and
    # the normalisation must not lose more than that.
    x = torch.randn(16, 4, 9, 9, device=device) + 1e4
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "nc":
        x = x.permute(0, 2, 3, 1).reshape(-1, 4)
    xd = x.double()
    rm, rv = torch.zeros(4, device=device), torch.ones(4, device=device)
    rmd, rvd = rm.double(), rv.double()
    y = F.batch_norm(x, rm, rv, training=True)
    yd = TF.batch_norm(xd, rmd, rvd, training=True)
    # against the exact (float64) answer on the same float32 values: float32 rounding only
    torch.testing.assert_close(y.double(), yd, rtol=0, atol=2e-6)
    torch.testing.assert_close(rm.double(), rmd, rtol=1e-6, atol=0)
    torch.testing.assert_close(rv.double(), rvd, rtol=1e-5, atol=0)
    # and against torch's float32 result, within torch's own float32 error
    yt = TF.batch_norm(x, torch.zeros(4, device=device), torch.ones(4, device=device), training=True)
    torch_err = (yt.double() - yd).abs().max().item()
    torch.testing.assert_close(y, yt, rtol=0, atol=max(2 * torch_err, 1e-5))
    # gradients
    a = x.clone().requires_grad_()
    w = torch.ones(4, device=device, requires_grad=True)
    F.batch_norm(a, None, None, w, None, True).backward(torch.randn_like(x))
    assert torch.isfinite(a.grad).all() and torch.isfinite(w.grad).all()
    # the saved statistics feed eval mode too
    ye = F.batch_norm(x, rm, rv, training=False)
    yde = TF.batch_norm(xd, rmd, rvd, training=False)
    torch.testing.assert_close(ye.double(), yde, rtol=0, atol=2e-3)


def test_large_mean_gradients_float32(device):
    x = torch.randn(8, 3, 7, 7, device=device) + 1e4
    g = torch.randn_like(x)
    a, ad = x.clone().requires_grad_(), x.double().requires_grad_()
    w, wd = torch.full((3,), 2.0, device=device, requires_grad=True), \
        torch.full((3,), 2.0, dtype=torch.float64, device=device, requires_grad=True)
    F.batch_norm(a, None, None, w, None, True).backward(g)
    TF.batch_norm(ad, None, None, wd, None, True).backward(g.double())
    torch.testing.assert_close(a.grad.double(), ad.grad, rtol=0, atol=1e-5)
    torch.testing.assert_close(w.grad.double(), wd.grad, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 4), (2, 3, 2, 3)], ids=str)
def test_gradcheck(training, shape, device):
    opts = dict(dtype=torch.float64, device=device)
    x = torch.randn(shape, **opts, requires_grad=True)
    w = torch.randn(shape[1], **opts, requires_grad=True)
    b = torch.randn(shape[1], **opts, requires_grad=True)
    rm, rv = torch.randn(shape[1], **opts), torch.rand(shape[1], **opts) + 0.5
    fn = lambda x, w, b: F.batch_norm(x, rm.clone(), rv.clone(), w, b, training)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    fn2 = lambda x: F.batch_norm(x, rm.clone(), rv.clone(), None, None, training)  # noqa: E731
    assert torch.autograd.gradcheck(fn2, (x,))


def test_gradcheck_channels_last(device):
    x = torch.randn(3, 4, 2, 3, dtype=torch.float64, device=device).to(
        memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(4, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: F.batch_norm(x, None, None, w, None, True), (x, w))


# ---- layers ----

@pytest.mark.parametrize("cls,shape", [("BatchNorm1d", (6, 4)), ("BatchNorm1d", (5, 4, 7)),
                                        ("BatchNorm2d", (3, 4, 5, 6))])
def test_layer_loads_torch_state_dict_and_matches(cls, shape, device, dtype):
    ref = getattr(torch.nn, cls)(4, device=device, dtype=dtype)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
        ref.running_mean.normal_()
        ref.running_var.uniform_(0.5, 2.0)
        ref.num_batches_tracked.fill_(7)
    ours = getattr(pynn.nn, cls)(4, device=device, dtype=dtype)
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert list(ours.state_dict().keys()) == list(ref.state_dict().keys())
    for mode in ("eval", "train"):
        getattr(ours, mode)()
        getattr(ref, mode)()
        x = torch.randn(shape, dtype=dtype, device=device)
        a, b = clone_leaf(x), clone_leaf(x)
        ya, yb = ours(a), ref(b)
        assert_close(ya, yb)
        g = torch.randn_like(ya)
        ya.backward(g)
        yb.backward(g)
        assert_close(a.grad, b.grad, scale=_scale(x))
        assert_close(ours.weight.grad, ref.weight.grad, scale=_scale(x))
        assert_close(ours.bias.grad, ref.bias.grad, scale=_scale(x))
        assert_close(ours.running_mean, ref.running_mean)
        assert_close(ours.running_var, ref.running_var)
        assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item()


@pytest.mark.parametrize("kwargs", [
    {}, dict(eps=1e-3, momentum=None), dict(affine=False), dict(track_running_stats=False),
    pytest.param(dict(bias=False), marks=pytest.mark.skipif(
        not TORCH_BATCHNORM_HAS_BIAS, reason="this torch's BatchNorm has no bias argument to compare with")),
    dict(affine=False, track_running_stats=False)])
def test_layer_construction_matches_torch(kwargs):
    for cls in ("BatchNorm1d", "BatchNorm2d"):
        ours, ref = getattr(pynn.nn, cls)(5, **kwargs), getattr(torch.nn, cls)(5, **kwargs)
        assert repr(ours) == repr(ref)
        assert list(ours.state_dict().keys()) == list(ref.state_dict().keys())
        assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
        for (n, t), (_, u) in zip(ours.state_dict().items(), ref.state_dict().items()):
            assert t.dtype == u.dtype and torch.equal(t, u), n
        ours.load_state_dict(ref.state_dict(), strict=True)


def test_layer_device_dtype_and_resets():
    m = pynn.nn.BatchNorm2d(3, device="cpu", dtype=torch.float64)
    assert m.weight.dtype == torch.float64 and m.running_mean.dtype == torch.float64
    assert m.num_batches_tracked.dtype == torch.int64
    with torch.no_grad():
        m.weight.fill_(3.0)
        m.bias.fill_(2.0)
    m(torch.randn(4, 3, 2, 2, dtype=torch.float64))
    assert m.num_batches_tracked.item() == 1 and not torch.equal(m.running_mean, torch.zeros(3, dtype=torch.float64))
    m.reset_running_stats()
    assert torch.equal(m.running_mean, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(m.running_var, torch.ones(3, dtype=torch.float64))
    assert m.num_batches_tracked.item() == 0
    assert torch.equal(m.weight, torch.full((3,), 3.0, dtype=torch.float64))
    m.reset_parameters()
    assert torch.equal(m.weight, torch.ones(3, dtype=torch.float64))
    assert torch.equal(m.bias, torch.zeros(3, dtype=torch.float64))


def test_layer_old_state_dict_without_num_batches_tracked():
    ref = torch.nn.BatchNorm2d(3)
    sd = ref.state_dict()
    del sd["num_batches_tracked"]
    sd._metadata[""]["version"] = 1
    ours = pynn.nn.BatchNorm2d(3)
    ours.load_state_dict(sd, strict=True)
    assert ours.num_batches_tracked.item() == 0


@pytest.mark.parametrize("kwargs", [dict(track_running_stats=False), dict(affine=False),
                                    dict(momentum=None)])
def test_layer_train_eval_behaviour(kwargs, device, dtype):
    ours = pynn.nn.BatchNorm1d(4, device=device, dtype=dtype, **kwargs)
    ref = torch.nn.BatchNorm1d(4, device=device, dtype=dtype, **kwargs)
    for training in (True, True, False):
        ours.train(training)
        ref.train(training)
        x = torch.randn(7, 4, 3, dtype=dtype, device=device) + 2
        assert_close(ours(x), ref(x))
    for name in ("running_mean", "running_var"):
        if getattr(ref, name) is None:
            assert getattr(ours, name) is None
        else:
            assert_close(getattr(ours, name), getattr(ref, name))


def test_layer_rank_checks():
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        pynn.nn.BatchNorm1d(3)(torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match="expected 4D input"):
        pynn.nn.BatchNorm2d(3)(torch.randn(2, 3, 4))


@pytest.mark.parametrize("call,exc,match", [
    (lambda d: F.batch_norm(torch.ones(4, 3, dtype=torch.int64, device=d), None, None, training=True),
     TypeError, "input must be float32 or float64"),
    (lambda d: F.batch_norm(torch.randn(4, device=d), torch.zeros(4, device=d), torch.ones(4, device=d)),
     ValueError, "input must have at least 2 dims"),
    (lambda d: F.batch_norm(torch.randn(4, 3, device=d), torch.zeros(4, device=d), torch.ones(3, device=d)),
     RuntimeError, "running_mean should contain 3 elements"),
    (lambda d: F.batch_norm(torch.randn(4, 3, device=d), None, None, torch.ones(2, device=d), training=True),
     RuntimeError, "weight should contain 3 elements"),
    (lambda d: F.batch_norm(torch.randn(4, 3, device=d), None, None, None, torch.ones(5, device=d), training=True),
     RuntimeError, "bias should contain 3 elements"),
    (lambda d: F.batch_norm(torch.randn(4, 3, device=d), None, None), RuntimeError,
     "must be defined in evaluation mode"),
    (lambda d: F.batch_norm(torch.randn(4, 3, device=d), torch.zeros(3, device=d), None, training=True),
     ValueError, "both be None or neither"),
    (lambda d: F.batch_norm(torch.randn(4, 3, device=d), None, None, training=True, eps=0.0),
     ValueError, "eps must be positive"),
    (lambda d: F.batch_norm(torch.randn(4, 3, device=d), torch.zeros(3, device=d), torch.ones(3, device=d),
                            eps=-1.0), ValueError, "eps must be non-negative"),
    (lambda d: F.batch_norm(torch.randn(4, 3, device=d), None, None, training=True, momentum=None),
     TypeError, "momentum must be a float"),
    (lambda d: F.batch_norm(torch.randn(4, 3, device=d), torch.zeros(3, dtype=torch.float64, device=d),
                            torch.ones(3, dtype=torch.float64, device=d)), TypeError, "running_mean"),
    (lambda d: F.batch_norm(torch.randn(4, 3, device=d), None, None, [1.0, 2.0, 3.0], training=True),
     TypeError, "weight must be a Tensor"),
    # a channel vector neither on the CPU nor on a GPU (the vectors' fast path takes neither)
    (lambda d: F.batch_norm(torch.randn(4, 3, device=d), None, None, torch.ones(3, device="meta"),
                            training=True), RuntimeError, "expected all tensors on one device"),
    (lambda d: F.batch_norm(torch.randn(4, 3, device=d), None, None, None,
                            torch.ones(3, dtype=torch.float64, device=d), training=True),
     TypeError, "bias is torch.float64"),
    (lambda d: F.batch_norm("x", None, None, training=True), TypeError, "input must be a Tensor"),
])
def test_bad_input(call, exc, match, device):
    with pytest.raises(exc, match=match):
        call(device)


def test_running_stats_requiring_grad_rejected():
    rm = torch.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="running_mean"):
        F.batch_norm(torch.randn(4, 3), rm, torch.ones(3), training=True)


def test_nan_propagates_like_torch(device):
    x = torch.randn(4, 3, 5, device=device)
    x[1, 1, 2] = float("nan")
    for training in (True, False):
        rm, rv = torch.zeros(3, device=device), torch.ones(3, device=device)
        rm2, rv2 = rm.clone(), rv.clone()
        torch.testing.assert_close(F.batch_norm(x, rm, rv, training=training),
                                   TF.batch_norm(x, rm2, rv2, training=training), equal_nan=True)
        torch.testing.assert_close(rm, rm2, equal_nan=True)
        torch.testing.assert_close(rv, rv2, equal_nan=True)


@pytest.mark.skipif(not pynn.cuda_available(), reason="needs a CUDA GPU for a device mismatch")
def test_device_mismatch_raises():
    with pytest.raises(RuntimeError, match="device"):
        F.batch_norm(torch.randn(4, 3, device="cuda"), None, None, torch.ones(3), training=True)


def test_kernel_checks_arguments():
    from pynn import _backend as B
    x = torch.randn(4, 3, 2)
    out = torch.empty_like(x)
    sm, si = torch.empty(3, dtype=torch.float64), torch.empty(3, dtype=torch.float64)
    ws = torch.empty(0, dtype=torch.float64)
    with pytest.raises(ValueError, match="weight must be 1-D with 3 elements"):
        B.launch("batch_norm_forward", x, B.view(x), B.view(torch.ones(2)), None, None, None,
                 B.view(out), B.view(sm), B.view(si), B.view(ws), True, 0.1, 1e-5)
    with pytest.raises(TypeError, match="save_mean must be float64"):
        B.launch("batch_norm_forward", x, B.view(x), None, None, None, None, B.view(out),
                 B.view(sm.float()), B.view(si), B.view(ws), True, 0.1, 1e-5)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        x1 = torch.randn(1, 3, 1)
        B.launch("batch_norm_forward", x1, B.view(x1), None, None, None, None,
                 B.view(torch.empty_like(x1)), B.view(sm), B.view(si), B.view(ws), True, 0.1, 1e-5)
