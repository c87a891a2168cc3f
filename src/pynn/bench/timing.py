"""Timing several contestants on the same inputs, fairly.

- Interleaved: every repeat times each contestant once, and the starting contestant rotates from
  one repeat to the next, so drift (clock boost, thermal state, a noisy neighbour) lands on all.
- Warm-up first: allocator, lazy initialisation, cuBLAS handles and autograd graph caches are
  out of the numbers.
- Each sample runs `inner` calls, enough to last `min_time`, so timer resolution and, on CUDA,
  event overhead are negligible; the result is the median sample with its spread.
- Rotated inputs: a contestant is a list of equivalent callables built on separate input copies
  and the inner loop cycles through them, so a small case is not timed from a warm cache.
- CUDA: synchronise before each sample and time it with CUDA events on the current stream.
"""
from __future__ import annotations

import math
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .machine import sync


@dataclass
class Contestant:
    name: str
    fns: Sequence[Callable]                  # one per input copy
    context: Callable = nullcontext          # entered around every call (e.g. TF32 switches)
    _next: int = field(default=0, repr=False)

    def call_many(self, count: int) -> None:
        k = len(self.fns)
        with self.context():
            for _ in range(count):
                self.fns[self._next % k]()
                self._next += 1


@dataclass
class Timing:
    median: float          # seconds per call
    spread: float          # (max - min) / median over the samples
    samples: list
    inner: int


def _sample(c: Contestant, inner: int, device: str) -> float:
    """Seconds per call over `inner` calls."""
    sync(device)
    if device == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        c.call_many(inner)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / inner
    t0 = time.perf_counter()
    c.call_many(inner)
    return (time.perf_counter() - t0) / inner


def time_contestants(contestants: Sequence[Contestant], device: str = "cpu", *, warmup: int = 2,
                     repeats: int = 7, min_repeats: int = 3, min_time: float = 0.05,
                     budget: float = 10.0) -> dict[str, Timing]:
    """Median seconds per call of each contestant; see the module docstring for the method.

    `budget` (seconds) bounds the timed part of one case: slow cases get fewer repeats, never
    fewer than `min_repeats`.
    """
    for c in contestants:
        c.call_many(max(1, warmup) * len(c.fns))
    sync(device)
    one = {c.name: max(_sample(c, 1, device), 1e-9) for c in contestants}
    inner = {name: max(1, math.ceil(min_time / t)) for name, t in one.items()}
    per_repeat = sum(inner[n] * one[n] for n in one)
    repeats = max(min_repeats, min(repeats, int(budget / max(per_repeat, 1e-9))))
    samples: dict[str, list] = {c.name: [] for c in contestants}
    order = list(contestants)
    for r in range(repeats):
        for c in order[r % len(order):] + order[: r % len(order)]:
            samples[c.name].append(_sample(c, inner[c.name], device))
    out = {}
    for name, xs in samples.items():
        med = statistics.median(xs)
        out[name] = Timing(med, (max(xs) - min(xs)) / med if med > 0 else 0.0, xs, inner[name])
    return out


def peak_memory_mib(fn: Callable, device: str, context: Callable = nullcontext) -> float:
    """Memory one call allocates beyond what is already live (inputs, parameters), CUDA only.

    Temporaries, outputs and autograd buffers count; NaN on CPU, where no allocator statistic
    gives a per-call peak (ru_maxrss is a process-lifetime high-water mark).
    """
    if device != "cuda":
        return float("nan")
    sync(device)
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with context():
        out = fn()
    sync(device)
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak / 2**20


def _tensors(x) -> list:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for item in x for t in _tensors(item)]
    return []


def max_abs_diff(a, b) -> float:
    """Largest |a - b| over the tensors two calls returned; NaN when they can't be compared.

    A sanity check that a case times the same computation on both sides, not a parity test.
    """
    ta, tb = _tensors(a), _tensors(b)
    if not ta or len(ta) != len(tb):
        return float("nan")
    worst = 0.0
    for x, y in zip(ta, tb):
        if x.shape != y.shape:
            return float("nan")
        if x.numel():
            worst = max(worst, (x.detach().double() - y.detach().double()).abs().max().item())
    return worst
