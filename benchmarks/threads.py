"""Do pynn's CPU pool and torch's intra-op (OpenMP) pool get in each other's way?

    PYTHONPATH=src python benchmarks/threads.py [--reps 300]

1. A torch op timed alone (back to back), and timed right after each of: a pynn op using the
   pool, the same pynn op with the pool pinned to 1 thread (no pynn worker involved), and an
   idle gap (time.sleep) of about the pynn op's length. If pynn's workers spun after their
   work, torch would lose cycles after the first and not after the other two; a slowdown that
   the idle gap shows as well comes from torch's own threads having gone to sleep.
2. The reverse: a pynn op alone and right after a torch op or an idle gap (OpenMP workers may
   spin-wait after a region, OMP_WAIT_POLICY / KMP_BLOCKTIME, and take cycles from us). For
   kernels shorter than that spin, alternating call by call hides it (the spin reaches the
   back-to-back baseline too): benchmarks/omp_spin.py measures that case in loops.
3. pynn's pool follows torch.set_num_threads (synced before every CPU launch):
   pynn.get_num_threads() and the time of a pynn linear at 1 thread and torch's default.

Variants are measured round-robin (one call of each per round) so that load changes on a shared
machine hit all of them alike; each number is the median of --reps individually timed calls.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import pynn
import pynn.functional as F
from pynn import _backend as B


def _single_threaded_pynn(fn):
    """fn run with pynn's pool pinned to one thread, then following torch again."""
    def run():
        pynn.set_num_threads(1)
        try:
            fn()
        finally:
            B._user_threads = None  # back to following torch.get_num_threads()
            B._synced_threads = -1
    return run


def _round_robin(op, befores: dict, reps: int) -> dict:
    """Median seconds of op() after each `before` (None: op back to back)."""
    samples = {k: [] for k in befores}
    for _ in range(reps):
        for name, before in befores.items():
            if before is None:
                op()  # the previous call is this same op
            else:
                before()
            t0 = time.perf_counter()
            op()
            samples[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=300)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    default_threads = torch.get_num_threads()

    a, b = torch.randn(256, 256), torch.randn(256, 256)
    big = torch.randn(1 << 20)
    w, bias = torch.randn(256, 256), torch.randn(256)
    torch_ops = {"torch.mm 256^3": lambda: torch.mm(a, b),
                 "torch.tanh 1M": lambda: torch.tanh(big)}
    pynn_ops = {"pynn linear 256^3": lambda: F.linear(a, w, bias),
                "pynn relu 1M": lambda: F.relu(big)}
    for fn in [*torch_ops.values(), *pynn_ops.values()]:
        for _ in range(5):
            fn()  # warm up: pools started, buffers allocated
    gap = statistics.median(
        [(lambda t0: (pynn_ops["pynn linear 256^3"](), time.perf_counter() - t0)[1])(
            time.perf_counter()) for _ in range(20)])

    print(f"torch {torch.__version__}, torch threads {default_threads}, pynn threads "
          f"{pynn.get_num_threads()}, reps {args.reps}, idle gap {gap * 1e3:.2f} ms\n")
    print("| timed op | right after | median (us) | vs back to back |")
    print("| --- | --- | ---: | ---: |")

    def report(tname, res):
        base = res["itself (back to back)"]
        for k, v in res.items():
            print(f"| {tname} | {k} | {v * 1e6:.1f} | {v / base:.2f} |")

    for tname, tfn in torch_ops.items():
        befores = {"itself (back to back)": None}
        for pname, pfn in pynn_ops.items():
            befores[pname] = pfn
            befores[pname + ", 1 thread"] = _single_threaded_pynn(pfn)
        befores["idle gap"] = lambda: time.sleep(gap)
        report(tname, _round_robin(tfn, befores, args.reps))
    for pname, pfn in pynn_ops.items():
        befores = {"itself (back to back)": None, **torch_ops, "idle gap": lambda: time.sleep(gap)}
        report(pname, _round_robin(pfn, befores, args.reps))

    print("\n| torch.set_num_threads | pynn.get_num_threads after a pynn call | "
          "pynn linear 512^3 (ms) |")
    print("| ---: | ---: | ---: |")
    x, w2, b2 = torch.randn(512, 512), torch.randn(512, 512), torch.randn(512)
    try:
        for n in sorted({1, default_threads}):
            torch.set_num_threads(n)
            F.linear(x, w2, b2)
            got = pynn.get_num_threads()
            t = statistics.median(_round_robin(lambda: F.linear(x, w2, b2),
                                               {"self": None}, max(10, args.reps // 10)).values())
            print(f"| {n} | {got} | {t * 1e3:.2f} |")
    finally:
        torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
