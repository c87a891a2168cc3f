"""Runs a list of Cases on one device and dtype and turns each into a result row.

A case that fails (op missing on that device, bad shape, a kernel error) becomes a row with
status "error" and the message; the run goes on.
"""
from __future__ import annotations

import fnmatch
import gc
import math
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch

from .. import _backend
from .case import Case
from .machine import Ceilings, describe, last_level_cache_bytes, measure_ceilings, sync, tf32
from .timing import Contestant, max_abs_diff, peak_memory_mib, time_contestants

# Columns of results.csv, in order. Times are milliseconds per call (median of the samples);
# spreads are (max - min) / median; speedup = torch_ms / pynn_ms (> 1: pynn is faster).
COLUMNS = [
    "case", "group", "name", "mode", "device", "dtype", "status", "error",
    "pynn_ms", "pynn_spread", "torch_ms", "torch_spread", "speedup",
    "torch_tf32_ms", "torch_tf32_spread", "speedup_tf32",
    "flops", "bytes", "intensity",
    "pynn_gbps", "pynn_gflops", "torch_gbps", "torch_gflops",
    "pynn_frac_copy_bw", "pynn_frac_gemm", "pynn_frac_roofline", "torch_frac_roofline",
    "pynn_peak_mib", "torch_peak_mib", "max_abs_diff", "copies", "inner", "repeats",
    "core_rt_ns",
]

# Quick: CI-sized (a few seconds per case at most). Full: the committed results.
PRESETS = {
    "quick": dict(repeats=5, warmup=1, min_time=0.01, budget=1.0, gemm_size=1024, copy_mb=64),
    "full": dict(repeats=15, warmup=3, min_time=0.05, budget=10.0, gemm_size=2048, copy_mb=256),
}
CUDA_SIZES = {"quick": dict(gemm_size=4096, copy_mb=1024), "full": dict(gemm_size=8192, copy_mb=2048)}


@dataclass
class Settings:
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    quick: bool = False
    repeats: int | None = None
    warmup: int | None = None
    min_time: float | None = None
    budget: float | None = None          # seconds of timing per case (fewer repeats if slower)
    time_limit: float | None = None      # seconds for the whole run; later cases are skipped
    gemm_size: int | None = None
    copy_mb: int | None = None
    max_copies: int = 8
    ceilings: bool = True

    def resolved(self, key: str):
        value = getattr(self, key)
        if value is not None:
            return value
        preset = "quick" if self.quick else "full"
        if self.device == "cuda" and key in CUDA_SIZES[preset]:
            return CUDA_SIZES[preset][key]
        return PRESETS[preset][key]


@dataclass
class RunResult:
    rows: list
    machine: dict
    ceilings: Ceilings
    settings: Settings
    seconds: float
    notes: list = field(default_factory=list)


def select(cases: Iterable[Case], quick: bool = False, only: str | None = None) -> list[Case]:
    """Cases in --quick (if asked) whose id matches any comma-separated glob or substring."""
    patterns = [p.strip() for p in (only or "").split(",") if p.strip()]
    out = []
    for case in cases:
        if quick and not case.quick:
            continue
        if patterns and not any(fnmatch.fnmatch(case.id, p) or p in case.id for p in patterns):
            continue
        out.append(case)
    return out


def copies_for(nbytes: float, cache_bytes: int, max_copies: int, memory_cap: float) -> int:
    """Input copies so that cycling through them streams past the last-level cache."""
    if nbytes <= 0:
        return 1
    k = min(max_copies, max(1, math.ceil(2 * cache_bytes / nbytes)))
    return max(1, min(k, int(memory_cap // nbytes)))


def _fmt_dtype(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _base_row(case: Case, s: Settings) -> dict:
    row = {k: "" for k in COLUMNS}
    row.update(case=case.id, group=case.group, name=case.name, mode=case.mode, device=s.device,
               dtype=_fmt_dtype(s.dtype), status="ok")
    return row


def _metrics(row: dict, case: Case, s: Settings, ceil: Ceilings) -> None:
    flops, nbytes = float(case.flops or 0), case.bytes_for(s.dtype)
    row["flops"], row["bytes"] = flops, nbytes
    row["intensity"] = flops / nbytes if flops > 0 and nbytes > 0 else math.nan
    # NaN where a count is missing or no ceiling was measured: such rows get no rate or fraction
    roof = ceil.attainable(row["intensity"])
    for who in ("pynn", "torch"):
        secs = row[f"{who}_ms"] / 1e3
        row[f"{who}_gbps"] = nbytes / secs / 1e9 if nbytes > 0 else math.nan
        row[f"{who}_gflops"] = flops / secs / 1e9 if flops > 0 else math.nan
        row[f"{who}_frac_roofline"] = row[f"{who}_gflops"] / roof if roof > 0 else math.nan
    row["pynn_frac_copy_bw"] = row["pynn_gbps"] / ceil.copy_gbps
    row["pynn_frac_gemm"] = row["pynn_gflops"] / ceil.gemm_gflops


def run_case(case: Case, s: Settings, ceil: Ceilings, cache_bytes: int) -> dict:
    row = _base_row(case, s)
    repeats, warmup = s.resolved("repeats"), s.resolved("warmup")
    min_time, budget = s.resolved("min_time"), s.resolved("budget")
    nbytes = case.bytes_for(s.dtype)
    if s.device == "cuda":
        cap = torch.cuda.mem_get_info()[0] / 4
    else:
        cap = 2 * 2**30
    k = copies_for(nbytes, cache_bytes, s.max_copies, cap) if case.rotate else 1
    pairs = [case.make(s.device, s.dtype) for _ in range(k)]
    pynn_fns, torch_fns = [p[0] for p in pairs], [p[1] for p in pairs]
    # torch in strict float32 is the like-for-like baseline (pynn's kernels compute in float32);
    # torch with TF32 is timed as a third contestant on the same callables.
    strict = (lambda: tf32(False)) if s.device == "cuda" else nullcontext
    # Same inputs on both sides: one call each on copy 0 doubles as the sanity check.
    with strict():
        diff = max_abs_diff(pynn_fns[0](), torch_fns[0]())
    contestants = [Contestant("pynn", pynn_fns, strict), Contestant("torch", torch_fns, strict)]
    tf32_applies = s.device == "cuda" and s.dtype == torch.float32
    if tf32_applies:
        contestants.append(Contestant("torch_tf32", torch_fns, lambda: tf32(True)))
    timings = time_contestants(contestants, s.device, warmup=warmup, repeats=repeats,
                               min_time=min_time, budget=budget)
    for name, t in timings.items():
        row[f"{name}_ms"] = t.median * 1e3
        row[f"{name}_spread"] = t.spread
    row["speedup"] = row["torch_ms"] / row["pynn_ms"]
    if tf32_applies:
        row["speedup_tf32"] = row["torch_tf32_ms"] / row["pynn_ms"]
    row["max_abs_diff"] = diff
    row["copies"], row["inner"] = k, timings["pynn"].inner
    row["repeats"] = len(timings["pynn"].samples)
    _metrics(row, case, s, ceil)
    if s.device == "cuda":
        row["pynn_peak_mib"] = peak_memory_mib(pynn_fns[0], s.device, strict)
        row["torch_peak_mib"] = peak_memory_mib(torch_fns[0], s.device, strict)
    return row


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    loc = f" [{where.filename.rsplit('/', 1)[-1]}:{where.lineno}]" if where else ""
    return f"{type(exc).__name__}: {msg[:300]}{loc}"


def _log_row(row: dict, log: Callable) -> None:
    if row["status"] != "ok":
        log(f"{row['case']:58s} {row['status'].upper()}: {row['error']}")
        return
    line = (f"{row['case']:58s} pynn {row['pynn_ms']:9.4f} ms ±{100 * row['pynn_spread']:3.0f}%"
            f"  torch {row['torch_ms']:9.4f} ms ±{100 * row['torch_spread']:3.0f}%"
            f"  speedup {row['speedup']:6.2f}x")
    if row["speedup_tf32"] != "":
        line += f"  (vs TF32 {row['speedup_tf32']:6.2f}x)"
    log(line)


def run(cases: Sequence[Case], settings: Settings, log: Callable = print) -> RunResult:
    s = settings
    if s.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch sees no CUDA GPU here")
    t_start = time.monotonic()
    machine = describe(s.device)
    notes = []
    if s.ceilings:
        log(f"measuring ceilings on {s.device} ({_fmt_dtype(s.dtype)}) ...")
        ceil = measure_ceilings(s.device, s.dtype, s.resolved("gemm_size"), s.resolved("copy_mb"))
        log(f"  copy {ceil.copy_gbps:.1f} GB/s; GEMM {ceil.gemm_gflops:.1f} GFLOP/s "
            f"({ceil.gemm_source})" + (f"; TF32 GEMM {ceil.gemm_tf32_gflops:.1f} GFLOP/s"
                                       if ceil.gemm_tf32_gflops == ceil.gemm_tf32_gflops else ""))
        if "pynn_gemm_error" in ceil.detail:
            notes.append(f"pynn GEMM failed while measuring the ceiling: "
                         f"{ceil.detail['pynn_gemm_error']}")
    else:
        ceil = Ceilings()
        notes.append("ceilings not measured (--no-ceilings): fractions are empty")
    cache = last_level_cache_bytes(s.device)
    torch.manual_seed(0)
    rows = []
    for case in cases:
        if s.time_limit is not None and time.monotonic() - t_start > s.time_limit:
            row = _base_row(case, s)
            row.update(status="skipped", error=f"time limit of {s.time_limit:g} s reached")
        else:
            # Measured before each case: where a virtual machine's CPUs sit on the host can change
            # during a run, and kernels that exchange data between threads at every step (RNN
            # time loops) slow down when this round trip grows (see pynn._C.core_round_trip_ns).
            rt = _backend._C.core_round_trip_ns(20000) if s.device == "cpu" else math.nan
            try:
                row = run_case(case, s, ceil, cache)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - one failing case must not end the run
                row = _base_row(case, s)
                row.update(status="error", error=_one_line(exc))
            finally:
                gc.collect()
                if s.device == "cuda":
                    try:
                        sync(s.device)
                        torch.cuda.empty_cache()
                    except Exception:  # a sticky CUDA error shows up in the next rows too
                        pass
            row["core_rt_ns"] = rt
        rows.append(row)
        _log_row(row, log)
    if s.device == "cpu":
        notes.append("peak memory is not reported on CPU: no allocator statistic gives a per-call "
                     "peak there, and ru_maxrss is a process-lifetime high-water mark")
    return RunResult(rows, machine, ceil, s, time.monotonic() - t_start, notes)
