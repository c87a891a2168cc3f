"""What a benchmark is: one Case per (op, shape, mode), comparing pynn with torch on the same inputs.

Case files live in pynn/bench/cases/<family>.py and expose `cases() -> list[Case]`.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Case:
    group: str                  # op family or "network"
    name: str                   # shape description, unique within the group
    mode: str                   # "forward", "forward+backward", "train_step", "inference", ...
    # make(device, dtype) -> (pynn_fn, torch_fn): no-argument callables, one iteration each,
    # built on the same inputs. Called only when the case is selected.
    make: Callable
    flops: float = 0.0          # per iteration
    bytes: float = 0.0          # moved per iteration, at least once each
    quick: bool = False         # part of --quick
    tags: tuple = field(default_factory=tuple)

    @property
    def id(self) -> str:
        return f"{self.group}/{self.name}/{self.mode}"


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def time_pair(pynn_fn, torch_fn, device: str = "cpu", warmup: int = 2, repeats: int = 7,
              min_time: float = 0.05):
    """Median seconds per call of each, interleaved (pynn, torch, pynn, ...) after a warm-up.

    Each sample runs enough inner iterations to last at least `min_time`. Returns
    ((pynn_median, pynn_spread), (torch_median, torch_spread)) with spread = (max - min) / median.
    """
    for _ in range(warmup):
        pynn_fn()
        torch_fn()
    _sync(device)
    # calibrate the inner loop count on the slower of the two
    t0 = time.perf_counter()
    pynn_fn()
    torch_fn()
    _sync(device)
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_time / one))
    samples = {"pynn": [], "torch": []}
    for _ in range(repeats):
        for key, fn in (("pynn", pynn_fn), ("torch", torch_fn)):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            _sync(device)
            samples[key].append((time.perf_counter() - t0) / inner)

    def summary(xs):
        med = statistics.median(xs)
        return med, (max(xs) - min(xs)) / med if med > 0 else 0.0

    return summary(samples["pynn"]), summary(samples["torch"])
