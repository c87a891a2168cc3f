"""pynn.nn.RNN / LSTM / RNNCell / LSTMCell against torch.nn: outputs, final states and the
gradients of the input, the initial states and every weight; gradcheck; bad input."""
import itertools
import math
import os
import subprocess
import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import pynn
from pynn import _backend as B
from pynn.ops import rnn as R
from conftest import assert_close


def _pair(cls_t, cls_p, *args, device="cpu", dtype=torch.float32, **kw):
    """A torch layer and a pynn layer holding the same weights (loaded with strict=True)."""
    ref = cls_t(*args, **kw).to(device=device, dtype=dtype)
    ours = cls_p(*args, **kw, device=device, dtype=dtype)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _leaf(t):
    return t.detach().clone().requires_grad_()


def _check_grads(ref, ours, ref_inputs, our_inputs, dtype, scale=1.0, param_scale=None):
    """Input and parameter gradients against the reference. Parameter gradients sum over every
    batch row and step (and flow back through the layers above), so their tolerance may scale
    with that count: param_scale, by default the inputs' scale."""
    for a, b in zip(our_inputs, ref_inputs):
        assert_close(a.grad, b.grad, dtype=dtype, scale=scale)
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        assert p.grad is not None, name
        assert_close(p.grad, q.grad, dtype=dtype, scale=param_scale or scale)


# ---- sequences: parity over the argument grid -------------------------------------------------

# Layers x directions x projection in full; batch_first, bias and length 1 vs 6 as an orthogonal
# array (their XOR fixed), so every pair of values of those three still meets.
LSTM_GRID = [c for c in itertools.product([1, 2], [False, True], [False, True], [0, 3],
                                          [True, False], [1, 6])
             if c[2] ^ c[4] ^ (c[5] == 1)]


@pytest.mark.parametrize("layers,bidir,batch_first,proj,bias,T", LSTM_GRID,
                         ids=[f"L{l}-{'bi' if b else 'uni'}-{'bf' if f else 'tf'}-p{p}-"
                              f"{'bias' if bb else 'nobias'}-T{t}"
                              for l, b, f, p, bb, t in LSTM_GRID])
def test_lstm_parity(layers, bidir, batch_first, proj, bias, T, device, dtype):
    I, H, N = 4, 5, 3
    D = 2 if bidir else 1
    P = proj or H
    ref, ours = _pair(torch.nn.LSTM, pynn.nn.LSTM, I, H, layers, bias=bias,
                      batch_first=batch_first, bidirectional=bidir, proj_size=proj,
                      device=device, dtype=dtype)
    x = torch.randn((N, T, I) if batch_first else (T, N, I), device=device, dtype=dtype)
    h0 = torch.randn(layers * D, N, P, device=device, dtype=dtype)
    c0 = torch.randn(layers * D, N, H, device=device, dtype=dtype)
    xs, h0s, c0s = [_leaf(x), _leaf(x)], [_leaf(h0), _leaf(h0)], [_leaf(c0), _leaf(c0)]
    out_r, (hn_r, cn_r) = ref(xs[0], (h0s[0], c0s[0]))
    out_p, (hn_p, cn_p) = ours(xs[1], (h0s[1], c0s[1]))
    assert out_p.shape == out_r.shape and hn_p.shape == hn_r.shape and cn_p.shape == cn_r.shape
    assert_close(out_p, out_r)
    assert_close(hn_p, hn_r)
    assert_close(cn_p, cn_r)
    g_out, g_h, g_c = torch.randn_like(out_r), torch.randn_like(hn_r), torch.randn_like(cn_r)
    torch.autograd.backward([out_r, hn_r, cn_r], [g_out, g_h, g_c])
    torch.autograd.backward([out_p, hn_p, cn_p], [g_out, g_h, g_c])
    _check_grads(ref, ours, [xs[0], h0s[0], c0s[0]], [xs[1], h0s[1], c0s[1]], dtype, scale=T,
                 param_scale=N * T * layers)


RNN_GRID = [c for c in itertools.product([1, 2], [False, True], [False, True], ["tanh", "relu"],
                                         [True, False], [1, 6])
            if c[2] ^ (c[3] == "relu") ^ c[4] ^ (c[5] == 1)]


@pytest.mark.parametrize("layers,bidir,batch_first,nl,bias,T", RNN_GRID,
                         ids=[f"L{l}-{'bi' if b else 'uni'}-{'bf' if f else 'tf'}-{n}-"
                              f"{'bias' if bb else 'nobias'}-T{t}"
                              for l, b, f, n, bb, t in RNN_GRID])
def test_rnn_parity(layers, bidir, batch_first, nl, bias, T, device, dtype):
    I, H, N = 4, 5, 3
    D = 2 if bidir else 1
    ref, ours = _pair(torch.nn.RNN, pynn.nn.RNN, I, H, layers, nonlinearity=nl, bias=bias,
                      batch_first=batch_first, bidirectional=bidir, device=device, dtype=dtype)
    x = torch.randn((N, T, I) if batch_first else (T, N, I), device=device, dtype=dtype)
    h0 = torch.randn(layers * D, N, H, device=device, dtype=dtype)
    xs, h0s = [_leaf(x), _leaf(x)], [_leaf(h0), _leaf(h0)]
    out_r, hn_r = ref(xs[0], h0s[0])
    out_p, hn_p = ours(xs[1], h0s[1])
    assert_close(out_p, out_r)
    assert_close(hn_p, hn_r)
    g_out, g_h = torch.randn_like(out_r), torch.randn_like(hn_r)
    torch.autograd.backward([out_r, hn_r], [g_out, g_h])
    torch.autograd.backward([out_p, hn_p], [g_out, g_h])
    _check_grads(ref, ours, [xs[0], h0s[0]], [xs[1], h0s[1]], dtype, scale=T,
                 param_scale=N * T * layers)


@pytest.mark.parametrize("mode", ["LSTM", "RNN"])
@pytest.mark.parametrize("case", ["unbatched", "batch1", "no_hx_output_only", "batch0"])
def test_sequence_edge_cases(mode, case, device):
    dtype = torch.float64
    cls_t, cls_p = (torch.nn.LSTM, pynn.nn.LSTM) if mode == "LSTM" else (torch.nn.RNN, pynn.nn.RNN)
    ref, ours = _pair(cls_t, cls_p, 3, 4, 2, bidirectional=True, device=device, dtype=dtype)
    shape = {"unbatched": (5, 3), "batch1": (5, 1, 3), "no_hx_output_only": (5, 2, 3),
             "batch0": (5, 0, 3)}[case]
    x = torch.randn(shape, device=device, dtype=dtype)
    hx = None
    if case != "no_hx_output_only":
        hshape = (4,) + shape[1:-1] + (4,)
        hx = torch.randn(hshape, device=device, dtype=dtype)
        if mode == "LSTM":
            hx = (hx, torch.randn(hshape, device=device, dtype=dtype))
    xa, xb = _leaf(x), _leaf(x)
    ra, rb = ref(xa, hx), ours(xb, hx)
    flat = lambda r: [r[0]] + (list(r[1]) if isinstance(r[1], tuple) else [r[1]])
    for a, b in zip(flat(rb), flat(ra)):
        assert a.shape == b.shape
        assert_close(a, b)
    # Only the output feeds the loss: the kernels see no gradient for h_n / c_n.
    ra[0].pow(2).sum().backward()
    rb[0].pow(2).sum().backward()
    assert_close(xb.grad, xa.grad)
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert_close(p.grad, q.grad, scale=5)


def test_lstm_only_final_state_used(device):
    ref, ours = _pair(torch.nn.LSTM, pynn.nn.LSTM, 3, 4, proj_size=2, device=device)
    x = torch.randn(7, 2, 3, device=device)
    xa, xb = _leaf(x), _leaf(x)
    ref(xa)[1][1].sum().backward()      # c_n only: neither output nor h_n has a gradient
    ours(xb)[1][1].sum().backward()
    assert_close(xb.grad, xa.grad)
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert_close(p.grad, q.grad)


# ---- cells ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [None, 1, 4])
@pytest.mark.parametrize("with_state", [True, False])
def test_lstm_cell_parity(bias, batch, with_state, device, dtype):
    ref, ours = _pair(torch.nn.LSTMCell, pynn.nn.LSTMCell, 6, 7, bias=bias, device=device,
                      dtype=dtype)
    lead = () if batch is None else (batch,)
    x = torch.randn(lead + (6,), device=device, dtype=dtype)
    h = torch.randn(lead + (7,), device=device, dtype=dtype)
    c = torch.randn(lead + (7,), device=device, dtype=dtype)
    xs, hs, cs = [_leaf(x), _leaf(x)], [_leaf(h), _leaf(h)], [_leaf(c), _leaf(c)]
    ra = ref(xs[0], (hs[0], cs[0]) if with_state else None)
    rb = ours(xs[1], (hs[1], cs[1]) if with_state else None)
    assert_close(rb[0], ra[0])
    assert_close(rb[1], ra[1])
    gh, gc = torch.randn_like(ra[0]), torch.randn_like(ra[1])
    torch.autograd.backward(ra, [gh, gc])
    torch.autograd.backward(rb, [gh, gc])
    _check_grads(ref, ours, [xs[0]] + ([hs[0], cs[0]] if with_state else []),
                 [xs[1]] + ([hs[1], cs[1]] if with_state else []), dtype)


@pytest.mark.parametrize("nl", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [None, 1, 4])
def test_rnn_cell_parity(nl, bias, batch, device, dtype):
    ref, ours = _pair(torch.nn.RNNCell, pynn.nn.RNNCell, 6, 7, bias=bias, nonlinearity=nl,
                      device=device, dtype=dtype)
    lead = () if batch is None else (batch,)
    x = torch.randn(lead + (6,), device=device, dtype=dtype)
    h = torch.randn(lead + (7,), device=device, dtype=dtype)
    xs, hs = [_leaf(x), _leaf(x)], [_leaf(h), _leaf(h)]
    a, b = ref(xs[0], hs[0]), ours(xs[1], hs[1])
    assert_close(b, a)
    g = torch.randn_like(a)
    a.backward(g)
    b.backward(g)
    _check_grads(ref, ours, [xs[0], hs[0]], [xs[1], hs[1]], dtype)


@pytest.mark.parametrize("cls", ["LSTMCell", "RNNCell"])
def test_cells_take_strided_inputs_and_states(cls, device):
    """The cells read x, h and c with any strides: a column slice keeps unit stride in its last
    dimension and goes in as it is; a transposed tensor is made row-major first."""
    ref, ours = _pair(getattr(torch.nn, cls), getattr(pynn.nn, cls), 6, 7, device=device)
    x = torch.randn(4, 10, device=device)[:, 2:8]          # row stride 10, column stride 1
    h = torch.randn(7, 4, device=device).t()               # column stride 7
    c = torch.randn(4, 14, device=device)[:, ::2]          # column stride 2
    assert not (x.is_contiguous() or h.is_contiguous() or c.is_contiguous())
    state = (h, c) if cls == "LSTMCell" else h
    a, b = ref(x, state), ours(x, state)
    for p, q in zip(b if cls == "LSTMCell" else [b], a if cls == "LSTMCell" else [a]):
        assert_close(p, q)


class _Halve(torch.nn.Module):
    def forward(self, w):
        return 0.5 * w


def test_cells_follow_parametrized_and_swapped_weights(device):
    """The cells read their weights from _parameters for speed; a parametrization (which moves
    a weight out of _parameters) and torch.func.functional_call (which swaps the tensors in)
    must still reach the kernels, as they reach torch's cells."""
    from torch.nn.utils import parametrize

    ref, ours = _pair(torch.nn.LSTMCell, pynn.nn.LSTMCell, 3, 4, device=device)
    x = torch.randn(2, 3, device=device)
    hc = (torch.randn(2, 4, device=device), torch.randn(2, 4, device=device))
    swapped = {k: torch.randn_like(v) for k, v in ref.named_parameters()}
    a = torch.func.functional_call(ref, swapped, (x, hc))
    b = torch.func.functional_call(ours, swapped, (x, hc))
    assert_close(b[0], a[0])
    assert_close(b[1], a[1])
    assert not torch.allclose(b[0], ours(x, hc)[0])  # the swap changed the result

    for m in (ref, ours):
        parametrize.register_parametrization(m, "weight_hh", _Halve())
    assert "weight_hh" not in ours._parameters
    a, b = ref(x, hc), ours(x, hc)
    assert_close(b[0], a[0])
    assert_close(b[1], a[1])
    a[0].sum().backward()
    b[0].sum().backward()
    assert_close(ours.parametrizations.weight_hh.original.grad,
                 ref.parametrizations.weight_hh.original.grad)

    rref, rours = _pair(torch.nn.RNNCell, pynn.nn.RNNCell, 3, 4, device=device)
    for m in (rref, rours):
        parametrize.register_parametrization(m, "weight_ih", _Halve())
    assert_close(rours(x, hc[0]), rref(x, hc[0]))


def test_cell_step_loop_matches_sequence_layer(device):
    """An LSTMCell stepped by hand and a one-layer LSTM with the same weights agree."""
    cell = pynn.nn.LSTMCell(3, 4, device=device)
    seq = pynn.nn.LSTM(3, 4, device=device)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(seq, name + "_l0").copy_(getattr(cell, name))
    x = torch.randn(6, 2, 3, device=device)
    h = c = torch.zeros(2, 4, device=device)
    outs = []
    for t in range(6):
        h, c = cell(x[t], (h, c))
        outs.append(h)
    out, (hn, cn) = seq(x)
    assert_close(out, torch.stack(outs))
    assert_close(cn[0], c)


# ---- gradcheck (float64) ---------------------------------------------------------------------------

def test_gradcheck_cells(device):
    kw = dict(device=device, dtype=torch.float64)
    lstm = pynn.nn.LSTMCell(3, 4, **kw)
    x, h, c = (torch.randn(2, n, **kw).requires_grad_() for n in (3, 4, 4))
    params = list(lstm.parameters())
    assert torch.autograd.gradcheck(
        lambda x, h, c, *w: R.lstm_cell(x, h, c, *w), (x, h, c, *params))
    for nl in ("tanh", "relu"):
        cell = pynn.nn.RNNCell(3, 4, nonlinearity=nl, **kw)
        assert torch.autograd.gradcheck(
            lambda x, h, *w: R.rnn_cell(x, h, *w, nonlinearity=nl), (x, h, *cell.parameters()))


@pytest.mark.parametrize("mode,kw", [("LSTM", dict(num_layers=2, bidirectional=True, proj_size=2)),
                                     ("LSTM", dict(bias=False)),
                                     ("RNN", dict(num_layers=2, bidirectional=True)),
                                     ("RNN", dict(nonlinearity="relu", batch_first=True))],
                         ids=["lstm-2l-bi-proj", "lstm-nobias", "rnn-2l-bi", "rnn-relu-bf"])
def test_gradcheck_sequences(mode, kw, device):
    cls = pynn.nn.LSTM if mode == "LSTM" else pynn.nn.RNN
    m = cls(3, 4, device=device, dtype=torch.float64, **kw)
    names = [n for n, _ in m.named_parameters()]
    x = torch.randn(2, 3, 3, device=device, dtype=torch.float64, requires_grad=True)

    def run(x, *ws):
        out = torch.func.functional_call(m, dict(zip(names, ws)), (x,))
        flat = [out[0]] + (list(out[1]) if mode == "LSTM" else [out[1]])
        return tuple(flat)

    assert torch.autograd.gradcheck(run, (x, *m.parameters()))


def test_gradcheck_dropout_between_layers(device):
    m = pynn.nn.LSTM(3, 4, num_layers=3, dropout=0.4, device=device, dtype=torch.float64)
    x = torch.randn(4, 2, 3, device=device, dtype=torch.float64, requires_grad=True)

    def run(x):
        torch.manual_seed(7)  # the same masks on every call
        return m(x)[0]

    assert torch.autograd.gradcheck(run, (x,))


# ---- dropout, state_dict, repr, init ---------------------------------------------------------------

def test_dropout_one_zeroes_upper_layer_inputs(device):
    m = pynn.nn.LSTM(3, 4, num_layers=2, dropout=1.0, device=device)
    top = torch.nn.LSTM(4, 4, device=device)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(top, name + "_l0").copy_(getattr(m, name + "_l1"))
    x = torch.randn(5, 2, 3, device=device)
    out, _ = m(x)
    expected, _ = top(torch.zeros(5, 2, 4, device=device))
    assert_close(out, expected)
    m.eval()
    ref = torch.nn.LSTM(3, 4, num_layers=2, dropout=1.0, device=device).eval()
    ref.load_state_dict(m.state_dict())
    assert_close(m(x)[0], ref(x)[0])  # no dropout in eval mode


def test_dropout_changes_training_output_only(device):
    m = pynn.nn.RNN(3, 8, num_layers=2, dropout=0.5, device=device)
    x = torch.randn(5, 2, 3, device=device)
    assert not torch.allclose(m(x)[0], m(x)[0])
    m.eval()
    assert torch.equal(m(x)[0], m(x)[0])


@pytest.mark.parametrize("cls_t,cls_p,args,kw", [
    (torch.nn.LSTM, pynn.nn.LSTM, (3, 4), dict(num_layers=2, bidirectional=True, proj_size=2)),
    (torch.nn.LSTM, pynn.nn.LSTM, (3, 4), dict(bias=False, batch_first=True, dropout=0.2,
                                                num_layers=2)),
    (torch.nn.RNN, pynn.nn.RNN, (3, 4), dict(nonlinearity="relu", num_layers=3)),
    (torch.nn.LSTMCell, pynn.nn.LSTMCell, (3, 4), dict(bias=False)),
    (torch.nn.RNNCell, pynn.nn.RNNCell, (3, 4), dict(nonlinearity="relu")),
])
def test_state_dict_repr_and_init_match_torch(cls_t, cls_p, args, kw):
    ref, ours = cls_t(*args, **kw), cls_p(*args, **kw)
    assert repr(ours) == repr(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    bound = 1 / math.sqrt(ours.hidden_size)
    for (n, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        assert p.shape == q.shape, n
        assert p.abs().max() <= bound, n
    everything = torch.cat([p.detach().flatten() for p in ours.parameters()])
    assert everything.std() > bound / 3  # uniform(-b, b) has std b / sqrt(3)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    if hasattr(ours, "flatten_parameters"):
        ours.flatten_parameters()
        assert len(ours.all_weights) == len(ref.all_weights)
        for a, b in zip(ours.all_weights, ref.all_weights):
            assert [t.shape for t in a] == [t.shape for t in b]


def test_device_dtype_constructor_args():
    m = pynn.nn.LSTM(3, 4, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in m.parameters())
    out, (h, c) = m(torch.randn(2, 1, 3, dtype=torch.float64))
    assert out.dtype == h.dtype == c.dtype == torch.float64


# ---- long sequences, NaN ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["LSTM", "RNN"])
def test_gradients_finite_over_1000_steps(mode, device):
    cls = pynn.nn.LSTM if mode == "LSTM" else pynn.nn.RNN
    m = cls(4, 8, device=device)
    x = torch.randn(1000, 2, 4, device=device, requires_grad=True)
    out = m(x)[0]
    out[-1].sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    assert x.grad[-1].abs().sum() > 0  # the last step certainly gets a gradient


def test_nan_propagates_like_torch(device):
    ref, ours = _pair(torch.nn.LSTM, pynn.nn.LSTM, 3, 4, device=device)
    x = torch.randn(4, 2, 3, device=device)
    x[1, 0, 2] = float("nan")
    x[2, 1, 0] = float("inf")
    torch.testing.assert_close(ours(x)[0], ref(x)[0], equal_nan=True)


# ---- bad input: torch-like errors naming the argument, never a crash -------------------------------

def _raises(exc, match, fn, *args):
    with pytest.raises(exc, match=match):
        fn(*args)


def test_bad_sequence_input():
    m = pynn.nn.LSTM(3, 4, num_layers=2)
    _raises(RuntimeError, "input_size. Expected 3, got 5", m, torch.randn(4, 2, 5))
    _raises(ValueError, "Expected input to be 2D or 3D, got 4D", m, torch.randn(4, 2, 3, 1))
    _raises(ValueError, "Expected input to be 2D or 3D, got 1D", m, torch.randn(3))
    _raises(RuntimeError, r"hidden\[0\] size \(2, 2, 4\), got \[2, 3, 4\].*h_0", m,
            torch.randn(4, 2, 3), (torch.randn(2, 3, 4), torch.randn(2, 2, 4)))
    _raises(RuntimeError, r"hidden\[1\] size \(2, 2, 4\), got \[1, 2, 4\].*c_0", m,
            torch.randn(4, 2, 3), (torch.randn(2, 2, 4), torch.randn(1, 2, 4)))
    _raises(RuntimeError, "unbatched 2-D input, hx and cx should also be 2-D", m,
            torch.randn(4, 3), (torch.randn(2, 1, 4), torch.randn(2, 1, 4)))
    _raises(RuntimeError, "batched 3-D input", m, torch.randn(4, 2, 3),
            (torch.randn(2, 4), torch.randn(2, 4)))
    _raises(TypeError, "hx must be a tuple", m, torch.randn(4, 2, 3), torch.randn(2, 2, 4))
    _raises(TypeError, "input must be float32 or float64", m, torch.ones(4, 2, 3, dtype=torch.long))
    _raises(TypeError, "h_0", m, torch.randn(4, 2, 3),
            (torch.randn(2, 2, 4, dtype=torch.float64), torch.randn(2, 2, 4)))
    _raises(RuntimeError, "sequence length to be larger than 0", m, torch.randn(0, 2, 3))
    _raises(TypeError, "input must be a Tensor", m, [[1.0, 2.0, 3.0]])
    r = pynn.nn.RNN(3, 4)
    _raises(RuntimeError, r"Expected hidden size \(1, 2, 4\), got \[1, 3, 4\]", r,
            torch.randn(5, 2, 3), torch.randn(1, 3, 4))
    packed = pack_padded_sequence(torch.randn(5, 2, 3), [5, 3])
    _raises(NotImplementedError, "PackedSequence", m, packed)
    _raises(NotImplementedError, "PackedSequence", r, packed)


def test_bad_cell_input():
    c = pynn.nn.LSTMCell(3, 4)
    _raises(RuntimeError, "inconsistent input_size: got 5 expected 3", c, torch.randn(2, 5))
    _raises(ValueError, "Expected input to be 1D or 2D, got 3D", c, torch.randn(2, 2, 3))
    _raises(RuntimeError, "Input batch size 2 doesn't match hx batch size 3", c,
            torch.randn(2, 3), (torch.randn(3, 4), torch.randn(3, 4)))
    _raises(RuntimeError, "cx has inconsistent hidden_size: got 5, expected 4", c,
            torch.randn(2, 3), (torch.randn(2, 4), torch.randn(2, 5)))
    _raises(RuntimeError, "hx must be 1-D like input", c, torch.randn(3), (torch.randn(2, 4),
                                                                            torch.randn(2, 4)))
    r = pynn.nn.RNNCell(3, 4)
    _raises(RuntimeError, "hx has inconsistent hidden_size", r, torch.randn(2, 3), torch.randn(2, 5))
    _raises(TypeError, "input must be float32 or float64", r, torch.ones(2, 3, dtype=torch.int32))


def test_bad_constructor_args():
    _raises(ValueError, "dropout should be a number in range", pynn.nn.LSTM, 3, 4, 1, True, False, 2.0)
    _raises(ValueError, "proj_size has to be smaller than hidden_size", pynn.nn.LSTM, 3, 4, 1,
            True, False, 0.0, False, 4)
    _raises(ValueError, "hidden_size must be greater than zero", pynn.nn.RNN, 3, 0)
    _raises(ValueError, "Unknown nonlinearity 'gelu'", pynn.nn.RNN, 3, 4, 1, "gelu")
    _raises(ValueError, "num_layers must be greater than zero", pynn.nn.LSTM, 3, 4, 0)
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        pynn.nn.LSTM(3, 4, dropout=0.5)


# ---- inference: gate and cell workspaces as a ring ---------------------------------------------
# Without autograd the LSTM forward keeps R.INFERENCE_RING_STEPS steps of gates and cells, not T:
# step t lives in slot t % R, and input projections run a ring's worth of steps at a time, in
# runs aligned to the ring (so the reverse direction's first run is the short one). A slot
# reused too early, or a run misaligned, changes the outputs: they must match torch and the
# full-workspace forward. T = 7 with rings of 2, 3 and 6 leaves a partial run at either end.

def _lstm_inference(m, x, h0, c0, ring, monkeypatch):
    monkeypatch.setattr(R, "INFERENCE_RING_STEPS", ring)
    with torch.no_grad():
        out, (hn, cn) = m(x, (h0, c0))
    return [out, hn, cn]


RING_GRID = [  # I, H, proj, layers, bidirectional
    (4, 5, 0, 2, True), (4, 6, 3, 1, True), (5, 7, 0, 1, False), (3, 4, 2, 2, False),
]


@pytest.mark.parametrize("I,H,proj,layers,bidir", RING_GRID,
                         ids=[f"I{i}-H{h}-p{p}-L{l}-{'bi' if b else 'uni'}"
                              for i, h, p, l, b in RING_GRID])
def test_lstm_inference_ring_matches_full_workspaces(I, H, proj, layers, bidir, device, dtype,
                                                      monkeypatch):
    T, N = 7, 3
    D, P = (2 if bidir else 1), (proj or H)
    ref, ours = _pair(torch.nn.LSTM, pynn.nn.LSTM, I, H, layers, bidirectional=bidir,
                      proj_size=proj, device=device, dtype=dtype)
    x = torch.randn(T, N, I, device=device, dtype=dtype)
    h0 = torch.randn(layers * D, N, P, device=device, dtype=dtype)
    c0 = torch.randn(layers * D, N, H, device=device, dtype=dtype)
    with torch.no_grad():
        out_r, (hn_r, cn_r) = ref(x, (h0, c0))
    expected = [out_r, hn_r, cn_r]
    full = _lstm_inference(ours, x, h0, c0, T, monkeypatch)
    for ring in (2, 3, 6):
        got = _lstm_inference(ours, x, h0, c0, ring, monkeypatch)
        for a, b, c in zip(got, full, expected):
            assert_close(a, c)
            assert_close(a, b, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-13)


# The CPU's loops over a ring: the fused region (input projection per step), the wide input
# that projects a run at a time before a region per run (I = 1200, with PYNN_RNN_INPUT_GEMM=whole:
# the size rule would fuse it on 2 threads), and the step-by-step loop.
# Without a backward the fused region keeps each thread's gates and cells in its own buffers
# (csrc/cpu/rnn.cpp, OwnBuffers): 2 and 3 threads own slices that start past unit 0, whose
# biases sit H apart while their gates sit nu apart, and the last cells reach c_n (and, with
# I = 1200, the next run's first step) through the ring.
@pytest.mark.parametrize("I,loop,threads,proj,bias", [
    (6, "fused", 2, 0, True), (6, "fused", 3, 0, True), (6, "fused", 2, 5, True),
    (6, "fused", 3, 0, False), (1200, "fused", 2, 0, True), (1200, "steps", 1, 0, True),
    (6, "steps", 1, 0, True)])
def test_cpu_lstm_inference_ring_loops(I, loop, threads, proj, bias, cpu_threads, monkeypatch):
    cpu_threads(threads)
    monkeypatch.setenv("PYNN_RNN_THREADS", str(threads))
    monkeypatch.setenv("PYNN_RNN_LOOP", loop)
    monkeypatch.setenv("PYNN_RNN_INPUT_GEMM", _input_gemm(I))
    T, N, H, dtype = 9, 4, 67, torch.float64
    ref, ours = _pair(torch.nn.LSTM, pynn.nn.LSTM, I, H, 1, bias=bias, bidirectional=True,
                      proj_size=proj, dtype=dtype)
    x = torch.randn(T, N, I, dtype=dtype)
    h0, c0 = torch.randn(2, N, proj or H, dtype=dtype), torch.randn(2, N, H, dtype=dtype)
    with torch.no_grad():
        out_r, (hn_r, cn_r) = ref(x, (h0, c0))
    for ring in (2, 4):
        out, hn, cn = _lstm_inference(ours, x, h0, c0, ring, monkeypatch)
        assert_close(out, out_r)
        assert_close(hn, hn_r)
        assert_close(cn, cn_r)


def _in_scratch(view) -> bool:
    """Whether a view's data lies in the calling thread's scratch buffer (_backend.scratch)."""
    buf = B._scratch.buffer
    return buf is not None and buf.data_ptr() <= view[0] < buf.data_ptr() + buf.numel()


def test_lstm_inference_allocates_a_ring_and_training_every_step(monkeypatch):
    """The workspace sizes themselves: a ring under no_grad, all T steps when a backward may
    follow (the backward reads every step's gates and cells). Without a backward the ring is
    the thread's reused scratch; with one, the forward's workspaces are fresh (autograd keeps
    them) and the backward's gate gradients are scratch."""
    seen = []
    launch = B.launch

    def spy(name, ref, *args):
        if name == "lstm_forward":  # leading sizes of gates and cells, where the gates live
            seen.append((args[11][1][0], args[12][1][0], _in_scratch(args[11]), args[11][0]))
        if name == "lstm_backward":
            seen.append(("dgates", args[13][1][0], _in_scratch(args[13])))
        return launch(name, ref, *args)

    monkeypatch.setattr(B, "launch", spy)
    m = pynn.nn.LSTM(3, 4)
    x = torch.randn(50, 2, 3)
    ring = R.INFERENCE_RING_STEPS
    with torch.no_grad():
        m(x)
        m(x)
    assert [s[:3] for s in seen] == [(ring, ring, True)] * 2
    assert seen[0][3] == seen[1][3]  # the same memory, call after call
    seen.clear()
    m(x)[0].sum().backward()
    assert [s[:3] for s in seen] == [(50, 50, False), ("dgates", 50, True)]
    seen.clear()
    with torch.no_grad():
        m(x[:5])
    assert [s[:3] for s in seen] == [(5, 5, True)]


def test_kernel_rejects_inconsistent_views():
    """The C++ entry points check what they are given and raise naming the argument."""
    x = torch.randn(3, 2, 4)
    h0, c0 = torch.zeros(2, 5), torch.zeros(2, 5)
    w_ih, w_hh = torch.randn(20, 4), torch.randn(20, 5)
    y, hn, cn = torch.empty(3, 2, 5), torch.empty(2, 5), torch.empty(2, 5)
    gates, cs = torch.empty(3, 2, 20), torch.empty(3, 2, 5)
    a = R._absent(x)
    args = [B.view(t) for t in (x, h0, c0, w_ih, w_hh)] + [a, a, a] + \
        [B.view(t) for t in (y, hn, cn, gates, cs)] + [a, False, True]
    B.launch("lstm_forward", x, *args)  # consistent: runs
    bad = list(args)
    bad[11] = B.view(torch.empty(3, 2, 19))
    _raises(ValueError, "lstm_forward: gates has shape", B.launch, "lstm_forward", x, *bad)
    ring = list(args)  # a ring of 2 of the 3 steps' gates and cells: runs
    ring_gates, ring_cs = torch.empty(2, 2, 20), torch.empty(2, 2, 5)  # alive while it runs
    ring[11], ring[12] = B.view(ring_gates), B.view(ring_cs)
    B.launch("lstm_forward", x, *ring)
    bad[11], bad[12] = B.view(torch.empty(1, 2, 20)), B.view(torch.empty(1, 2, 5))
    _raises(ValueError, "ring of 2 to 2 of them, got 1", B.launch, "lstm_forward", x, *bad)
    bad = list(ring)
    bad[12] = B.view(torch.empty(3, 2, 5))
    _raises(ValueError, "cell_states has shape", B.launch, "lstm_forward", x, *bad)
    bad = list(args)
    bad[3] = B.view(torch.randn(20, 3))
    _raises(ValueError, "w_ih has shape", B.launch, "lstm_forward", x, *bad)
    bad = list(args)
    bad[1] = B.view(torch.zeros(2, 5, dtype=torch.float64))
    _raises(TypeError, "h0", B.launch, "lstm_forward", x, *bad)
    bad = list(args)
    bad[0] = B.view(torch.randn(0, 2, 4))
    _raises(ValueError, "sequence length", B.launch, "lstm_forward", x, *bad)


def test_strided_sequences_take_the_per_step_gemm_path(device):
    """Inputs whose time and batch strides do not flatten into one matrix (here the first N batch
    rows of a bigger tensor) make the kernel fall back to one GEMM per step; same answer."""
    torch.manual_seed(1)
    T, N, I, H = 4, 3, 5, 6
    big = torch.randn(T, N + 1, I, device=device, dtype=torch.float64)
    x = big[:, :N]
    assert x.stride(0) != N * x.stride(1)
    w_ih = torch.randn(4 * H, I, device=device, dtype=torch.float64)
    w_hh = torch.randn(4 * H, H, device=device, dtype=torch.float64)
    h0 = torch.randn(N, H, device=device, dtype=torch.float64)
    c0 = torch.randn(N, H, device=device, dtype=torch.float64)

    def forward(x):
        y, hn, cn = (torch.empty(T, N, H, device=device, dtype=torch.float64),
                     torch.empty(N, H, device=device, dtype=torch.float64),
                     torch.empty(N, H, device=device, dtype=torch.float64))
        gates = torch.empty(T, N, 4 * H, device=device, dtype=torch.float64)
        cs = torch.empty(T, N, H, device=device, dtype=torch.float64)
        a = R._absent(x)
        B.launch("lstm_forward", x, B.view(x), B.view(h0), B.view(c0), B.view(w_ih),
                 B.view(w_hh), a, a, a, B.view(y), B.view(hn), B.view(cn), B.view(gates),
                 B.view(cs), a, False, True)
        return y, cn

    y1, c1 = forward(x)
    y2, c2 = forward(x.contiguous())
    assert_close(y1, y2)
    assert_close(c1, c2)


@pytest.mark.parametrize("mode", ["LSTM", "RNN"])
def test_non_contiguous_input_and_states(mode, device):
    from helpers import non_contiguous
    cls_t, cls_p = (torch.nn.LSTM, pynn.nn.LSTM) if mode == "LSTM" else (torch.nn.RNN, pynn.nn.RNN)
    ref, ours = _pair(cls_t, cls_p, 3, 4, 2, device=device, dtype=torch.float64)
    x = non_contiguous(torch.randn(5, 2, 3, device=device, dtype=torch.float64))
    h = non_contiguous(torch.randn(2, 2, 4, device=device, dtype=torch.float64))
    assert not x.is_contiguous() and not h.is_contiguous()
    hx = (h, non_contiguous(torch.randn(2, 2, 4, device=device, dtype=torch.float64))) \
        if mode == "LSTM" else h
    xa, xb = _leaf(x), _leaf(x)
    # torch's cuDNN path refuses non-contiguous states ("rnn: hx is not contiguous"), so the
    # reference gets contiguous copies; ours gets the strided views.
    hx_ref = tuple(t.contiguous() for t in hx) if mode == "LSTM" else hx.contiguous()
    ra, rb = ref(xa, hx_ref), ours(xb, hx)
    assert_close(rb[0], ra[0])
    ra[0].sum().backward()
    rb[0].sum().backward()
    assert_close(xb.grad, xa.grad)


def test_cells_without_autograd_match(device):
    """Under no_grad the cells skip the autograd node (a direct kernel call); same numbers."""
    ref, ours = _pair(torch.nn.LSTMCell, pynn.nn.LSTMCell, 3, 4, device=device)
    rref, rours = _pair(torch.nn.RNNCell, pynn.nn.RNNCell, 3, 4, nonlinearity="relu",
                        device=device)
    x, h = torch.randn(2, 3, device=device), torch.randn(2, 4, device=device)
    with torch.no_grad():
        a, b = ours(x, (h, h)), ref(x, (h, h))
        assert_close(a[0], b[0])
        assert_close(a[1], b[1])
        assert not a[0].requires_grad and a[0].grad_fn is None
        assert_close(rours(x, h), rref(x, h))


# ---- the CPU time loop: one parallel region vs the step-by-step loop the GPU runs ------------
# csrc/cpu/rnn.cpp runs each recurrence as one parallel region in which every thread owns a
# slice of the hidden units (and of the projection's outputs). PYNN_RNN_THREADS forces the split
# on these small layers: 3 threads over H = 131 own 32 / 64 / 35 units, over P = 5 own 1 / 2 / 2
# outputs, and 4 threads over H = 3 leave one thread without units (it still meets the others at
# every barrier). Small layers compute their input projection inside the region, a step ahead;
# the wide inputs (I = 1200, 3000) stand for layers whose weights outgrow the caches and take one
# GEMM over all steps first (forced with PYNN_RNN_INPUT_GEMM=whole: the size rule would fuse
# these on some thread counts). PYNN_RNN_LOOP=steps runs the step-by-step loop of
# csrc/ops/rnn_loop.h.


def _input_gemm(I):
    """PYNN_RNN_INPUT_GEMM for an input width of the grids: one GEMM first for the wide ones."""
    return "whole" if I >= 1000 else "step"


FUSED_LSTM_GRID = [  # I, H, proj, bidirectional, batch, threads
    (6, 131, 0, False, 9, 3), (6, 131, 0, True, 1, 2), (6, 37, 5, False, 4, 3),
    (6, 37, 5, True, 1, 2), (6, 3, 0, True, 2, 4), (6, 64, 0, False, 32, 2),
    (6, 20, 7, False, 3, 1), (1200, 131, 0, False, 3, 2), (1200, 37, 5, True, 2, 3),
]


@pytest.mark.parametrize("I,H,proj,bidir,batch,threads", FUSED_LSTM_GRID,
                         ids=[f"I{i}-H{h}-p{p}-{'bi' if b else 'uni'}-B{n}-t{t}"
                              for i, h, p, b, n, t in FUSED_LSTM_GRID])
@pytest.mark.parametrize("loop", ["fused", "steps"])
def test_cpu_lstm_loop_parity(I, H, proj, bidir, batch, threads, loop, dtype, cpu_threads,
                              monkeypatch):
    cpu_threads(threads)
    monkeypatch.setenv("PYNN_RNN_THREADS", str(threads))
    monkeypatch.setenv("PYNN_RNN_LOOP", loop)
    monkeypatch.setenv("PYNN_RNN_INPUT_GEMM", _input_gemm(I))
    T, layers = 5, 2
    D, P = (2 if bidir else 1), (proj or H)
    ref, ours = _pair(torch.nn.LSTM, pynn.nn.LSTM, I, H, layers, bidirectional=bidir,
                      proj_size=proj, dtype=dtype)
    x = torch.randn(T, batch, I, dtype=dtype)
    h0 = torch.randn(layers * D, batch, P, dtype=dtype)
    c0 = torch.randn(layers * D, batch, H, dtype=dtype)
    xs, h0s, c0s = [_leaf(x), _leaf(x)], [_leaf(h0), _leaf(h0)], [_leaf(c0), _leaf(c0)]
    out_r, (hn_r, cn_r) = ref(xs[0], (h0s[0], c0s[0]))
    out_p, (hn_p, cn_p) = ours(xs[1], (h0s[1], c0s[1]))
    assert_close(out_p, out_r)
    assert_close(hn_p, hn_r)
    assert_close(cn_p, cn_r)
    g_out, g_h, g_c = torch.randn_like(out_r), torch.randn_like(hn_r), torch.randn_like(cn_r)
    torch.autograd.backward([out_r, hn_r, cn_r], [g_out, g_h, g_c])
    torch.autograd.backward([out_p, hn_p, cn_p], [g_out, g_h, g_c])
    _check_grads(ref, ours, [xs[0], h0s[0], c0s[0]], [xs[1], h0s[1], c0s[1]], dtype,
                 scale=T)


FUSED_RNN_GRID = [(6, 131, True, 9, 3, "tanh"), (6, 37, False, 1, 2, "relu"),
                  (6, 3, True, 2, 4, "tanh"), (3000, 131, False, 2, 1, "tanh")]


@pytest.mark.parametrize("I,H,bidir,batch,threads,nl", FUSED_RNN_GRID,
                         ids=[f"I{i}-H{h}-{'bi' if b else 'uni'}-B{n}-t{t}-{nl}"
                              for i, h, b, n, t, nl in FUSED_RNN_GRID])
@pytest.mark.parametrize("loop", ["fused", "steps"])
def test_cpu_rnn_loop_parity(I, H, bidir, batch, threads, nl, loop, dtype, cpu_threads,
                             monkeypatch):
    cpu_threads(threads)
    monkeypatch.setenv("PYNN_RNN_THREADS", str(threads))
    monkeypatch.setenv("PYNN_RNN_LOOP", loop)
    monkeypatch.setenv("PYNN_RNN_INPUT_GEMM", _input_gemm(I))
    T, layers = 5, 2
    D = 2 if bidir else 1
    ref, ours = _pair(torch.nn.RNN, pynn.nn.RNN, I, H, layers, nonlinearity=nl,
                      bidirectional=bidir, dtype=dtype)
    x = torch.randn(T, batch, I, dtype=dtype)
    h0 = torch.randn(layers * D, batch, H, dtype=dtype)
    xs, h0s = [_leaf(x), _leaf(x)], [_leaf(h0), _leaf(h0)]
    out_r, hn_r = ref(xs[0], h0s[0])
    out_p, hn_p = ours(xs[1], h0s[1])
    assert_close(out_p, out_r)
    assert_close(hn_p, hn_r)
    g_out, g_h = torch.randn_like(out_r), torch.randn_like(hn_r)
    torch.autograd.backward([out_r, hn_r], [g_out, g_h])
    torch.autograd.backward([out_p, hn_p], [g_out, g_h])
    _check_grads(ref, ours, [xs[0], h0s[0]], [xs[1], h0s[1]], dtype, scale=T)


# One LSTM step without a projection (every LSTMCell call, and a sequence of length one) and
# one Elman step (RNNCell) read W_ih and W_hh in place when the batch fills at least 7/8 of the
# vector lanes of its panels (32 wide for AVX-512 float, 16 for AVX2 float and AVX-512 double,
# 8 and 4 below): each thread broadcasts 8 (AVX-512), 6 (AVX2) or 4 (generic) weight rows at a
# time against the batch packed as panels and writes the tile transposed into the gates. The
# grid has batches that take that path for every kernel (28, 32, 60, 64: full and partial
# panels, one and two of them) and units that end mid-tile (H = 3, 37, 131 split over 1-4
# threads), and small batches (1, 9) that go back to the packed weights; weights with no unit
# column stride are copied row-major first.
CELL_STEP_GRID = [  # batch, I, H, threads
    (1, 6, 7, 1), (28, 5, 131, 3), (60, 40, 37, 2), (32, 128, 64, 2), (64, 3, 3, 4),
    (9, 17, 24, 1)]


@pytest.mark.parametrize("kernel", ["avx512", "avx2", "generic"])
@pytest.mark.parametrize("batch,I,H,threads", CELL_STEP_GRID,
                         ids=[f"B{b}-I{i}-H{h}-t{t}" for b, i, h, t in CELL_STEP_GRID])
@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_cpu_lstm_step_reads_weights_in_place(kernel, batch, I, H, threads, layout, dtype,
                                              cpu_threads, monkeypatch):
    monkeypatch.setenv("PYNN_GEMM_KERNEL", kernel)
    cpu_threads(threads)
    monkeypatch.setenv("PYNN_RNN_THREADS", str(threads))
    x = torch.randn(batch, I, dtype=dtype)
    h, c = torch.randn(batch, H, dtype=dtype), torch.randn(batch, H, dtype=dtype)
    w_ih, w_hh = torch.randn(4 * H, I, dtype=dtype), torch.randn(4 * H, H, dtype=dtype) / 4
    b_ih, b_hh = torch.randn(4 * H, dtype=dtype), torch.randn(4 * H, dtype=dtype)
    if layout == "columns":  # same values, column-major storage
        w_ih, w_hh = w_ih.t().contiguous().t(), w_hh.t().contiguous().t()
    try:
        h1, c1 = R.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
    except RuntimeError as e:
        assert "cannot run" in str(e) and kernel != "generic"
        pytest.skip(f"this CPU cannot run the {kernel} kernel")
    wide = [t.double() for t in (x, h, c, w_ih, w_hh, b_ih, b_hh)]
    h_ref, c_ref = torch._VF.lstm_cell(wide[0], (wide[1], wide[2]), *wide[3:])
    assert_close(h1, h_ref.to(dtype), dtype=dtype, scale=I + H)
    assert_close(c1, c_ref.to(dtype), dtype=dtype, scale=I + H)
    # Without autograd each thread keeps its gates in scratch of its own; with it they go to the
    # saved [B, 4H] rows the backward reads. Same outputs, and the gradients need the saved gates.
    xg = x.clone().requires_grad_()
    h2, c2 = R.lstm_cell(xg, h, c, w_ih, w_hh, b_ih, b_hh)
    torch.testing.assert_close(h2, h1, rtol=0, atol=0)
    torch.testing.assert_close(c2, c1, rtol=0, atol=0)
    gh, gc = torch.randn_like(h1), torch.randn_like(c1)
    torch.autograd.backward([h2, c2], [gh, gc])
    xw = wide[0].clone().requires_grad_()
    torch.autograd.backward(torch._VF.lstm_cell(xw, (wide[1], wide[2]), *wide[3:]),
                            [gh.double(), gc.double()])
    assert_close(xg.grad, xw.grad.to(dtype), dtype=dtype, scale=I + H)
    # A sequence of one step takes the same path.
    cfg = R.RecurrentConfig("LSTM", 1, False, True, H, 0, 0.0, False)
    y, hn, cn = R.recurrent(x[None], h[None], c[None], [w_ih, w_hh, b_ih, b_hh], cfg)
    torch.testing.assert_close(y[0], h1, rtol=0, atol=0)
    torch.testing.assert_close(hn[0], h1, rtol=0, atol=0)
    torch.testing.assert_close(cn[0], c1, rtol=0, atol=0)


@pytest.mark.parametrize("kernel", ["avx512", "avx2", "generic"])
@pytest.mark.parametrize("batch,I,H,threads", CELL_STEP_GRID,
                         ids=[f"B{b}-I{i}-H{h}-t{t}" for b, i, h, t in CELL_STEP_GRID])
@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("nl", ["tanh", "relu"])
def test_cpu_rnn_step_reads_weights_in_place(kernel, batch, I, H, threads, layout, nl, dtype,
                                             cpu_threads, monkeypatch):
    monkeypatch.setenv("PYNN_GEMM_KERNEL", kernel)
    cpu_threads(threads)
    monkeypatch.setenv("PYNN_RNN_THREADS", str(threads))
    x, h = torch.randn(batch, I, dtype=dtype), torch.randn(batch, H, dtype=dtype)
    w_ih, w_hh = torch.randn(H, I, dtype=dtype), torch.randn(H, H, dtype=dtype) / 4
    b_ih, b_hh = torch.randn(H, dtype=dtype), torch.randn(H, dtype=dtype)
    if layout == "columns":
        w_ih, w_hh = w_ih.t().contiguous().t(), w_hh.t().contiguous().t()
    try:
        h1 = R.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nl)
    except RuntimeError as e:
        assert "cannot run" in str(e) and kernel != "generic"
        pytest.skip(f"this CPU cannot run the {kernel} kernel")
    wide = [t.double() for t in (x, h, w_ih, w_hh, b_ih, b_hh)]
    ref = torch._VF.rnn_tanh_cell if nl == "tanh" else torch._VF.rnn_relu_cell
    assert_close(h1, ref(*wide).to(dtype), dtype=dtype, scale=I + H)
    cfg = R.RecurrentConfig("RNN_" + nl.upper(), 1, False, True, H, 0, 0.0, False)
    y, hn, _ = R.recurrent(x[None], h[None], None, [w_ih, w_hh, b_ih, b_hh], cfg)
    torch.testing.assert_close(y[0], h1, rtol=0, atol=0)
    torch.testing.assert_close(hn[0], h1, rtol=0, atol=0)


def test_cpu_loop_thread_counts_agree(cpu_threads, monkeypatch):
    """The split over threads changes only which thread computes what: 1, 2 and 3 threads give
    the same bits, as does the step-by-step loop (each output element is the same sum in the
    same order whichever thread owns it)."""
    T, N, I, H, P = 6, 5, 7, 67, 9
    m = pynn.nn.LSTM(I, H, 2, bidirectional=True, proj_size=P, dtype=torch.float64)
    x = torch.randn(T, N, I, dtype=torch.float64, requires_grad=True)
    g = torch.randn(T, N, 2 * P, dtype=torch.float64)
    results = []
    for loop, threads in [("fused", 1), ("fused", 2), ("fused", 3), ("steps", 1)]:
        cpu_threads(threads)
        monkeypatch.setenv("PYNN_RNN_THREADS", str(threads))
        monkeypatch.setenv("PYNN_RNN_LOOP", loop)
        x.grad = None
        m.zero_grad()
        y, _ = m(x)
        y.backward(g)
        results.append([y.detach(), x.grad.clone()] + [p.grad.clone() for p in m.parameters()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


_SMALL_TEAM = """
import os, sys, torch, pynn
torch.manual_seed(0)
torch.set_num_threads(4)
m = pynn.nn.LSTM(5, 67, bidirectional=True, proj_size=9, dtype=torch.float64)
x = torch.randn(6, 3, 5, dtype=torch.float64, requires_grad=True)
out = []
for threads in ("4", "1"):
    os.environ["PYNN_RNN_THREADS"] = threads
    x.grad = None
    y = m(x)[0]
    y.backward(torch.ones_like(y))
    out.append((y.detach(), x.grad.clone()))
assert all(torch.equal(a, b) for a, b in zip(*out)), "4-thread plan on a 3-thread team differs"
print("same")
"""


def test_cpu_loop_runs_on_a_team_smaller_than_planned():
    """OpenMP may grant a region fewer threads than asked (here OMP_THREAD_LIMIT=3 under a plan
    for 4): the step barrier and the weight scratch follow the team actually granted. Sized by
    the plan, the barrier waited forever for a fourth thread; the timeout turns a hang into a
    failure."""
    env = dict(os.environ, OMP_THREAD_LIMIT="3",
               PYTHONPATH=os.pathsep.join([os.path.dirname(pynn.__path__[0]),
                                           os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _SMALL_TEAM], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "same", proc.stderr[-2000:]


def test_cpu_loop_env_rejects_bad_values(monkeypatch):
    m = pynn.nn.LSTM(3, 4)
    x = torch.randn(2, 1, 3)
    monkeypatch.setenv("PYNN_RNN_LOOP", "fast")
    with pytest.raises(ValueError, match="PYNN_RNN_LOOP"):
        m(x)
    monkeypatch.setenv("PYNN_RNN_LOOP", "fused")
    monkeypatch.setenv("PYNN_RNN_THREADS", "0")
    with pytest.raises(ValueError, match="PYNN_RNN_THREADS"):
        m(x)
    monkeypatch.setenv("PYNN_RNN_THREADS", "1")
    monkeypatch.setenv("PYNN_RNN_INPUT_GEMM", "ahead")
    with pytest.raises(ValueError, match="PYNN_RNN_INPUT_GEMM"):
        m(x)
