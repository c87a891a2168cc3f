"""Every pynn CUDA kernel once, forward and backward, on small inputs: a program short enough to
run under compute-sanitizer, which slows each launch and CUDA's start-up by orders of magnitude.

    compute-sanitizer --tool memcheck --error-exitcode 3 python3 tools/cuda_memcheck.py

(`python tools/cuda_memcheck.py cpu` runs the same cases on the CPU kernels.)

Shapes are odd on purpose (partial GEMM tiles, windows in padding, uneven groups) so that an
out-of-bounds index shows up. Each result is compared with torch, so the run also fails when a
kernel writes the wrong place without leaving its buffer. Exits 0 when every case agrees.
"""
import sys

import torch
import torch.nn.functional as TF

import pynn
import pynn.functional as F
import pynn.nn as pnn

DEV = sys.argv[1] if len(sys.argv) > 1 else "cuda"


def leaf(*shape):
    return torch.randn(*shape, device=DEV).requires_grad_()


def run(fn, xs):
    """fn(*copies of xs): its outputs and the gradient of a weighted sum of them per input."""
    xs = [x.detach().clone().requires_grad_(x.requires_grad) for x in xs]
    out = fn(*xs)
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum((o * torch.linspace(-1, 1, o.numel(), device=DEV).view_as(o)).sum() for o in outs)
    loss.backward()
    return list(outs) + [x.grad for x in xs if x.requires_grad]


def same(ours, ref, *xs, tol=1e-4):
    for a, b in zip(run(ours, xs), run(ref, xs)):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def rnn_case(cls_t, cls_p, **kw):
    ref = cls_t(6, 9, **kw).to(DEV)
    ours = cls_p(6, 9, **kw).to(DEV)
    ours.load_state_dict(ref.state_dict())
    same(lambda t: ours(t)[0], lambda t: ref(t)[0], leaf(5, 3, 6), tol=1e-3)


def cell_case():
    ref, ours = torch.nn.LSTMCell(6, 9).to(DEV), pnn.LSTMCell(6, 9).to(DEV)
    ours.load_state_dict(ref.state_dict())
    same(ours, ref, leaf(3, 6), tol=1e-3)


def dropout_case():
    x = leaf(1003, 7)
    y = F.dropout(x, 0.3)
    y.backward(torch.ones_like(y))
    kept = y != 0
    torch.testing.assert_close(y[kept], x.detach()[kept] / 0.7)
    torch.testing.assert_close(x.grad, kept.float() / 0.7)


def cases():
    """(name, thunk) pairs; each thunk raises when pynn and torch disagree."""
    x = leaf(3, 5, 13, 11)
    xcl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    sm = leaf(7, 1001)
    tgt = torch.randint(0, 1001, (7,), device=DEV)
    tgt[2] = -100
    wts = torch.rand(1001, device=DEV)
    mt = torch.randn(7, 1001, device=DEV)
    rm, rv = torch.randn(5, device=DEV), torch.rand(5, device=DEV) + 0.5
    c = [
        ("activations", lambda: same(
            lambda t: (F.relu(t), F.sigmoid(t), F.tanh(t), F.leaky_relu(t, 0.1)),
            lambda t: (TF.relu(t), torch.sigmoid(t), torch.tanh(t), TF.leaky_relu(t, 0.1)), x)),
        ("linear", lambda: same(F.linear, TF.linear, leaf(37, 29), leaf(19, 29), leaf(19))),
        ("softmax/log_softmax", lambda: same(
            lambda t: (F.softmax(t, -1), F.log_softmax(t, 0)),
            lambda t: (TF.softmax(t, -1), TF.log_softmax(t, 0)), sm)),
        ("cross_entropy", lambda: same(
            lambda t: (F.cross_entropy(t, tgt, wts), F.cross_entropy(t, tgt, label_smoothing=0.1)),
            lambda t: (TF.cross_entropy(t, tgt, wts), TF.cross_entropy(t, tgt, label_smoothing=0.1)),
            sm)),
        ("mse_loss", lambda: same(lambda t: F.mse_loss(t, mt), lambda t: TF.mse_loss(t, mt), sm)),
        ("lrn", lambda: same(lambda t: F.local_response_norm(t, 3),
                             lambda t: TF.local_response_norm(t, 3), x)),
        ("batch_norm train", lambda: same(
            lambda t, g, b: F.batch_norm(t, None, None, g, b, training=True),
            lambda t, g, b: TF.batch_norm(t, None, None, g, b, training=True), x, leaf(5), leaf(5))),
        ("batch_norm eval", lambda: same(
            lambda t, g, b: F.batch_norm(t, rm, rv, g, b),
            lambda t, g, b: TF.batch_norm(t, rm, rv, g, b), x, leaf(5), leaf(5))),
        ("dropout", dropout_case),
        ("lstm 2-layer bidirectional proj", lambda: rnn_case(
            torch.nn.LSTM, pnn.LSTM, num_layers=2, bidirectional=True, proj_size=4)),
        ("rnn relu", lambda: rnn_case(torch.nn.RNN, pnn.RNN, nonlinearity="relu")),
        ("lstm cell", cell_case),
    ]
    for name, kw, ws in [("conv 3x3 stride (2, 1)", dict(padding=1, stride=(2, 1)), (7, 5, 3, 3)),
                         ("conv depthwise dilated", dict(groups=5, padding=2, dilation=2), (10, 1, 3, 3)),
                         ("conv 1x1", {}, (6, 5, 1, 1)),
                         ("conv 5x5 same", dict(padding="same"), (4, 5, 5, 5))]:
        c.append((name, lambda kw=kw, ws=ws: same(
            lambda t, w, b: F.conv2d(t, w, b, **kw), lambda t, w, b: TF.conv2d(t, w, b, **kw),
            x, leaf(*ws), leaf(ws[0]))))
    for t, tag in ((x, "nchw"), (xcl, "nhwc")):
        c.append((f"max_pool2d {tag}", lambda t=t: same(
            lambda u: F.max_pool2d(u, 3, 2, 1, ceil_mode=True),
            lambda u: TF.max_pool2d(u, 3, 2, 1, ceil_mode=True), t)))
        # an NCHW reference: torch 2.11's NHWC avg_pool2d backward mishandles padding
        c.append((f"avg/adaptive pool {tag}", lambda t=t: same(
            lambda u: (F.avg_pool2d(u, 3, 2, 1, count_include_pad=False),
                       F.adaptive_avg_pool2d(u, (4, 3)), F.adaptive_avg_pool2d(u, 1)),
            lambda u: (TF.avg_pool2d(u.contiguous(), 3, 2, 1, count_include_pad=False),
                       TF.adaptive_avg_pool2d(u.contiguous(), (4, 3)),
                       TF.adaptive_avg_pool2d(u.contiguous(), 1)), t)))
    return c


def main() -> int:
    from pynn.bench.machine import tf32
    if DEV == "cuda" and not pynn.cuda_available():
        print("cuda_memcheck: pynn sees no CUDA GPU", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    failed = 0
    for name, fn in cases():
        try:
            with tf32(False):
                fn()
            if DEV == "cuda":
                torch.cuda.synchronize()  # a kernel fault surfaces here, under its case
            print(f"ok    {name}", flush=True)
        except Exception as e:  # report every case, then fail
            failed += 1
            print(f"FAIL  {name}: {type(e).__name__}: {str(e).splitlines()[0]}", flush=True)
    print(f"{failed} of the cases failed" if failed else "all cases agree with torch")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
