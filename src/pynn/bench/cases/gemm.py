"""GEMM: pynn's matmul (the GEMM every CPU op is built on) against torch.matmul.

Shapes are M x N x K. 2048^3 is the classic square peak test; the skinny ones are the products of
linear and LSTM layers at batch 32 (and 256), each in the three layouts a layer needs:
  "NN"  A @ B      (grad_input = grad_out @ W)
  "NT"  A @ B^T    (forward: x @ W^T, W stored [out, in])
  "TN"  A^T @ B    (grad_weight = grad_out^T @ x)

`python -m pynn.bench.cases.gemm` prints GFLOP/s for pynn, torch and numpy (OpenBLAS, run in a
child process with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset so it picks its own kernel) and
pynn's fraction of the OpenBLAS rate, which serves as the machine's measured GEMM ceiling.
"""
from __future__ import annotations

import torch

from .. import case as _case
from ..case import Case

SQUARE = [(2048, 2048, 2048)]
SKINNY = [(32, 1024, 256), (32, 4096, 1024), (256, 2048, 2048)]
LAYOUTS = ["NN", "NT", "TN"]


def _operands(m, n, k, layout, device, dtype):
    a = torch.randn(k, m, device=device, dtype=dtype).t() if layout[0] == "T" else \
        torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(n, k, device=device, dtype=dtype).t() if layout[1] == "T" else \
        torch.randn(k, n, device=device, dtype=dtype)
    return a, b


def _make(m, n, k, layout):
    def make(device, dtype):
        from ... import _backend as B

        a, b = _operands(m, n, k, layout, device, dtype)
        c = torch.empty(m, n, device=device, dtype=dtype)
        c_ref = torch.empty(m, n, device=device, dtype=dtype)

        def ours():
            B.launch("matmul", a, B.view(a), B.view(b), B.view(c), 1.0, 0.0)

        def ref():
            torch.matmul(a, b, out=c_ref)

        return ours, ref

    return make


def _shapes():
    for m, n, k in SQUARE:
        yield m, n, k, "NN", False
    for m, n, k in SKINNY:
        for layout in LAYOUTS:
            yield m, n, k, layout, (m, n, k) == (32, 1024, 256)


def cases():
    return [Case(group="gemm", name=f"{m}x{n}x{k}_{layout}", mode="forward",
                 make=_make(m, n, k, layout), flops=2.0 * m * n * k,
                 bytes=4.0 * (m * k + k * n + m * n), quick=quick, tags=("cpu-ceiling",))
            for m, n, k, layout, quick in _shapes()]


# ---- standalone report -----------------------------------------------------------------------

_NUMPY_CHILD = r"""
import json, statistics, sys, time
import numpy as np
shapes, dtype, repeats = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
out = {}
for m, n, k, layout in shapes:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if layout[0] == "T" else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if layout[1] == "T" else (k, n)).astype(dtype)
    a = a.T if layout[0] == "T" else a
    b = b.T if layout[1] == "T" else b
    c = np.empty((m, n), dtype=dtype)
    np.matmul(a, b, out=c); np.matmul(a, b, out=c)
    t0 = time.perf_counter(); np.matmul(a, b, out=c)
    inner = max(1, int(0.05 / max(time.perf_counter() - t0, 1e-7)))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            np.matmul(a, b, out=c)
        samples.append((time.perf_counter() - t0) / inner)
    out[f"{m}x{n}x{k}_{layout}"] = [statistics.median(samples), min(samples)]
print(json.dumps(out))
"""


def _numpy_times(shapes, dtype, threads, repeats):
    """{name: (median_s, best_s)} for numpy/OpenBLAS, in a child process with a clean OpenBLAS
    environment; {} when numpy is missing."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, "-c", _NUMPY_CHILD, json.dumps(shapes), dtype,
                           str(repeats)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"numpy reference failed: {proc.stderr.strip().splitlines()[-1:]}")
        return {}
    return json.loads(proc.stdout)


def main(argv=None):
    import argparse
    import statistics

    p = argparse.ArgumentParser(prog="python -m pynn.bench.cases.gemm")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--only", default=None, help="substring of the case name, e.g. 32x4096")
    p.add_argument("--no-numpy", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    selected = [c for c in cases() if args.only is None or args.only in c.name]
    shapes = [[int(x) for x in c.name.split("_")[0].split("x")] + [c.name.split("_")[1]]
              for c in selected]
    ref = {} if args.no_numpy else _numpy_times(shapes, args.dtype, args.threads, args.repeats)
    print(f"{args.dtype}, {args.threads} threads, median of {args.repeats} (best in brackets); "
          "GFLOP/s")
    print(f"{'shape':22s} {'pynn':>16s} {'torch':>16s} {'numpy':>16s} {'pynn/numpy':>10s}")
    for c in selected:
        ours, theirs = c.make("cpu", dtype)
        samples = {"pynn": [], "torch": []}
        for _ in range(args.repeats):
            (tp, _), (tt, _) = _case.time_pair(ours, theirs, "cpu", warmup=1, repeats=1)
            samples["pynn"].append(tp)
            samples["torch"].append(tt)

        def fmt(ts):
            return f"{c.flops / ts[0] / 1e9:7.1f} ({c.flops / ts[1] / 1e9:6.1f})"

        row = {k: (statistics.median(v), min(v)) for k, v in samples.items()}
        np_t = ref.get(c.name)
        ratio = f"{np_t[0] / row['pynn'][0]:10.2f}" if np_t else f"{'-':>10s}"
        print(f"{c.name:22s} {fmt(row['pynn']):>16s} {fmt(row['torch']):>16s} "
              f"{fmt(np_t) if np_t else '-':>16s} {ratio}")


if __name__ == "__main__":
    main()
