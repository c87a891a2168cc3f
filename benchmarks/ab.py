"""Two builds of pynn against each other, and against torch, in one process.

    python benchmarks/ab.py OLD NEW                       # every case
    python benchmarks/ab.py OLD NEW --cases conv3x3,lstm  # cases whose names start so
    python benchmarks/ab.py OLD NEW --rounds 15 --threads 2

OLD and NEW are folders that hold a built `pynn` package: a checkout's src/ after
tools/dev_build.sh, or a copy of src/pynn (with its _C*.so) made before a change. Both are
copied under other names (pynn_old, pynn_new) and imported side by side; each case then runs
blocks of calls of old, new and torch, in an order that turns round every round, and prints the
medians, the median of the per-round ratios new / old with how many rounds new won, and each
build's speedup over torch.

Why one process: on the 2-vCPU VM this was written on, the same build ran an LSTM in 13.3 ms in
one process and 16.0 ms in the next, and a change that measured 0.97x across alternating
processes measured 1.00x here. Within one process the two builds share the threads' placement,
the allocator and torch's state, so their ratio holds to about 2% (a build against itself, and
paths a change did not touch, read 1.00-1.02).

Only pynn.functional and pynn.nn are called: a module that imports `pynn` by name inside a
function would reach whichever pynn is on the path, not the copy.
"""
import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as TF


def _conv(xs, ws, **kw):
    def make(lib):
        x, w, b = torch.randn(xs), torch.randn(ws), torch.randn(ws[0])
        conv = TF.conv2d if lib is None else lib.functional.conv2d
        return lambda: conv(x, w, b, **kw)
    return make


def _conv_input_grad(xs, ws, **kw):
    """Forward and input gradient (the weight needs none)."""
    def make(lib):
        x, w = torch.randn(xs, requires_grad=True), torch.randn(ws)
        conv = TF.conv2d if lib is None else lib.functional.conv2d
        gy = torch.randn_like(TF.conv2d(x.detach(), w, **kw))
        return lambda: torch.autograd.grad(conv(x, w, **kw), x, gy)
    return make


def _conv_weight_grad(xs, ws, **kw):
    """Forward and weight gradient (the input needs none)."""
    def make(lib):
        x, w = torch.randn(xs), torch.randn(ws, requires_grad=True)
        conv = TF.conv2d if lib is None else lib.functional.conv2d
        gy = torch.randn_like(TF.conv2d(x, w.detach(), **kw))
        return lambda: torch.autograd.grad(conv(x, w, **kw), w, gy)
    return make


def _lstm(I, H, **kw):
    def make(lib):
        torch.manual_seed(0)  # the same weights for every contestant
        m = (torch.nn if lib is None else lib.nn).LSTM(I, H, **kw)
        x = torch.randn(100, 32, I)

        def run():
            with torch.no_grad():
                m(x)
        return run
    return make


def _lstm_train(I, H, **kw):
    """Forward and backward through the input and the weights."""
    def make(lib):
        torch.manual_seed(0)
        m = (torch.nn if lib is None else lib.nn).LSTM(I, H, **kw)
        x = torch.randn(100, 32, I, requires_grad=True)

        def run():
            out, _ = m(x)
            out.sum().backward()
        return run
    return make


def _linear(M, K, N, train=False):
    """F.linear (a GEMM with the weight transposed, plus the bias); train: forward and the
    input, weight and bias gradients."""
    def make(lib):
        x, w, b = (torch.randn(M, K, requires_grad=train), torch.randn(N, K, requires_grad=train),
                   torch.randn(N, requires_grad=train))
        linear = TF.linear if lib is None else lib.functional.linear
        if not train:
            return lambda: linear(x, w, b)
        g = torch.randn(M, N)
        return lambda: torch.autograd.grad(linear(x, w, b), (x, w, b), g)
    return make


def _batch_norm(shape, train=False):
    """A BatchNorm layer: eval under no_grad, or train mode with the input and parameter
    gradients (the per-call cost of the layer as well as its kernels)."""
    def make(lib):
        nn = torch.nn if lib is None else lib.nn
        m = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(shape[1]).train(train)
        x = torch.randn(shape, requires_grad=train)
        if not train:
            def run():
                with torch.no_grad():
                    m(x)
            return run
        g = torch.randn(shape)
        return lambda: torch.autograd.grad(m(x), (x, m.weight, m.bias), g)
    return make


def _lstm_cell_loop(B, I, H):
    """100 steps of LSTMCell driven from Python under no_grad (the benchmark's lstm_cell_loop)."""
    def make(lib):
        torch.manual_seed(0)
        cell = (torch.nn if lib is None else lib.nn).LSTMCell(I, H)
        x, h0 = torch.randn(100, B, I), torch.zeros(B, H)

        def run():
            with torch.no_grad():
                h, c = h0, h0
                for t in range(100):
                    h, c = cell(x[t], (h, c))
        return run
    return make


# name: (builder taking the pynn package, or None for torch; calls per block)
CASES = {
    "conv3x3_56": (_conv((8, 64, 56, 56), (64, 64, 3, 3), padding=1), 10),
    "conv3x3_28": (_conv((8, 128, 28, 28), (128, 128, 3, 3), padding=1), 10),
    "conv3x3_14": (_conv((8, 256, 14, 14), (256, 256, 3, 3), padding=1), 10),
    "conv3x3_7": (_conv((8, 512, 7, 7), (512, 512, 3, 3), padding=1), 10),
    "conv3x3s2_56": (_conv((4, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1), 10),
    "conv3x3s2_28": (_conv((4, 128, 28, 28), (256, 128, 3, 3), stride=2, padding=1), 10),
    "conv3x3s2_14": (_conv((4, 256, 14, 14), (512, 256, 3, 3), stride=2, padding=1), 10),
    "conv11x11s4_alexnet": (_conv((8, 3, 224, 224), (64, 3, 11, 11), stride=4, padding=2), 10),
    "conv1x1_28": (_conv((8, 256, 28, 28), (128, 256, 1, 1)), 20),
    # ResNet-18's downsampling convs at batch 4, forward + input gradient
    "gx3x3s2_56": (_conv_input_grad((4, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1), 5),
    "gx3x3s2_28": (_conv_input_grad((4, 128, 28, 28), (256, 128, 3, 3), stride=2, padding=1), 5),
    "gx3x3s2_14": (_conv_input_grad((4, 256, 14, 14), (512, 256, 3, 3), stride=2, padding=1), 5),
    "gx1x1s2_56": (_conv_input_grad((4, 64, 56, 56), (128, 64, 1, 1), stride=2), 10),
    "gx1x1s2_28": (_conv_input_grad((4, 128, 28, 28), (256, 128, 1, 1), stride=2), 10),
    # forward + weight gradient, ResNet-18's 3x3 shapes at batch 4
    "gw3x3_56": (_conv_weight_grad((4, 64, 56, 56), (64, 64, 3, 3), padding=1), 5),
    "gw3x3_14": (_conv_weight_grad((4, 256, 14, 14), (256, 256, 3, 3), padding=1), 5),
    "gw3x3s2_56": (_conv_weight_grad((4, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1), 5),
    "gw3x3s2_14": (_conv_weight_grad((4, 256, 14, 14), (512, 256, 3, 3), stride=2, padding=1),
                   5),
    # the benchmark's linear shapes: 2048-wide at batch 256, and a small layer
    "linear_2048": (_linear(256, 2048, 2048), 5),
    "linear_2048_train": (_linear(256, 2048, 2048, train=True), 2),
    "linear_32": (_linear(32, 128, 256), 200),
    "linear_32_train": (_linear(32, 128, 256, train=True), 100),
    # BatchNorm: a small layer (per-call cost), ResNet-50's at batch 2, a ResNet-18 training one
    "bn1d_eval_32x64": (_batch_norm((32, 64)), 200),
    "bn2d_eval_7": (_batch_norm((2, 2048, 7, 7)), 20),
    "bn2d_eval_14": (_batch_norm((2, 1024, 14, 14)), 20),
    "bn2d_eval_56": (_batch_norm((2, 256, 56, 56)), 10),
    "bn2d_train_56": (_batch_norm((4, 64, 56, 56), train=True), 5),
    "bn2d_train_7": (_batch_norm((4, 512, 7, 7), train=True), 20),
    "lstm_128": (_lstm(128, 256), 2),
    "lstm_256": (_lstm(256, 256), 2),
    "lstm_2layer_bi": (_lstm(128, 256, num_layers=2, bidirectional=True), 1),
    "lstm_128_train": (_lstm_train(128, 256), 1),
    "lstmcell_32": (_lstm_cell_loop(32, 128, 256), 2),
    "lstmcell_4": (_lstm_cell_loop(4, 32, 64), 5),
}


def _import_copy(folder: Path, name: str, into: Path):
    src = folder / "pynn"
    if not (src / "__init__.py").is_file() or not any(src.glob("_C*.so")):
        sys.exit(f"ab: {folder} holds no built pynn package (pynn/__init__.py and pynn/_C*.so)")
    shutil.copytree(src, into / name, ignore=shutil.ignore_patterns("__pycache__"))
    return importlib.import_module(name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--cases", default="", help="comma-separated name prefixes (default: all)")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    if args.rounds < 1 or args.threads < 1:
        ap.error("--rounds and --threads must be positive")
    prefixes = [p for p in args.cases.split(",") if p]
    chosen = [n for n in CASES if not prefixes or any(n.startswith(p) for p in prefixes)]
    if not chosen:
        ap.error(f"no case starts with {args.cases!r}; cases: {', '.join(CASES)}")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, tmp)
        libs = {"old": _import_copy(args.old, "pynn_old", Path(tmp)),
                "new": _import_copy(args.new, "pynn_new", Path(tmp)), "torch": None}
        for lib in libs.values():
            if lib is not None:
                lib.set_num_threads(args.threads)
        a = torch.randn(1024, 1024)
        a @ a  # torch's MKL state as after any GEMM (its conv runs faster after one)
        print(f"{args.rounds} rounds, {args.threads} threads; times in ms (medians)")
        for name in chosen:
            make, reps = CASES[name]
            calls = {k: make(lib) for k, lib in libs.items()}
            for f in calls.values():
                f()
                f()
            times = {k: [] for k in calls}
            order = list(calls)
            for r in range(args.rounds):
                turn = order[r % 3:] + order[:r % 3]  # who goes first changes every round
                for k in turn[::-1] if r % 2 else turn:
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        calls[k]()
                    times[k].append((time.perf_counter() - t0) / reps * 1e3)
            med = {k: statistics.median(v) for k, v in times.items()}
            ratios = [n / o for o, n in zip(times["old"], times["new"])]
            wins = sum(q < 1 for q in ratios)
            print(f"{name:20s} old {med['old']:8.3f}  new {med['new']:8.3f}  torch "
                  f"{med['torch']:8.3f} | new/old {statistics.median(ratios):.3f} (new faster "
                  f"{wins}/{len(ratios)}) | speedup old {med['torch'] / med['old']:.3f} "
                  f"new {med['torch'] / med['new']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
