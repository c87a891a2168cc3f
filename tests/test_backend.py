"""The launch seam: ops run their forward directly (no autograd node) when no gradient can flow,
and that path must compute exactly what the autograd path computes, side effects included."""
import pytest
import torch

import pynn.functional as F
from pynn import _backend as B

# (name, op on (x, extra tensors)); each op is deterministic given torch's seed.
OPS = {
    "relu": lambda x: F.relu(x),
    "leaky_relu_inplace": lambda x: F.leaky_relu(x.clone(), 0.2, inplace=True),
    "softmax": lambda x: F.log_softmax(x, 1),
    "linear": lambda x: F.linear(x.flatten(1), torch.ones(3, 60, dtype=x.dtype, device=x.device)),
    "conv2d": lambda x: F.conv2d(x, torch.ones(2, 3, 3, 3, dtype=x.dtype, device=x.device)),
    "max_pool2d": lambda x: F.max_pool2d(x, 2),
    "avg_pool2d": lambda x: F.avg_pool2d(x, 2),
    "lrn": lambda x: F.local_response_norm(x, 3),
    "dropout": lambda x: F.dropout(x, 0.5),
    "mse_loss": lambda x: F.mse_loss(x, torch.zeros_like(x)),
    "cross_entropy": lambda x: F.cross_entropy(x.flatten(1), torch.tensor([1, 7], device=x.device)),
}


@pytest.mark.parametrize("name", list(OPS))
def test_forward_only_path_matches_autograd_path(name, device):
    x = torch.randn(2, 3, 4, 5, device=device, dtype=torch.float64)
    torch.manual_seed(1)
    with_grad = OPS[name](x.clone().requires_grad_())
    assert with_grad.grad_fn is not None
    for mode in ("no_grad", "no_input_requires_grad"):
        torch.manual_seed(1)
        if mode == "no_grad":
            with torch.no_grad():
                plain = OPS[name](x.clone().requires_grad_())
        else:
            plain = OPS[name](x.clone())
        assert plain.grad_fn is None and not plain.requires_grad
        assert torch.equal(plain, with_grad.detach()), mode


def test_batch_norm_updates_running_stats_on_both_paths(device):
    x = torch.randn(8, 3, 5, 5, device=device)
    stats = []
    for grad in (True, False):
        rm, rv = torch.zeros(3, device=device), torch.ones(3, device=device)
        w = torch.ones(3, device=device, requires_grad=grad)
        y = F.batch_norm(x, rm, rv, w, None, training=True)
        assert (y.grad_fn is not None) == grad
        stats.append((y.detach(), rm, rv))
    for a, b in zip(*stats):
        assert torch.equal(a, b)
    assert not torch.equal(stats[0][1], torch.zeros(3, device=device))  # the stats did move


def test_apply_sees_gradients_in_nested_arguments():
    w = torch.ones(2, requires_grad=True)
    assert B._requires_grad([1, (torch.ones(1), [w])])
    assert not B._requires_grad([1, (torch.ones(1), [w.detach()])])


def test_no_autograd_node_is_built_when_no_gradient_can_flow(device, monkeypatch):
    """The forward-only path is really taken: with Function.apply made to fail, every op still
    runs under no_grad and on inputs that require no grad."""
    def refuse(cls, *args):
        raise AssertionError(f"{cls.__name__}.apply called although no gradient can flow")
    monkeypatch.setattr(torch.autograd.Function, "apply", classmethod(refuse))
    x = torch.randn(2, 3, 4, 5, device=device, dtype=torch.float64)
    for name, op in OPS.items():
        op(x)
        with torch.no_grad():
            op(x.clone().requires_grad_())


# ---- scratch: transient CPU workspaces from a per-thread buffer ----

def _span(t):
    return t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()


def test_scratch_hands_out_disjoint_aligned_tensors_from_one_reused_buffer():
    ref = torch.empty(0, dtype=torch.float64)
    with B.scratch(ref, (3, 5), None, (7,), (0, 4)) as (a, none, b, empty):
        assert none is None
        assert a.shape == (3, 5) and b.shape == (7,) and empty.shape == (0, 4)
        assert a.dtype == b.dtype == torch.float64 and a.is_contiguous() and b.is_contiguous()
        assert a.data_ptr() % 64 == 0 and b.data_ptr() % 64 == 0
        (a0, a1), (b0, b1) = _span(a), _span(b)
        assert a1 <= b0 or b1 <= a0
        a.fill_(1.0)
        b.fill_(2.0)  # writing one leaves the other intact
        assert torch.equal(a, torch.ones(3, 5, dtype=torch.float64))
        first = a.data_ptr()
        buf = B._scratch.buffer
        assert _span(buf)[0] <= a0 and a1 <= _span(buf)[1]
    with B.scratch(ref, (3, 5)) as (again,):
        assert again.data_ptr() == first  # the next call reuses the memory


def test_scratch_nested_use_gets_fresh_memory_and_an_error_releases_it():
    ref = torch.empty(0)
    with B.scratch(ref, (16,)) as (outer,):
        with B.scratch(ref, (16,)) as (inner,):
            assert not (_span(inner)[0] < _span(outer)[1] and _span(outer)[0] < _span(inner)[1])
    with pytest.raises(RuntimeError, match="boom"):
        with B.scratch(ref, (4,)):
            raise RuntimeError("boom")
    with B.scratch(ref, (16,)) as (after,):
        assert after.data_ptr() == outer.data_ptr()  # not left marked busy by the error


def test_scratch_past_the_cap_is_an_ordinary_allocation(monkeypatch):
    monkeypatch.setattr(B, "SCRATCH_KEEP_BYTES", 1024)
    ref = torch.empty(0)
    kept = B._scratch.buffer
    with B.scratch(ref, (1024,)) as (big,):
        assert big.shape == (1024,)
    assert B._scratch.buffer is kept  # neither grown nor replaced
    if kept is not None:
        assert not (_span(kept)[0] <= big.data_ptr() < _span(kept)[1])


def test_scratch_is_per_thread(monkeypatch):
    import threading
    monkeypatch.setattr(B._scratch, "buffer", None)  # this thread's
    ref = torch.empty(0)
    seen = {}

    def take():
        with B.scratch(ref, (64,)) as (t,):
            buf = B._scratch.buffer
            seen["own"] = buf is not None and _span(buf)[0] <= t.data_ptr() < _span(buf)[1]

    worker = threading.Thread(target=take)
    worker.start()
    worker.join()
    assert seen == {"own": True}  # the worker used a buffer of its own ...
    assert B._scratch.buffer is None  # ... and this thread's is untouched


def test_scratch_memory_by_device(device):
    """CPU scratch comes from the thread's buffer; CUDA's from torch's caching allocator."""
    ref = torch.empty(0, device=device)
    with B.scratch(ref, (2, 3)) as (t,):
        assert t.device == ref.device and t.shape == (2, 3)
        buf = B._scratch.buffer
        in_buffer = buf is not None and _span(buf)[0] <= t.data_ptr() < _span(buf)[1]
        assert in_buffer == (device == "cpu")
