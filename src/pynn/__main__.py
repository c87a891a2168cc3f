"""Command line: python -m pynn {train,evaluate,datasets,info}."""
from __future__ import annotations

import argparse
import os
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


def _datasets(args) -> int:
    from pynn.data import DATASETS

    width = max(len(n) for n in DATASETS)
    for d in DATASETS.values():
        print(f"{d.name:{width}}  {d.kind:10}  {d.task:14}  target {d.target!r}: {d.description}")
    return 0


def _train(args) -> int:
    from pynn.pipeline import config
    from pynn.pipeline.train import TrainConfig, run

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "func")}
    file_values = config.read(args.config) if args.config else {}
    cfg = config.merge(TrainConfig, file_values, flags)
    run(cfg)
    return 0


def _evaluate(args) -> int:
    from pynn.pipeline.evaluate import run

    run(args.checkpoint, data=args.data, out=args.out, split=args.split, device=args.device,
        quiet=args.quiet)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pynn", description="pynn: train, evaluate, inspect")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("info", help="version, CUDA build and availability, compilers, threads").set_defaults(func=_info)
    sub.add_parser("datasets", help="list the embedded datasets").set_defaults(func=_datasets)

    t = sub.add_parser("train", help="train a model and export checkpoint, metrics and plots",
                       description="Flags override values from --config; unset flags use the defaults "
                                   "(embedded diabetes data, fcnn, 40 epochs).")
    t.add_argument("--config", help="TOML or YAML file with any of these settings")
    t.add_argument("--data", help="CSV path or embedded dataset name (see `datasets`); default diabetes")
    t.add_argument("--target", help="label column(s), comma-separated")
    t.add_argument("--features", help="feature columns, comma-separated (default: all others)")
    t.add_argument("--task", choices=["regression", "classification"], help="inferred when omitted")
    t.add_argument("--model", help="fcnn, cnn, lenet5, rnn, lstm, alexnet, vgg16, googlenet, resnet18, ...")
    t.add_argument("--normalize", choices=["minmax", "zscore", "none"], help="fitted on the training split")
    t.add_argument("--val-split", type=float, dest="val_split", help="validation fraction (default 0.2)")
    t.add_argument("--window", type=int, help="past steps per sample for time series / rnn / lstm (default 8)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int, dest="batch_size")
    t.add_argument("--lr", type=float)
    t.add_argument("--optimizer", choices=["adam", "adamw", "sgd"])
    t.add_argument("--device", choices=["auto", "cpu", "cuda"])
    t.add_argument("--seed", type=int)
    t.add_argument("--out", help="output directory (default runs/default)")
    t.add_argument("--resume", action="store_true", default=None, help="continue from OUT/checkpoint.pt")
    t.add_argument("--quiet", action="store_true", default=None, help="no progress bars or epoch lines")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="predict with a checkpoint and report RMSE/MAPE or accuracy")
    e.add_argument("--checkpoint", required=True, help="checkpoint.pt written by train (or its directory)")
    e.add_argument("--data", help="CSV path or embedded name (default: the training data)")
    e.add_argument("--out", default="runs/eval", help="output directory (default runs/eval)")
    e.add_argument("--split", default="val", choices=["val", "all"],
                   help="the training run's validation split (default) or every row")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_evaluate)
    return p


def _interrupt_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so temp files of writes in progress are removed."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        def handler(signum, frame):
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, handler)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from pynn.pipeline.errors import PipelineError

    if argv is None:
        _interrupt_on_sigterm()

    try:
        return args.func(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: files already written are complete; nothing half-written was left",
              file=sys.stderr)
        return 130
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        if os.environ.get("PYNN_DEBUG"):
            raise
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"error: {type(exc).__name__}: {msg} (PYNN_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
