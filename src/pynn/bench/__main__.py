"""Provisional runner: python -m pynn.bench [--device cpu|cuda] [--quick] [--only PATTERN].

Prints pynn time, torch time and speedup (torch / pynn) per case. The full suite (CSV, markdown,
charts, machine ceilings) grows from here.
"""
import argparse
import fnmatch

import torch

from .case import time_pair
from .cases import all_cases


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m pynn.bench")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default=None, help="glob over group/name/mode, e.g. 'conv2d*'")
    args = p.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    for case in all_cases():
        if args.quick and not case.quick:
            continue
        if args.only and not fnmatch.fnmatch(case.id, args.only) and args.only not in case.id:
            continue
        pynn_fn, torch_fn = case.make(args.device, dtype)
        (tp, _), (tt, _) = time_pair(pynn_fn, torch_fn, args.device)
        print(f"{case.id:60s} pynn {tp * 1e3:9.3f} ms  torch {tt * 1e3:9.3f} ms  "
              f"speedup {tt / tp:6.2f}x")


if __name__ == "__main__":
    main()
