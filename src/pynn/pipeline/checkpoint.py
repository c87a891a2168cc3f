"""The checkpoint file: everything evaluate needs to rebuild the model and its inputs."""
from __future__ import annotations

import pickle
import platform
import zipfile
from pathlib import Path

import torch

from .errors import PipelineError
from .io import save_torch

FORMAT = "pynn-checkpoint"
VERSION = 1
KEYS = ("model", "model_args", "in_size", "out_size", "state_dict", "task", "data", "features",
        "targets", "classes", "x_norm", "y_norm", "window", "split", "train_args", "epoch", "history")


def versions() -> dict:
    import pynn

    return {"pynn": str(pynn.__version__), "torch": str(torch.__version__), "python": platform.python_version()}


def save(path: Path, payload: dict) -> None:
    missing = [k for k in KEYS if k not in payload]
    assert not missing, f"checkpoint payload lacks {missing}"
    save_torch(path, {"format": FORMAT, "format_version": VERSION, "versions": versions(), **payload})


def load(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"checkpoint not found: {path}")
    if path.is_dir():
        path = path / "checkpoint.pt"
        if not path.exists():
            raise PipelineError(f"no checkpoint.pt in {path.parent}")
    try:
        # weights_only: a checkpoint is data, never code to run
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise PipelineError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise PipelineError(f"{path}: not a pynn checkpoint (written by `python -m pynn train`)")
    if ckpt.get("format_version", 0) > VERSION:
        raise PipelineError(f"{path}: checkpoint format {ckpt['format_version']} is newer than this "
                            f"pynn understands ({VERSION}); upgrade pynn")
    missing = [k for k in KEYS if k not in ckpt]
    if missing:
        raise PipelineError(f"{path}: checkpoint is incomplete (missing {', '.join(missing)})")
    return ckpt
