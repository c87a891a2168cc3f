"""What an LSTMCell step loop costs before any cell does its math, and what is left for the cell.

    PYTHONPATH=src python benchmarks/cell_floor.py                  # both sizes, 7 rounds
    PYTHONPATH=src python benchmarks/cell_floor.py --rounds 11 --threads 2

The benchmark's `lstm_cell_loop` cases (pynn/bench/cases/rnn.py) drive a cell from Python for
T steps, as a decoder does: per step `cell(x[t], (h, c))`, and with autograd also
`total = total + h.sum()`, then one `total.backward()`. Part of that time is not the cell's:
selecting x[t], the sum and add, autograd's graph and engine, the gradient of x[t] (a zero
tensor of x's full shape per step, summed into x.grad) and the sum of the T weight gradients
that autograd forms for every parameter a step used. Any cell written as a torch module or an
autograd Function pays all of it.

This times the same loop with three cells, in rounds whose order turns:

- `floor`: a cell that does no math at all. Without autograd it returns two new [B, H] tensors;
  with autograd it is an autograd.Function over the same seven inputs whose backward returns a
  gradient for each (uninitialised, of the right shape), so autograd does all the work it does
  for a real cell.
- `pynn.nn.LSTMCell` and `torch.nn.LSTMCell`, on the same weights.

For a cell to run the loop in half of torch's time it must do its own work, the time above the
floor, in `torch / 2 - floor`. The table prints that budget beside pynn's own work and the
least time the loop's GEMM FLOPs take at this machine's GEMM ceiling (the faster of torch's and
pynn's GEMM on a 2048^3 square, as `python -m pynn.bench` measures it).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import pynn
from pynn.bench.machine import measure_ceilings


class NoMathCell(torch.autograd.Function):
    """An LSTM step's inputs and outputs with nothing computed: forward allocates h' and c',
    backward allocates one gradient per input, as the step's real backward must."""

    @staticmethod
    def forward(ctx, x, h, c, w_ih, w_hh, b_ih, b_hh):
        ctx.shapes = tuple(t.shape for t in (x, h, c, w_ih, w_hh, b_ih, b_hh))
        return x.new_empty(h.shape), x.new_empty(c.shape)

    @staticmethod
    def backward(ctx, grad_h, grad_c):
        return tuple(grad_h.new_empty(s) for s in ctx.shapes)


class FloorCell(torch.nn.Module):
    """A module with LSTMCell's call signature around NoMathCell."""

    def __init__(self, ref: torch.nn.LSTMCell):
        super().__init__()
        self.ref = ref

    def forward(self, x, hc):
        h, c = hc
        if not torch.is_grad_enabled():
            return x.new_empty(h.shape), x.new_empty(c.shape)
        r = self.ref
        return NoMathCell.apply(x, h, c, r.weight_ih, r.weight_hh, r.bias_ih, r.bias_hh)


def loop(cell, x, h0, backward: bool):
    """One pass of the benchmark's lstm_cell_loop over x [T, B, I]."""
    def run():
        h, c = h0, h0
        total = 0
        for t in range(x.shape[0]):
            h, c = cell(x[t], (h, c))
            if backward:
                total = total + h.sum()
        if backward:
            total.backward()

    if backward:
        return run

    def no_grad():
        with torch.no_grad():
            run()
    return no_grad


def make_cells(I: int, H: int):
    ref = torch.nn.LSTMCell(I, H)
    ours = pynn.nn.LSTMCell(I, H)
    ours.load_state_dict(ref.state_dict())
    return {"floor": FloorCell(torch.nn.LSTMCell(I, H)), "pynn": ours, "torch": ref}


def measure(T: int, B: int, I: int, H: int, backward: bool, rounds: int) -> dict:
    """Median ms per loop pass of each cell; each round times every cell once (best of 3
    passes), starting from a different one."""
    cells = make_cells(I, H)
    x = torch.randn(T, B, I, requires_grad=backward)
    h0 = torch.zeros(B, H)
    runs = {k: loop(cell, x, h0, backward) for k, cell in cells.items()}
    for run in runs.values():
        for _ in range(3):
            run()
    names = list(runs)
    times = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                runs[k]()
                best = min(best, time.perf_counter() - t0)
            times[k].append(best * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ceil = measure_ceilings("cpu", torch.float32, gemm_size=2048, copy_mb=64)
    peak = ceil.gemm_gflops
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; GEMM ceiling "
          f"({ceil.detail['gemm']}): {peak:.0f} GFLOP/s; {args.rounds} rounds, median ms per "
          f"loop of {args.steps} steps\n")
    print("| loop | autograd | floor | pynn | torch | torch / pynn | budget at 2x: torch/2 - floor "
          "| pynn's own work: pynn - floor | GEMM FLOPs at the GEMM rate |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    T = args.steps
    for B, I, H in ((32, 128, 256), (4, 32, 64)):
        for backward in (False, True):
            m = measure(T, B, I, H, backward, args.rounds)
            # Forward: x W_ih^T and h W_hh^T per step; backward: the input, state and weight
            # gradients of both, twice that.
            flops = 2 * T * B * 4 * H * (I + H) * (3 if backward else 1)
            bound = flops / (peak * 1e9) * 1e3
            print(f"| T{T} B{B} {I}->{H} | {'yes' if backward else 'no'} | {m['floor']:.2f} | "
                  f"{m['pynn']:.2f} | {m['torch']:.2f} | {m['torch'] / m['pynn']:.2f} | "
                  f"{m['torch'] / 2 - m['floor']:.2f} | {m['pynn'] - m['floor']:.2f} | "
                  f"{bound:.2f} |")


if __name__ == "__main__":
    main()
