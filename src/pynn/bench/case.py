"""What a benchmark is: one Case per (op, shape, mode), comparing pynn with torch on the same inputs.

Case files live in pynn/bench/cases/<family>.py and expose `cases() -> list[Case]`. The runner
(runner.py) times them; whole networks use the helpers in network.py.
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
    # Bytes that must cross memory per iteration (each input read once, each output written
    # once), counted for float32: the runner scales the number by itemsize / 4 for other dtypes.
    # A callable bytes(dtype) -> float is taken as exact (use it when int64 indices etc. are moved).
    bytes: float | Callable = 0.0
    quick: bool = False         # part of --quick
    tags: tuple = field(default_factory=tuple)
    # The runner calls make() several times and cycles through the copies so that a case whose
    # data would fit in the last-level cache is not timed from that cache. Set False when one
    # state is the honest setting (a training loop reuses its weights) or make() is expensive.
    rotate: bool = True

    @property
    def id(self) -> str:
        return f"{self.group}/{self.name}/{self.mode}"

    def bytes_for(self, dtype) -> float:
        if callable(self.bytes):
            return float(self.bytes(dtype))
        itemsize = getattr(dtype, "itemsize", 4)
        return float(self.bytes) * itemsize / 4


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
