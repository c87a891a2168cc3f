"""What the benchmarks ran on, and the two ceilings every result is measured against.

The ceilings are measured, not taken from a datasheet: a large tensor copy (bytes read plus bytes
written) bounds memory-bound ops, and the best of torch's and pynn's GEMM on a large square bounds
compute-bound ones. A fraction of these says how much room an op has left on this machine.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


# ---------------------------------------------------------------- synchronisation and TF32

def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _tf32_targets():
    """Where torch keeps its TF32 switches: the per-backend fp32_precision of torch >= 2.9
    (cuBLAS matmul, cuDNN conv, cuDNN RNN), or the two legacy allow_tf32 flags before it."""
    m, dnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(m, "fp32_precision"):
        return "fp32_precision", (m, dnn.conv, dnn.rnn)
    return "allow_tf32", (m, dnn)


def tf32_state() -> tuple:
    attr, targets = _tf32_targets()
    return tuple(getattr(t, attr) for t in targets)


@contextmanager
def tf32(enabled: bool):
    """torch's TF32 switches for float32 matmul (cuBLAS) and cuDNN set to `enabled`, restored after.

    pynn's own kernels ignore them. torch's defaults differ between the two (matmul off, cuDNN
    on), so the runner sets them explicitly rather than timing torch in a mixed default state.
    Newer torch raises when the legacy flags are read after the new API was used, so only one
    API is ever touched: the new one where it exists.
    """
    attr, targets = _tf32_targets()
    value = ("tf32" if enabled else "ieee") if attr == "fp32_precision" else bool(enabled)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.9+ may warn about the legacy flags
        old = [getattr(t, attr) for t in targets]
        for t in targets:
            setattr(t, attr, value)
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for t, v in zip(targets, old):
                setattr(t, attr, v)


# ---------------------------------------------------------------- machine description

def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def last_level_cache_bytes(device: str) -> int:
    """L2 of the GPU, or the largest CPU cache level (L3 of one core's complex on most x86)."""
    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return int(getattr(props, "L2_cache_size", 50 << 20))
    best = 0
    for idx in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            size = (idx / "size").read_text().strip()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        try:
            best = max(best, int(size.rstrip("KMG")) * mult)
        except ValueError:
            pass
    return best or (32 << 20)


def _git_commit() -> str:
    # A tree copied to another machine may carry a .git that is not its own history; whoever
    # copied it names the commit instead (tools/gpu_check.sh sets this from GPU_CHECK_COMMIT).
    given = os.environ.get("PYNN_SOURCE_COMMIT", "").strip()
    if given:
        return f"{given[:12]} (given by PYNN_SOURCE_COMMIT)"
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return ""
    head = _run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    if head and _run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"]):
        head += ", uncommitted changes"
    return head


def describe(device: str) -> dict:
    """Everything needed to tell two result files' machines apart, as strings."""
    import pynn
    from pynn import _backend as B

    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device,
        "cpu": cpu_model(),
        "cpu_cores": str(os.cpu_count()),
        "cpu_cores_usable": str(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity")
        else str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "pynn_threads": "",
        "pynn": pynn.__version__,
        "pynn_commit": _git_commit(),
        "pynn_cxx": getattr(B._C, "cxx_compiler", ""),
        "pynn_cuda_build": "",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }
    B._sync_threads()
    info["pynn_threads"] = str(pynn.get_num_threads())
    if B._C.cuda_built:
        info["pynn_cuda_build"] = f"{B._C.cuda_compiler}, archs {B._C.cuda_architectures}"
    if device == "cuda":
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info["gpu"] = props.name
        info["gpu_memory"] = f"{props.total_memory / 2**30:.1f} GiB"
        info["gpu_sms"] = str(props.multi_processor_count)
        info["gpu_compute_capability"] = f"{props.major}.{props.minor}"
        info["gpu_l2"] = f"{getattr(props, 'L2_cache_size', 0) / 2**20:.0f} MiB"
        driver = _run(["nvidia-smi", "-i", str(index), "--query-gpu=driver_version",
                       "--format=csv,noheader"])
        info["gpu_driver"] = driver.splitlines()[0] if driver else "unknown"
        info["torch_cuda"] = str(torch.version.cuda)
        info["cudnn"] = str(torch.backends.cudnn.version())
    return info


# ---------------------------------------------------------------- ceilings

@dataclass
class Ceilings:
    copy_gbps: float = float("nan")        # bytes read + written per second / 1e9
    gemm_gflops: float = float("nan")      # best of torch (strict fp32) and pynn
    gemm_source: str = ""                  # which one set gemm_gflops
    gemm_tf32_gflops: float = float("nan")  # torch with TF32, CUDA float32 only
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def attainable(self, intensity: float) -> float:
        """GFLOP/s the roofline allows at `intensity` FLOP/byte (strict-precision GEMM roof);
        NaN when the intensity or a ceiling is unknown."""
        vals = (intensity, self.gemm_gflops, self.copy_gbps)
        if any(v != v for v in vals):
            return float("nan")
        return min(self.gemm_gflops, intensity * self.copy_gbps)


def _best_seconds(fn, device: str, samples: int, budget: float) -> float:
    """Fastest of up to `samples` timed calls after one warm-up, stopping early past `budget` s."""
    fn()
    sync(device)
    best, spent = float("inf"), 0.0
    for _ in range(samples):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            t = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            fn()
            t = time.perf_counter() - t0
        best, spent = min(best, t), spent + t
        if spent > budget:
            break
    return best


def pynn_matmul(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """pynn's GEMM (csrc/cpu/gemm.h, csrc/cuda/gemm.cuh) through its raw binding."""
    from pynn import _backend as B

    B.launch("matmul", a, B.view(a), B.view(b), B.view(out), 1.0, 0.0)
    return out


def measure_ceilings(device: str, dtype: torch.dtype, gemm_size: int, copy_mb: int,
                     samples: int = 5, budget: float = 2.0) -> Ceilings:
    c = Ceilings()
    gen = torch.Generator(device=device).manual_seed(0)

    # Copy: a buffer well past the last-level cache, so this is DRAM/HBM, not cache, bandwidth.
    n = max(1, copy_mb * (1 << 20) // dtype.itemsize)
    src = torch.randn(n, device=device, dtype=dtype, generator=gen)
    dst = torch.empty_like(src)
    t = _best_seconds(lambda: dst.copy_(src), device, samples, budget)
    c.copy_gbps = 2 * n * dtype.itemsize / t / 1e9
    c.detail["copy"] = f"{copy_mb} MiB {str(dtype).replace('torch.', '')} copy, best of {samples}"
    del src, dst

    m = gemm_size
    a = torch.randn(m, m, device=device, dtype=dtype, generator=gen)
    b = torch.randn(m, m, device=device, dtype=dtype, generator=gen)
    out = torch.empty(m, m, device=device, dtype=dtype)
    flop = 2.0 * m * m * m
    rates = {}
    with tf32(False):
        rates["torch"] = flop / _best_seconds(lambda: torch.matmul(a, b, out=out), device,
                                               samples, budget) / 1e9
    try:
        rates["pynn"] = flop / _best_seconds(lambda: pynn_matmul(a, b, out), device,
                                              samples, budget) / 1e9
    except Exception as exc:  # a GEMM that fails must not hide every other result
        c.detail["pynn_gemm_error"] = f"{type(exc).__name__}: {exc}"
    if device == "cuda" and dtype == torch.float32:
        with tf32(True):
            c.gemm_tf32_gflops = flop / _best_seconds(lambda: torch.matmul(a, b, out=out), device,
                                                      samples, budget) / 1e9
    c.gemm_source = max(rates, key=rates.get)
    c.gemm_gflops = rates[c.gemm_source]
    c.detail["gemm"] = (f"{m}x{m}x{m} {str(dtype).replace('torch.', '')}: "
                        + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in rates.items()))
    del a, b, out
    if device == "cuda":
        torch.cuda.empty_cache()
    return c
