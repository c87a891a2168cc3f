"""python -m pynn train: data -> normalise -> split -> model -> train -> export -> plots."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import checkpoint
from .assemble import Arrays, assemble
from .dataset import load_table, prepare
from .errors import PipelineError
from .io import write_csv, write_json
from .metrics import accuracy, mape, rmse
from .normalize import Normalizer
from .plots import history_plots
from .registry import get_spec

OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass
class TrainConfig:
    data: str = "diabetes"
    target: list | None = None
    features: list | None = None
    task: str | None = None
    model: str = "fcnn"
    normalize: str = "zscore"
    val_split: float = 0.2
    window: int | None = None
    epochs: int = 40
    batch_size: int = 32
    lr: float = 3e-3
    optimizer: str = "adam"
    device: str = "auto"
    seed: int = 0
    out: str = "runs/default"
    resume: bool = False
    quiet: bool = False
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.epochs < 1:
            raise PipelineError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise PipelineError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise PipelineError(f"--lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise PipelineError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    import pynn

    if name == "auto":
        name = "cuda" if pynn.cuda_available() else "cpu"
    if name == "cuda":
        if not pynn.cuda_available():
            why = ("pynn was built without CUDA kernels" if not pynn.cuda_built()
                   else "no CUDA GPU is visible")
            raise PipelineError(f"--device cuda requested but CUDA is not available ({why})")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise PipelineError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


def loss_fn(task: str):
    import pynn.functional as F

    def fn(out, y):
        if isinstance(out, tuple):  # GoogLeNet in training: main + auxiliary classifiers
            main, *aux = [o for o in out if o is not None]
            return fn(main, y) + 0.3 * sum(fn(a, y) for a in aux)
        return F.mse_loss(out, y) if task == "regression" else F.cross_entropy(out, y)
    return fn


@torch.no_grad()
def predict(model, x: torch.Tensor, device, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    outs = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def epoch_metrics(task, out: torch.Tensor, y: torch.Tensor, raw: np.ndarray,
                  y_norm: Normalizer | None, prefix: str) -> dict:
    if task == "regression":
        pred, actual = y_norm.inverse(out.numpy()), raw
        m, skipped = mape(pred, actual)
        return {f"{prefix}_rmse": rmse(pred, actual), f"{prefix}_mape": m}
    return {f"{prefix}_accuracy": accuracy(out.argmax(1).numpy(), y.numpy())}


class _Dist:
    """torchrun support: one process per rank, each training on its shard of every epoch."""

    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(device_name, self.local_rank)
        if self.world > 1:
            import torch.distributed as dist

            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model):
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def shard(self, perm: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return perm
        per = len(perm) // self.world  # equal shards: every rank must run the same number of steps
        return perm[self.rank * per:(self.rank + 1) * per]

    def replica_spread(self, model) -> float:
        """Largest difference of any weight between ranks (0.0 means the replicas agree)."""
        if self.world == 1:
            return 0.0
        import torch.distributed as dist

        flat = torch.cat([p.detach().float().reshape(-1).cpu() for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(self.world)]
        dist.all_gather(gathered, flat)
        return float(max((g - gathered[0]).abs().max() for g in gathered))

    def finish(self):
        """Waits for every rank. Rank 0 writes the exports and plots after the last epoch while
        the others are done: a rank that tore down its process group and exited meanwhile
        aborted now and then in gloo's shutdown ("terminate called without an active
        exception", about 1 run in 12 of tests/test_pipeline.py's two-process torchrun)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self):
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _log(cfg, dist, msg):
    if dist.main and not cfg.quiet:
        print(msg, flush=True)


def run(cfg: TrainConfig) -> dict:
    cfg.validate()
    spec = get_spec(cfg.model)
    dist = _Dist(cfg.device)
    try:
        result = _run(cfg, spec, dist)
        dist.finish()
        return result
    finally:
        dist.close()


def _run(cfg: TrainConfig, spec, dist: _Dist) -> dict:
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    resumed = None
    if cfg.resume:
        resumed = checkpoint.load(ckpt_path)
        if resumed["model"] != cfg.model or resumed["data"] != cfg.data:
            raise PipelineError(f"--resume: {ckpt_path} holds model {resumed['model']!r} on "
                                f"{resumed['data']!r}, not {cfg.model!r} on {cfg.data!r}")
    table = load_table(cfg.data)
    prepared = prepare(table, cfg.target, cfg.features, cfg.task,
                       classes=resumed["classes"] if resumed else None)
    arrays = assemble(prepared, spec, normalize=cfg.normalize, val_split=cfg.val_split,
                      seed=cfg.seed, window=cfg.window,
                      x_norm=Normalizer.from_state(resumed["x_norm"]) if resumed else None,
                      y_norm=Normalizer.from_state(resumed["y_norm"]) if resumed and resumed["y_norm"] else None)
    torch.manual_seed(cfg.seed)
    model_args = dict(cfg.extra)
    model = spec.build(arrays.in_size, arrays.out_size, model_args).to(dist.device)
    opt = _optimizer(cfg, model)
    history, start = [], 1
    if resumed:
        model.load_state_dict(resumed["state_dict"])
        if "optimizer" in resumed:
            opt.load_state_dict(resumed["optimizer"])
        history, start = list(resumed["history"]), resumed["epoch"] + 1
        if start > cfg.epochs:
            raise PipelineError(f"--resume: the checkpoint already has {resumed['epoch']} epochs; "
                                f"ask for more with --epochs")
    ddp_model = dist.wrap(model)
    task = prepared.task
    crit = loss_fn(task)
    _log(cfg, dist, f"training {cfg.model} on {cfg.data} ({task}): {len(arrays.y_train)} train / "
                    f"{len(arrays.y_val)} val samples, {sum(p.numel() for p in model.parameters()):,} "
                    f"parameters, device {dist.device}" + (f", {dist.world} processes" if dist.world > 1 else ""))
    bar_ok = dist.main and not cfg.quiet and sys.stderr.isatty()
    t_start = time.perf_counter()
    for epoch in range(start, cfg.epochs + 1):
        row = _train_epoch(cfg, epoch, ddp_model, model, opt, crit, arrays, dist, bar_ok)
        history.append(row)
        metric = ("val_rmse", "RMSE") if task == "regression" else ("val_accuracy", "accuracy")
        _log(cfg, dist, f"epoch {epoch:3d}/{cfg.epochs}  train loss {row['train_loss']:.4f}  "
                        f"val loss {row['val_loss']:.4f}  val {metric[1]} {row[metric[0]]:.4f}")
        if dist.main:
            _save(cfg, out, model, opt, prepared, arrays, history, epoch, model_args)
    spread = dist.replica_spread(model)
    summary = {"model": cfg.model, "data": cfg.data, "task": task, "epochs": cfg.epochs,
               "seconds": time.perf_counter() - t_start, "final": history[-1],
               "distributed": {"world_size": dist.world, "max_weight_diff_across_ranks": spread}}
    if dist.main:
        write_json(out / "metrics.json", {"summary": summary, "history": history})
        plots = history_plots(history, out, task)
        files = [ckpt_path, out / "metrics.json", out / "history.csv", *plots]
        _log(cfg, dist, "wrote " + ", ".join(str(f) for f in files))
    return summary


def _optimizer(cfg, model):
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr)
    return torch.optim.Adam(params, lr=cfg.lr)


def _train_epoch(cfg, epoch, ddp_model, model, opt, crit, a: Arrays, dist, bar_ok) -> dict:
    gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)  # same order on every rank
    perm = dist.shard(torch.randperm(len(a.y_train), generator=gen))
    batches = perm.split(cfg.batch_size)
    ddp_model.train()
    total, seen = 0.0, 0
    bar = None
    if bar_ok:
        from tqdm import tqdm

        bar = tqdm(total=len(batches), desc=f"epoch {epoch}", leave=False, unit="batch")
    for idx in batches:
        xb, yb = a.x_train[idx].to(dist.device), a.y_train[idx].to(dist.device)
        opt.zero_grad(set_to_none=True)
        loss = crit(ddp_model(xb), yb)
        if not torch.isfinite(loss):
            raise PipelineError(f"epoch {epoch}: the loss became {loss.item()}; lower --lr or check the data")
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
        seen += len(idx)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{total / seen:.4f}")
    if bar is not None:
        bar.close()
    task = "regression" if a.y_norm is not None else "classification"
    out_train, out_val = predict(model, a.x_train, dist.device), predict(model, a.x_val, dist.device)
    row = {"epoch": epoch, "train_loss": total / max(seen, 1),
           "val_loss": float(crit(out_val, a.y_val))}
    row.update(epoch_metrics(task, out_train, a.y_train, a.raw_train, a.y_norm, "train"))
    row.update(epoch_metrics(task, out_val, a.y_val, a.raw_val, a.y_norm, "val"))
    return row


def _save(cfg, out, model, opt, p, a: Arrays, history, epoch, model_args):
    checkpoint.save(out / "checkpoint.pt", {
        "model": cfg.model, "model_args": model_args, "in_size": a.in_size, "out_size": a.out_size,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(), "task": p.task, "data": cfg.data, "features": p.features,
        "targets": p.targets, "classes": p.classes, "x_norm": a.x_norm.state(),
        "y_norm": a.y_norm.state() if a.y_norm else None, "window": a.window,
        "split": {"val_split": cfg.val_split, "seed": cfg.seed},
        "train_args": {k: v for k, v in vars(cfg).items()}, "epoch": epoch, "history": history,
    })
    write_json(out / "metrics.json", {"history": history})
    write_csv(out / "history.csv", pd.DataFrame(history))
