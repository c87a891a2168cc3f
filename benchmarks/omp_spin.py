"""How much do torch's spinning OpenMP workers take from pynn's pool?

    PYTHONPATH=src python benchmarks/omp_spin.py [--calls 100]
    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/omp_spin.py   # workers sleep at once

After a parallel region, torch's OpenMP workers spin-wait for the next one (libgomp's default
wait policy) on the cores pynn's pool is about to use. A training step interleaves pynn kernels
with torch's small parallel ops (optimizer updates, gradient fills), so each pynn kernel may
start on a machine whose other cores are busy spinning. This times LeNet-5's second convolution
(forward + weight gradient, a few hundred microseconds of work) in loops of identical
iterations, with and without a parallel torch op (an in-place multiply of 128K floats) before
each call, for pynn and for torch. benchmarks/threads.py alternates its variants call by call,
which hides this: there, a spin that outlasts one call also reaches the "back to back" baseline.
Each number is the best of 7 loops of --calls iterations.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as TF

import pynn.functional as F


def best_us(fn, calls: int) -> float:
    for _ in range(10):
        fn()
    best = float("inf")
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    x, g = torch.randn(64, 6, 14, 14), torch.ones(64, 16, 10, 10)
    w = torch.randn(16, 6, 5, 5, requires_grad=True)
    other = torch.randn(1 << 17)

    def step(conv, torch_op_first):
        def run():
            if torch_op_first:
                other.mul_(1.0)
            conv(x, w).backward(g)
        return run

    alone = best_us(lambda: other.mul_(1.0), args.calls)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"the torch op alone: {alone:.0f} us\n")
    print("| conv 6->16 5x5, 64x6x14x14, fwd + grad_w | alone (us) | after a torch op (us) | "
          "added beyond the op |")
    print("| --- | ---: | ---: | ---: |")
    for name, conv in (("pynn", F.conv2d), ("torch", TF.conv2d)):
        a, b = best_us(step(conv, False), args.calls), best_us(step(conv, True), args.calls)
        print(f"| {name} | {a:.0f} | {b:.0f} | {(b - alone - a) / a:+.0%} |")


if __name__ == "__main__":
    main()
