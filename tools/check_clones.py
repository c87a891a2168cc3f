"""Checks the compiled CPU kernels for two slowdowns that no test sees: clones and register tiles.

    python tools/check_clones.py            build the CPU core with symbols, then check it
    python tools/check_clones.py --so PATH  check an already built, unstripped _C*.so

PYNN_CPU_MULTIVERSION (csrc/core/macros.h) compiles an entry point once per ISA
(target_clones: x86-64-v4 = AVX-512, x86-64-v3 = AVX2+FMA, baseline) and the loader picks one
by CPU. Only code inlined into a clone is compiled for its ISA: a helper the compiler leaves out
of line is a single baseline x86-64 copy that every clone calls, and the loop around it then runs
element by element. Nothing fails and the results are right; it only shows up as a slow
benchmark. It happened twice: the softmax and cross-entropy rows lost `flatten` in a refactor
(3.6x slower), and GCC left the LSTM gate math out of line in the no-bias loop (2.6x slower).

The check disassembles the library and lists every call from a clone to one of pynn's own
functions that is not itself a clone; calls into the standard library (through the PLT, or
inlined std:: templates such as a vector made once per call) are left alone. Fix a finding by
forcing the callee inline (PYNN_ALWAYS_INLINE, PYNN_HOST_DEVICE) or adding `flatten` to the
entry point, or by moving a cold call (an error path) out of the clone.

It also checks that the register-tile kernels of the GEMM (k512f_rows<8> and the like, gemm.cpp)
and of the blocked convolution (blocked_tile<R, all taps, step>, conv_blocked.cpp) keep their
accumulators in registers: unless GCC unrolls the loops over the tile completely it keeps
the tile as an array on the stack outside the k loop, zeroes it there and reads it back for C,
which cost 12% of the kernel's time in the LSTM step. Any full-width vector move between a ymm or
zmm register and the stack in one of them is a finding (a scalar spill of alpha is not). So are
more than MAX_STACK_LOADS loads of a general register from the stack: the in-place blocked tile
once kept the 128 addresses of its unrolled broadcasts there (107 such loads, 12% slower); the
kernels have at most 12.

Exits 1 on a finding, 0 otherwise (also where the build has no clones: not x86-64/GCC).

The build goes to build/check-clones with the library in build/check-clones/lib, so the in-place
build in src/pynn is left alone. It is a Release build, as pip's: pybind11 then links with LTO,
and under LTO GCC can allocate a kernel's registers differently (a 12 x 32 GEMM tile tried on
2026-11-28 kept its accumulators in registers in a RelWithDebInfo build and spilled a vector of
B in the Release one). -g gives it symbols (GCC's code does not depend on -g) and CMAKE_STRIP is
replaced so that pybind11's strip leaves them. It needs cmake, ninja, pybind11 and objdump.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "check-clones"
CLONE = re.compile(r"\[clone \.(arch_x86_64_v[34])")
FUNC = re.compile(r"^[0-9a-f]+ <(.*)>:$")
# A call, or a jmp (a tail call when it leaves the function), with its target's name.
CALL = re.compile(r"\s(call|jmp)\w*\s+[0-9a-f]+ <(.*)>\s*$")
OFFSET = re.compile(r"\+0x[0-9a-f]+$")
# The register-tile kernels (the GEMM's, packed and in-place A, and the blocked convolution's),
# and a vector move to or from the stack.
TILE_KERNEL = re.compile(
    r"::(?:[kr](?:512|256)[fd]_rows<\d+>|blocked_tile<\d+(?:, (?:true|false|\d+))+>)\(")
STACK_VECTOR = re.compile(r"\svmov\w*\s+(%[yz]mm\d+,\S*\(%r[sb]p\)|\S*\(%r[sb]p\),%[yz]mm\d+)")
STACK_LOAD = re.compile(r"\smov\w*\s+-?(?:0x[0-9a-f]+)?\(%r[sb]p\),%r\w+")
MAX_STACK_LOADS = 32


def build() -> Path:
    try:
        import pybind11
    except ImportError:
        sys.exit("check_clones: pybind11 is needed to build (pip install pybind11)")
    lib = BUILD / "lib"
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(BUILD), "-G", "Ninja",
                    "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_CXX_FLAGS=-g",
                    f"-DCMAKE_STRIP={shutil.which('true') or '/bin/true'}", "-DPYNN_CUDA=OFF",
                    f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={lib}",
                    f"-DPython_EXECUTABLE={sys.executable}",
                    f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(BUILD)], check=True, stdout=subprocess.DEVNULL)
    found = sorted(lib.glob("_C*.so"))
    if not found:
        sys.exit(f"check_clones: no _C*.so in {lib} after the build")
    return found[0]


def disassemble(so: Path) -> str:
    if shutil.which("objdump") is None:
        sys.exit("check_clones: objdump (binutils) is needed")
    return subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", str(so)], check=True,
                          capture_output=True, text=True).stdout


def tile_findings(dis: str) -> tuple[int, dict[str, str]]:
    """(tile kernels seen, {kernel: what it moves through the stack}): any vector move to or
    from the stack, or more than MAX_STACK_LOADS general-register loads from it."""
    vectors, loads, current = {}, {}, None
    for line in dis.splitlines():
        m = FUNC.match(line)
        if m:
            current = m.group(1) if TILE_KERNEL.search(m.group(1)) else None
            if current is not None:
                vectors[current] = loads[current] = 0
            continue
        if current is not None:
            vectors[current] += STACK_VECTOR.search(line) is not None
            loads[current] += STACK_LOAD.search(line) is not None
    bad = {}
    for kernel in vectors:
        what = []
        if vectors[kernel]:
            what.append(f"{vectors[kernel]} vector moves")
        if loads[kernel] > MAX_STACK_LOADS:
            what.append(f"{loads[kernel]} register loads")
        if what:
            bad[kernel] = ", ".join(what)
    return len(vectors), bad


def findings(dis: str) -> tuple[int, list[tuple[str, str]]]:
    """(clones seen, [(clone, callee)]) for calls and tail calls from a clone to a function of
    pynn's that is not a clone."""
    clones, bad, current = 0, [], None
    for line in dis.splitlines():
        m = FUNC.match(line)
        if m:
            current = OFFSET.sub("", m.group(1)) if CLONE.search(m.group(1)) else None
            clones += current is not None
            continue
        if current is None:
            continue
        c = CALL.search(line)
        if c is None:
            continue
        callee = OFFSET.sub("", c.group(2))
        if callee == current:
            continue  # a jump inside the function
        # pynn's own functions only: the standard library's (a std::vector made once per call)
        # are out of line by design and do no per-element work.
        if "pynn::" not in callee or callee.startswith("std::") or CLONE.search(callee):
            continue
        if (current, callee) not in bad:
            bad.append((current, callee))
    return clones, bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--so", type=Path, help="an unstripped _C*.so to check instead of building")
    args = ap.parse_args()
    so = args.so if args.so else build()
    dis = disassemble(so)
    clones, bad = findings(dis)
    if clones == 0:
        print(f"check_clones: {so.name} has no per-ISA clones (not an x86-64 GCC build): "
              "nothing to check")
        return 0
    kernels, spills = tile_findings(dis)
    if not bad:
        print(f"check_clones: {clones} clones in {so.name}, none calls baseline code")
    else:
        print(f"check_clones: {len(bad)} calls from per-ISA clones to baseline code in {so.name}:")
        for clone, callee in bad:
            print(f"  {clone}\n      -> {callee}")
    if kernels == 0:
        print("check_clones: no register-tile kernels found (renamed? update TILE_KERNEL)")
        return 1
    if not spills:
        print(f"check_clones: {kernels} register-tile kernels, none moves vectors (or more than "
              f"{MAX_STACK_LOADS} register loads) through the stack")
    else:
        print(f"check_clones: {len(spills)} register-tile kernels go through the stack:")
        for kernel, what in spills.items():
            print(f"  {kernel}: {what}")
    return 1 if bad or spills else 0


if __name__ == "__main__":
    sys.exit(main())
