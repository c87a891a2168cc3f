"""pynn.functional.dropout / pynn.nn.Dropout: the Philox generator against published vectors,
the mask against an independent per-element reconstruction, its statistics, scaling, gradient,
reproducibility under torch.manual_seed, CPU/CUDA agreement, edge cases and bad input."""
import math

import pytest
import torch
import torch.nn.functional as TF

import pynn
import pynn.functional as F
from pynn import _backend as B
from pynn.ops.dropout import _draw_seed_offset
from conftest import CUDA, assert_close
from helpers import non_contiguous

# Random123's known-answer vectors for philox4x32-10 (counter, key -> output), from its
# tests/kat_vectors; the same values appear in TensorFlow's and others' Philox tests.
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", PHILOX_KAT, ids=["zeros", "ones", "pi"])
def test_philox_known_answers(counter, key, expected):
    assert tuple(B._C.philox4x32_10(list(counter), list(key))) == expected


def _mask(x, p, seed):
    """(output != 0) of dropout on x (no zeros in x) under torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    return F.dropout(x, p) != 0


def test_mask_matches_per_element_reconstruction():
    """Element i of the buffer reads word i % 4 of the Philox block (counter = i // 4 in the low
    64 bits, offset in the high 64, key = seed), kept iff word >= p * 2^32. Rebuilt here from
    the bare generator and the seeds torch.manual_seed determines."""
    p, n = 0.37, 1003  # not a multiple of 4: the tail block is partial
    torch.manual_seed(7)
    seed, offset = _draw_seed_offset()
    threshold = round(p * 2**32)
    key = [seed & 0xFFFFFFFF, seed >> 32]
    expected = []
    for block in range((n + 3) // 4):
        ctr = [block & 0xFFFFFFFF, block >> 32, offset & 0xFFFFFFFF, offset >> 32]
        expected += [word >= threshold for word in B._C.philox4x32_10(ctr, key)]
    expected = expected[:n]
    got = _mask(torch.ones(n), p, 7)
    assert got.tolist() == expected


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_fraction_dropped_and_independence(p, device):
    """The dropped fraction of n elements has binomial std sqrt(p(1-p)/n) <= 0.0011 for
    n = 2e5; we allow 5 std (a correct generator fails with probability < 1e-6, a bias of 0.6%
    fails). Neighbours (same and adjacent Philox blocks) must drop independently: P(both) = p^2
    within 5 std of that estimate, and each of the four words of a block has the same rate."""
    n = 200_000
    dropped = ~_mask(torch.ones(n, device=device), p, 0)
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(dropped.double().mean().item() - p) < 5 * sd
    both = (dropped[:-1] & dropped[1:]).double().mean().item()
    sd_pair = math.sqrt(p * p * (1 - p * p) / n)
    assert abs(both - p * p) < 5 * sd_pair
    lanes = dropped.view(-1, 4).double().mean(0)
    assert (lanes - p).abs().max().item() < 5 * math.sqrt(p * (1 - p) / (n / 4))


def test_scaling_and_values(device, dtype):
    p = 0.3
    x = torch.rand(64, 33, device=device, dtype=dtype) + 0.5  # no zeros
    torch.manual_seed(3)
    y = F.dropout(x, p)
    kept = y != 0
    assert 0 < kept.sum() < x.numel()
    assert_close(y[kept], x[kept] / (1 - p))
    assert (y[~kept] == 0).all()


def test_reproducible_under_manual_seed(device):
    x = torch.randn(1000, device=device)
    torch.manual_seed(42)
    a1, a2 = F.dropout(x, 0.5), F.dropout(x, 0.5)
    torch.manual_seed(42)
    b1, b2 = F.dropout(x, 0.5), F.dropout(x, 0.5)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1 != 0, a2 != 0)  # successive calls draw fresh masks
    torch.manual_seed(43)
    assert not torch.equal(F.dropout(x, 0.5) != 0, a1 != 0)


def test_mask_does_not_depend_on_thread_count():
    x = torch.ones(300_001)
    masks = []
    try:
        for n in (1, 2, 3):
            pynn.set_num_threads(n)
            masks.append(_mask(x, 0.5, 11))
    finally:
        B._user_threads = None
        B._synced_threads = -1
    assert torch.equal(masks[0], masks[1]) and torch.equal(masks[0], masks[2])


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("shape", [(5,), (1000, 37), (2, 3, 4, 5)], ids=str)
def test_cpu_and_cuda_masks_identical(shape):
    x = torch.rand(shape, dtype=torch.float64) + 0.5
    torch.manual_seed(5)
    y_cpu = F.dropout(x, 0.4)
    torch.manual_seed(5)
    y_cuda = F.dropout(x.cuda(), 0.4)
    assert torch.equal(y_cpu != 0, (y_cuda != 0).cpu())
    torch.testing.assert_close(y_cuda.cpu(), y_cpu, rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "channels_last", "expanded_grad"])
def test_gradient_is_mask_times_scale(layout, device, dtype):
    p = 0.25
    x = torch.rand(2, 3, 4, 5, device=device, dtype=dtype) + 0.5
    if layout == "transposed":
        x = non_contiguous(x)
    elif layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    torch.manual_seed(9)
    y = F.dropout(x, p)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)  # as torch keeps it
    if layout == "expanded_grad":
        g = torch.ones(1, device=device, dtype=dtype).expand_as(y)
        y.sum().backward()
    else:
        g = torch.randn_like(y)
        y.backward(g)
    mask = (y != 0).to(dtype)
    assert_close(x.grad, g * mask / (1 - p))


def test_gradcheck_and_gradgradcheck(device):
    x = torch.randn(5, 7, dtype=torch.float64, device=device, requires_grad=True)

    def fn(t):
        torch.manual_seed(2)  # the same mask on every evaluation
        return F.dropout(t, 0.4)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_edge_probabilities(device):
    x = torch.randn(50, device=device, requires_grad=True)
    assert F.dropout(x, 0.0) is x  # torch returns its input untouched
    assert F.dropout(x, 0.7, training=False) is x
    empty = torch.empty(0, 3, device=device)
    assert F.dropout(empty, 0.5) is empty
    y = F.dropout(x, 1.0)
    assert (y == 0).all()
    y.backward(torch.ones_like(y))
    assert (x.grad == 0).all()
    # like torch (input * 0), p = 1 keeps NaN and turns inf into NaN
    z = torch.tensor([float("nan"), 1.0, float("inf")], device=device)
    torch.testing.assert_close(F.dropout(z, 1.0), TF.dropout(z, 1.0), equal_nan=True)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_invalid_probability_raises(p):
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        F.dropout(torch.ones(3), p)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        pynn.nn.Dropout(p)


def test_kernel_rejects_bad_probability_directly():
    x = torch.ones(4)
    with pytest.raises(ValueError, match="between 0 and 1"):
        B._C.dropout_forward_cpu(B.view(x), B.view(torch.empty(4)), 1.5, 0, 0)


def test_inplace(device):
    p = 0.5
    base = torch.rand(6, 8, device=device, requires_grad=True)
    a = base + 1.0
    torch.manual_seed(4)
    out = F.dropout(a, p, inplace=True)
    assert out is a
    torch.manual_seed(4)
    expected = F.dropout(base.detach() + 1.0, p)
    torch.testing.assert_close(a.detach(), expected)
    g = torch.randn(6, 8, device=device)
    out.backward(g)
    assert_close(base.grad, g * (expected != 0) / (1 - p))
    # in place on a non-dense view writes through to its base
    m = torch.rand(6, 6, device=device) + 1.0
    view = m[:, ::2]
    before = view.clone()
    F.dropout(view, p, inplace=True)
    kept = view != 0
    assert_close(view[kept], before[kept] / (1 - p))
    assert torch.equal(m[:, 1::2] >= 1.0, torch.ones_like(kept[:, :3]))  # untouched columns


def test_inplace_on_leaf_requiring_grad_raises():
    x = torch.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        F.dropout(x, 0.5, inplace=True)


def test_layer(device):
    ours, ref = pynn.nn.Dropout(0.2), torch.nn.Dropout(0.2)
    assert repr(ours) == repr(ref)
    assert repr(pynn.nn.Dropout(inplace=True)) == repr(torch.nn.Dropout(inplace=True))
    x = torch.rand(400, 50, device=device) + 0.5
    y = ours(x)
    assert abs((y == 0).double().mean().item() - 0.2) < 5 * math.sqrt(0.2 * 0.8 / x.numel())
    ours.eval()
    assert ours(x) is x
    assert ours.state_dict() == {} and ref.state_dict() == {}


@pytest.mark.parametrize("bad,exc,match", [
    (lambda d: torch.ones(3, dtype=torch.int64, device=d), TypeError, "input must be float32 or float64"),
    (lambda d: torch.ones(3, dtype=torch.float16, device=d), TypeError, "float16"),
    (lambda d: [1.0, 2.0], TypeError, "input must be a Tensor"),
])
def test_bad_input(bad, exc, match, device):
    with pytest.raises(exc, match=match):
        F.dropout(bad(device), 0.5)
