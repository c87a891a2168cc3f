"""python -m pynn.bench: pynn against torch, same process, same inputs.

    python -m pynn.bench --quick                        # CI-sized run on the CPU
    python -m pynn.bench --device cuda --out runs/gpu   # everything, on the GPU
    python -m pynn.bench --only 'conv2d*,relu/*' --repeats 25
    python -m pynn.bench --list --quick

Writes results.csv, results.md, machine.json and the charts speedup.png and roofline.png into
--out. benchmarks/README.md describes the method and the columns.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import sys

import torch

from .cases import all_cases
from .runner import Settings, run, select


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pynn.bench",
                                description="pynn vs torch speed, with machine ceilings.")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--quick", action="store_true",
                   help="only the cases marked quick, fewer and shorter samples (CI-sized)")
    p.add_argument("--only", default=None, metavar="PATTERN",
                   help="comma-separated globs or substrings over group/name/mode, e.g. 'relu/*'")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default runs/bench-<device>-<dtype>-<time>)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed samples per contestant (default 5 quick, 15 full)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per input copy")
    p.add_argument("--min-time", type=float, default=None, metavar="S",
                   help="seconds each sample lasts at least (calls are repeated inside it)")
    p.add_argument("--budget", type=float, default=None, metavar="S",
                   help="seconds of timing per case; slower cases get fewer repeats (min 3)")
    p.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="stop starting new cases after S seconds (they are listed as skipped)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (pynn's CPU pool follows torch)")
    p.add_argument("--gemm-size", type=int, default=None,
                   help="square GEMM size for the compute ceiling (default 2048 CPU, 8192 CUDA; "
                        "1024 / 4096 with --quick)")
    p.add_argument("--copy-mb", type=int, default=None,
                   help="MiB copied for the bandwidth ceiling (default 256 CPU, 2048 CUDA)")
    p.add_argument("--no-ceilings", action="store_true", help="skip measuring the ceilings")
    p.add_argument("--list", action="store_true", help="print the selected cases and exit")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when any case errors")
    return p


def main(argv=None, cases=None) -> int:
    """Entry point; `cases` replaces the registered ones (tests inject tiny cases here)."""
    args = _parser().parse_args(argv)
    chosen = select(all_cases() if cases is None else cases, args.quick, args.only)
    if args.list:
        for c in chosen:
            print(f"{c.id}{'  [quick]' if c.quick else ''}")
        return 0
    if not chosen:
        print("no case matches the selection", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings(device=args.device, dtype=getattr(torch, args.dtype), quick=args.quick,
                        repeats=args.repeats, warmup=args.warmup, min_time=args.min_time,
                        budget=args.budget, time_limit=args.time_limit, gemm_size=args.gemm_size,
                        copy_mb=args.copy_mb, ceilings=not args.no_ceilings)
    out = args.out or (f"runs/bench-{args.device}-{args.dtype}-"
                       f"{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    from .report import geomean, write_all  # after the run's imports: matplotlib is optional

    result = run(chosen, settings)
    paths = write_all(result, out)
    ok = [r for r in result.rows if r["status"] == "ok"]
    errors = [r for r in result.rows if r["status"] == "error"]
    skipped = len(result.rows) - len(ok) - len(errors)
    print(f"\n{len(result.rows)} cases: {len(ok)} ok, {len(errors)} errors, {skipped} skipped; "
          f"geomean speedup {geomean([r['speedup'] for r in ok]):.2f}x "
          f"in {result.seconds:.0f} s")
    print(f"wrote {paths['csv']}, {paths['md']}"
          + "".join(f", {p}" for p in paths["charts"]))
    for note in paths["notes"]:
        print(f"note: {note}")
    return 1 if args.strict and errors else 0


if __name__ == "__main__":
    sys.exit(main())
