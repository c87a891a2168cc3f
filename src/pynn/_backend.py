"""The seam between torch and the compiled core.

Tensors cross as views (see csrc/core/pybind_view.h): pointer, shape, strides, dtype code, device.
Outputs and workspaces are allocated here with torch, so the core never allocates device memory
and torch's caching allocator stays in charge. CUDA kernels run on torch's current stream.
"""
from __future__ import annotations

import contextlib
import math
import threading

import torch

try:
    from . import _C
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "pynn's compiled core (pynn._C) is missing: install with `pip install .` "
        "or build in place with tools/dev_build.sh"
    ) from exc

_DTYPE_CODES = {
    torch.float32: 0,
    torch.float64: 1,
    torch.float16: 2,
    torch.bfloat16: 3,
    torch.int64: 4,
    torch.int32: 5,
    torch.uint8: 6,
    torch.bool: 7,
}
MAX_DIMS = 8
FLOATING = (torch.float32, torch.float64)

_user_threads: int | None = None
_synced_threads = -1


def view(t: torch.Tensor) -> tuple:
    """The tuple the core reads as a TensorView."""
    shape = t.shape  # a torch.Size is a tuple: the core reads it as one
    if len(shape) > MAX_DIMS:
        raise ValueError(f"pynn supports tensors of at most {MAX_DIMS} dims, got {len(shape)}")
    # is_cpu / is_cuda are plain flags; t.device builds a device object (about 0.3 us a view)
    if t.is_cpu:
        kind, index = 0, 0
    elif t.is_cuda:
        kind, index = 1, t.get_device()
    else:
        raise RuntimeError(f"pynn runs on cpu and cuda tensors, got a tensor on {t.device.type}")
    return (t.data_ptr(), shape, t.stride(), _DTYPE_CODES.get(t.dtype, -1), kind, index)


class _ForwardOnly:
    """Stands in for autograd's ctx when a Function's forward runs outside autograd (see apply):
    what it saves for a backward that will never run is dropped."""

    def __init__(self, n_inputs: int):
        self.needs_input_grad = (False,) * n_inputs

    def save_for_backward(self, *tensors):
        pass

    def mark_dirty(self, *tensors):
        pass

    def mark_non_differentiable(self, *tensors):
        pass

    def set_materialize_grads(self, value):
        pass


def _requires_grad(args) -> bool:
    for a in args:
        if isinstance(a, torch.Tensor):
            if a.requires_grad:
                return True
        elif isinstance(a, (tuple, list)) and _requires_grad(a):
            return True
    return False


def apply(function, *args):
    """function.apply(*args), or, when no gradient can flow (grad mode off or no input requiring
    grad), its forward called directly: the same kernels and outputs without autograd's
    per-call bookkeeping, which costs more than a small kernel (about 4 us of a 10 us relu)."""
    if torch.is_grad_enabled() and _requires_grad(args):
        return function.apply(*args)
    return function.forward(_ForwardOnly(len(args)), *args)


def cuda_built() -> bool:
    return bool(_C.cuda_built)


def cuda_available() -> bool:
    """True when the CUDA kernels were built and a GPU is usable."""
    return bool(_C.cuda_built) and _C.cuda_device_count() > 0


def set_num_threads(n: int) -> None:
    """Pins pynn's CPU pool to n threads (otherwise it follows torch.get_num_threads())."""
    global _user_threads
    if int(n) < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _user_threads = int(n)
    _C.set_num_threads(_user_threads)


def get_num_threads() -> int:
    return _C.get_num_threads()


def _sync_threads() -> None:
    global _synced_threads
    if _user_threads is None:
        n = torch.get_num_threads()
        if n != _synced_threads:
            _C.set_num_threads(n)
            _synced_threads = n


_KERNELS: dict[tuple[str, bool], object] = {}


def _kernel(name: str, cuda: bool):
    fn = getattr(_C, name + ("_cuda" if cuda else "_cpu"), None)
    if fn is None:
        if cuda:
            raise RuntimeError(
                f"{name}: got a CUDA tensor but pynn was built without CUDA kernels; "
                "reinstall with a CUDA compiler on PATH (PYNN_CUDA=1 makes that required)"
            )
        raise AttributeError(f"pynn._C has no kernel {name}_cpu")
    _KERNELS[name, cuda] = fn
    return fn


def launch(name: str, ref: torch.Tensor, *args):
    """Runs kernel `name` for ref's device: NAME_cpu(*args) or NAME_cuda(*args, stream)."""
    cuda = ref.is_cuda
    fn = _KERNELS.get((name, cuda)) or _kernel(name, cuda)
    if cuda:
        return fn(*args, torch.cuda.current_stream(ref.device).cuda_stream)
    _sync_threads()
    return fn(*args)


# ---- transient CPU workspaces ----

# Bytes of CPU scratch a thread keeps between calls (see scratch); larger requests are allocated
# and freed per call as before.
SCRATCH_KEEP_BYTES = 64 << 20
_SCRATCH_ALIGN = 64


class _Scratch(threading.local):
    def __init__(self):
        self.buffer: torch.Tensor | None = None  # uint8, SCRATCH_KEEP_BYTES at most
        self.busy = False


_scratch = _Scratch()


@contextlib.contextmanager
def scratch(ref: torch.Tensor, *shapes):
    """Workspaces of ref's dtype and device, one per shape (None gives None), valid only inside
    the with block: nothing may read or return them after it.

    On the CPU they are slices of a grow-only buffer the calling thread keeps (up to
    SCRATCH_KEEP_BYTES). torch has no caching allocator there, so a fresh multi-MB workspace per
    call comes from glibc, which returns the top of its heap to the kernel when such a block is
    freed and faults every page back in on the next call: an LSTM inference loop (T100 x B32 x
    H256) measured about 3,600 page faults and 30% more time per call that way in most fresh
    processes, torch's own LSTM none. CUDA tensors, a nested use on the same thread and requests
    past the cap get ordinary torch allocations."""
    sizes = [0 if s is None else math.prod(s) * ref.element_size() for s in shapes]
    offsets, total = [], 0
    for n in sizes:
        offsets.append(total)
        total += -(-n // _SCRATCH_ALIGN) * _SCRATCH_ALIGN
    state = _scratch
    if not ref.is_cpu or state.busy or total > SCRATCH_KEEP_BYTES:
        yield [None if s is None else ref.new_empty(s) for s in shapes]
        return
    buf = state.buffer
    if buf is None or buf.numel() < total + _SCRATCH_ALIGN:
        state.buffer = None  # the old buffer goes before the new one comes
        buf = state.buffer = torch.empty(total + _SCRATCH_ALIGN, dtype=torch.uint8)
    base = -buf.data_ptr() % _SCRATCH_ALIGN
    out = []
    for s, n, off in zip(shapes, sizes, offsets):
        if s is None:
            out.append(None)
        else:
            out.append(buf[base + off:base + off + n].view(ref.dtype).view(s))
    state.busy = True
    try:
        yield out
    finally:
        state.busy = False


# ---- argument checks with torch-like messages that name the argument ----

def check_tensor(t, op: str, arg: str, *, floating: bool = True, dims=None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {arg} must be a Tensor, got {type(t).__name__}")
    if floating and t.dtype not in FLOATING:
        raise TypeError(f"{op}: {arg} must be float32 or float64, got {t.dtype}")
    if not (t.is_cpu or t.is_cuda):  # flags: t.device builds an object (~0.3 us)
        raise RuntimeError(f"{op}: {arg} is on {t.device}; pynn runs on cpu and cuda")
    if dims is not None and t.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{op}: {arg} must be {want}, got {t.dim()}-D with shape {tuple(t.shape)}")


def same_place(a: torch.Tensor, b: torch.Tensor) -> bool:
    """a and b on the same CPU or GPU, from flags (t.device builds an object, ~0.3 us). False
    for anything else, e.g. two meta tensors: callers then take their full check."""
    return (a.is_cpu and b.is_cpu) or (a.is_cuda and b.is_cuda
                                       and a.get_device() == b.get_device())


def check_same(op: str, **tensors) -> None:
    """All given (non-None) tensors share the first one's device and dtype."""
    items = [(k, v) for k, v in tensors.items() if v is not None]
    if not items:
        return
    name0, t0 = items[0]
    for name, t in items[1:]:
        if t.dtype == t0.dtype and same_place(t, t0):
            continue
        if t.device != t0.device:
            raise RuntimeError(
                f"{op}: expected all tensors on one device, but {name0} is on {t0.device} "
                f"and {name} is on {t.device}"
            )
        if t.dtype != t0.dtype:
            raise TypeError(f"{op}: {name0} is {t0.dtype} but {name} is {t.dtype}; they must match")


def dense_pair(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(t or a dense copy of it, an empty output with the same strides), for elementwise ops.

    empty_like keeps the strides of a dense tensor (channels_last included), so the kernel can
    walk both buffers flat; anything else is made contiguous first.
    """
    if t.is_contiguous():
        return t, torch.empty_like(t, memory_format=torch.contiguous_format)
    out = torch.empty_like(t)
    if out.stride() != t.stride():
        t = t.contiguous()
        out = torch.empty_like(t)
    return t, out


def like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """t laid out with ref's strides (a copy only when they differ, e.g. an expanded grad)."""
    if t.stride() == ref.stride() and t.shape == ref.shape:
        return t
    out = torch.empty_like(ref)
    out.copy_(t)
    return out
