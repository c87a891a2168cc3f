"""LSTM / RNN sequences and an LSTMCell step loop, pynn against torch on the same weights."""
import torch

import pynn
from ..case import Case


def _seq(cls_name, T, N, I, H, backward, **kw):
    def make(device, dtype):
        ref = getattr(torch.nn, cls_name)(I, H, device=device, dtype=dtype, **kw)
        ours = getattr(pynn.nn, cls_name)(I, H, device=device, dtype=dtype, **kw)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(T, N, I, device=device, dtype=dtype, requires_grad=backward)
        if not backward:
            def run(m):
                with torch.no_grad():
                    m(x)
            return (lambda: run(ours)), (lambda: run(ref))
        width = H * (2 if kw.get("bidirectional") else 1)
        g = torch.randn(T, N, width, device=device, dtype=dtype)
        return (lambda: ours(x)[0].backward(g)), (lambda: ref(x)[0].backward(g))
    return make


def _cell_loop(T, N, I, H, backward):
    """T steps of LSTMCell driven from Python, the way a decoder or custom loop uses it."""
    def make(device, dtype):
        ref = torch.nn.LSTMCell(I, H, device=device, dtype=dtype)
        ours = pynn.nn.LSTMCell(I, H, device=device, dtype=dtype)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(T, N, I, device=device, dtype=dtype, requires_grad=backward)
        h0 = torch.zeros(N, H, device=device, dtype=dtype)

        def run(cell):
            h, c = h0, h0
            total = 0
            for t in range(T):
                h, c = cell(x[t], (h, c))
                if backward:
                    total = total + h.sum()
            if backward:
                total.backward()

        if not backward:
            def fwd(cell):
                with torch.no_grad():
                    run(cell)
            return (lambda: fwd(ours)), (lambda: fwd(ref))
        return (lambda: run(ours)), (lambda: run(ref))
    return make


def _lstm_flops(T, N, I, H, backward):
    f = 2 * T * N * 4 * H * (I + H)  # input and recurrent projections
    return f * (3 if backward else 1)  # backward: grad of the input / h and of the weights


def cases():
    out = []
    for backward in (False, True):
        mode = "forward+backward" if backward else "forward"
        T, N, I, H = 100, 32, 128, 256
        out.append(Case(group="lstm", name=f"T{T}xB{N}x{I}->{H}", mode=mode,
                        make=_seq("LSTM", T, N, I, H, backward),
                        flops=_lstm_flops(T, N, I, H, backward), quick=True))
        out.append(Case(group="lstm", name=f"T{T}xB{N}x{I}->{H}-2layer-bi", mode=mode,
                        make=_seq("LSTM", T, N, I, H, backward, num_layers=2, bidirectional=True),
                        flops=_lstm_flops(T, N, I, H, backward) * 2 * 3))
        # Without bias the gate kernels take their own instantiation (it once ran element by
        # element while the biased one was vectorised: 2.6x slower, unseen by the cases above).
        out.append(Case(group="lstm", name=f"T{T}xB{N}x{I}->{H}-nobias", mode=mode,
                        make=_seq("LSTM", T, N, I, H, backward, bias=False),
                        flops=_lstm_flops(T, N, I, H, backward)))
        out.append(Case(group="rnn_tanh", name=f"T{T}xB{N}x{I}->{H}", mode=mode,
                        make=_seq("RNN", T, N, I, H, backward),
                        flops=_lstm_flops(T, N, I, H, backward) / 4))
        out.append(Case(group="lstm_cell_loop", name=f"T{T}xB{N}x{I}->{H}", mode=mode,
                        make=_cell_loop(T, N, I, H, backward),
                        flops=_lstm_flops(T, N, I, H, backward), quick=True))
        out.append(Case(group="lstm_cell_loop", name="T100xB4x32->64", mode=mode,
                        make=_cell_loop(100, 4, 32, 64, backward),
                        flops=_lstm_flops(100, 4, 32, 64, backward)))
    return out
