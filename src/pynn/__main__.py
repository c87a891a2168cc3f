"""Command line: python -m pynn {info,demo,...}."""
from __future__ import annotations

import argparse
import platform
import sys


def _info(args) -> int:
    import torch

    import pynn
    from pynn import _backend as B

    C = B._C
    print(f"pynn {pynn.__version__}")
    print(f"python {platform.python_version()}, torch {torch.__version__}")
    print(f"C++ compiler: {C.cxx_compiler}")
    if C.cuda_built:
        print(f"CUDA kernels: built ({C.cuda_compiler}; architectures {C.cuda_architectures}; "
              f"{C.cuda_runtime_info()})")
        print(f"CUDA available: {pynn.cuda_available()} ({C.cuda_device_count()} device(s))")
    else:
        print("CUDA kernels: not built")
    B._sync_threads()
    print(f"CPU threads: {pynn.get_num_threads()} (torch: {torch.get_num_threads()})")
    return 0


def _demo(args) -> int:
    from .demo import main

    return main(args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pynn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, CUDA build and availability, compilers, threads")
    demo = sub.add_parser("demo", help="train an FCNN on the embedded diabetes set, report "
                                        "validation RMSE and MAPE against a mean predictor")
    demo.add_argument("--epochs", type=int, default=60)
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return {"info": _info, "demo": _demo}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
