"""From checked columns to tensors the chosen model takes: split, normalise, window, resize.

train and evaluate both call `assemble`, evaluate with the normalisers saved at training time,
so predictions see exactly the transforms the model was trained with.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .dataset import Prepared, split_indices, windows
from .errors import PipelineError
from .normalize import Normalizer
from .registry import ModelSpec

DEFAULT_WINDOW = 8


@dataclass
class Arrays:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    rows_train: np.ndarray       # original row (or window end) numbers, for predictions.csv
    rows_val: np.ndarray
    raw_train: np.ndarray        # targets in original units (float64), never round-tripped
    raw_val: np.ndarray          # through the normaliser: actuals for RMSE / MAPE
    x_norm: Normalizer
    y_norm: Normalizer | None
    window: int | None
    in_size: int                  # features (flat / sequence) or channels (image)
    out_size: int


def assemble(p: Prepared, spec: ModelSpec, *, normalize: str, val_split: float, seed: int,
             window: int | None, x_norm: Normalizer | None = None,
             y_norm: Normalizer | None = None) -> Arrays:
    if p.task not in spec.tasks:
        raise PipelineError(f"model {spec.name!r} does only {' and '.join(spec.tasks)}, "
                            f"but the task is {p.task}")
    if spec.input == "image" and p.kind != "images":
        raise PipelineError(f"model {spec.name!r} needs image data; this data is {p.kind} "
                            "(try --data digits, or --model fcnn)")
    windowed = p.kind == "timeseries" or spec.input == "sequence"
    if windowed and p.kind == "images":
        raise PipelineError(f"model {spec.name!r} takes sequences; image data needs an image model")
    regression = p.task == "regression"
    out_size = p.y.shape[1] if regression else len(p.classes)
    fit = x_norm is None

    if windowed:
        window = window or DEFAULT_WINDOW
        rows = len(p.x)
        if rows - window < 3:
            raise PipelineError(f"too few rows ({rows}) for windows of {window}: need at least {window + 3}")
        n_windows = rows - window
        n_val = int(round(n_windows * val_split))
        if not 0.0 < val_split < 1.0 or n_val < 1 or n_windows - n_val < 2:
            raise PipelineError(f"too few windows ({n_windows}) for a {val_split:.0%} validation split")
        n_train = n_windows - n_val
        fit_rows = slice(0, window + n_train)   # every row a training window reads or predicts
        if fit:
            x_norm = Normalizer(normalize).fit(p.x[fit_rows])
            y_norm = Normalizer(normalize).fit(p.y[fit_rows]) if regression else None
        xs, ys, ends = windows(x_norm.transform(p.x), y_norm.transform(p.y) if regression else p.y, window)
        tr, va = np.arange(n_train), np.arange(n_train, n_windows)
        x = xs if spec.input == "sequence" else xs.reshape(len(xs), -1)
        in_size = p.x.shape[1] if spec.input == "sequence" else window * p.x.shape[1]
        rows_all = ends
        raw_all = p.y[ends]
    else:
        window = None
        tr, va = split_indices(len(p.x), val_split, seed, shuffle=True)
        if p.kind == "images":
            if fit:  # one scale for all pixels: per-pixel statistics would blow up blank borders
                x_norm = Normalizer(normalize).fit(p.x[tr].reshape(-1), axis=0)
            x = x_norm.transform(p.x)
        else:
            if fit:
                x_norm = Normalizer(normalize).fit(p.x[tr])
            x = x_norm.transform(p.x)
        if regression:
            if fit:
                y_norm = Normalizer(normalize).fit(p.y[tr])
            ys = y_norm.transform(p.y)
        else:
            ys = p.y
        rows_all = p.index
        raw_all = p.y
        if spec.input == "flat":
            x = x.reshape(len(x), -1)
            in_size = x.shape[1]
        else:
            in_size = spec.channels or x.shape[1]

    xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
    if spec.input == "image":
        xt = _resize(xt, spec)
    yt = torch.tensor(ys, dtype=torch.float32 if regression else torch.int64)
    tr_t, va_t = torch.as_tensor(tr), torch.as_tensor(va)
    return Arrays(xt[tr_t], yt[tr_t], xt[va_t], yt[va_t], rows_all[tr], rows_all[va],
                  raw_all[tr], raw_all[va], x_norm, y_norm, window, in_size, out_size)


def _resize(x: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    if spec.image_size and tuple(x.shape[-2:]) != (spec.image_size, spec.image_size):
        x = torch.nn.functional.interpolate(x, size=(spec.image_size, spec.image_size),
                                            mode="bilinear", align_corners=False)
    if spec.channels and x.shape[1] != spec.channels:
        x = x.repeat(1, spec.channels // x.shape[1], 1, 1)
    return x.contiguous()
