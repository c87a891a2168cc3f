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
