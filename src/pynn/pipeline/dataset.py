"""Loading and checking the user's data, and turning it into model inputs.

load -> select features/labels -> check values -> split -> normalise (fitted on the training
split) -> arrays shaped for the chosen model (flat rows, sliding windows, or images).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import data as embedded
from .errors import PipelineError


@dataclass
class Table:
    frame: pd.DataFrame
    source: str               # embedded name or CSV path, as given
    kind: str                 # "tabular", "timeseries" or "images"
    default_target: str | None = None
    default_task: str | None = None


def load_table(source: str) -> Table:
    if source in embedded.DATASETS:
        meta = embedded.info(source)
        return Table(embedded.load(source), source, meta.kind, meta.target, meta.task)
    path = Path(source)
    if not path.exists():
        if path.suffix == "" and "/" not in source:
            close = difflib.get_close_matches(source, list(embedded.DATASETS), n=2)
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            raise PipelineError(f"unknown dataset {source!r}{hint}; embedded datasets: "
                                f"{', '.join(embedded.DATASETS)}; or give a path to a CSV file")
        raise PipelineError(f"data file not found: {source}")
    if path.is_dir():
        raise PipelineError(f"--data must be a CSV file, got a directory: {source}")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise PipelineError(f"{source}: the CSV file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"{source}: could not parse the CSV ({first})") from None
    if frame.shape[1] == 0 or len(frame) == 0:
        raise PipelineError(f"{source}: the CSV has a header but no data rows")
    frame.columns = [str(c).strip() for c in frame.columns]
    return Table(frame, source, "tabular")


def _missing_columns(names, frame, what):
    for name in names:
        if name not in frame.columns:
            close = difflib.get_close_matches(name, list(frame.columns), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise PipelineError(f"{what} column {name!r} not found{hint} (columns: "
                                f"{', '.join(map(str, frame.columns[:12]))}"
                                f"{', ...' if len(frame.columns) > 12 else ''})")


def _check_numeric(frame: pd.DataFrame, columns, source: str) -> np.ndarray:
    """float64 array of the columns, or a PipelineError naming the first bad cell."""
    for col in columns:
        raw = frame[col]
        values = pd.to_numeric(raw, errors="coerce")
        bad = values.isna() & raw.notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise PipelineError(f"{source}: column {col!r} has a non-numeric value {raw.iloc[i]!r} "
                                f"at row {i + 1} (CSV line {i + 2})")
        nan = values.isna() | ~np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
        if nan.any():
            i = int(np.flatnonzero(nan.to_numpy())[0])
            raise PipelineError(f"{source}: column {col!r} has a missing or infinite value (NaN/inf) "
                                f"at row {i + 1} (CSV line {i + 2}); clean or drop such rows first")
    return frame[list(columns)].apply(pd.to_numeric).to_numpy(dtype=np.float64)


def infer_task(series: pd.Series) -> str:
    """classification for text/bool labels or few distinct integers, regression otherwise."""
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return "classification"
    values = series.dropna().to_numpy()
    if np.all(np.mod(values, 1) == 0) and len(np.unique(values)) <= min(20, max(2, len(values) // 5)):
        return "classification"
    return "regression"


@dataclass
class Prepared:
    """Data selected and checked, before splitting."""
    kind: str
    task: str
    features: list
    targets: list
    x: np.ndarray                  # tabular/timeseries: [rows, F]; images: [N, C, H, W]
    y: np.ndarray                  # regression: [rows, T] float; classification: [rows] int64
    classes: list | None = None
    index: np.ndarray = field(default=None)   # original row numbers


def prepare(table: Table, target=None, features=None, task=None, classes=None) -> Prepared:
    frame = table.frame
    targets = list(target) if target else ([table.default_target] if table.default_target else [])
    if not targets:
        raise PipelineError("--target is required for a CSV file (the label column or columns)")
    _missing_columns(targets, frame, "target")
    if features:
        _missing_columns(features, frame, "feature")
        overlap = set(features) & set(targets)
        if overlap and table.kind != "timeseries":
            raise PipelineError(f"column(s) {sorted(overlap)} are both a feature and a target")
        feats = list(features)
    elif table.kind == "timeseries":
        feats = list(targets)              # univariate forecasting: past values of the target
    else:
        feats = [c for c in frame.columns if c not in targets]
        if table.kind == "tabular":
            # drop text columns that are not the target only when the user named no features
            feats = [c for c in feats if pd.api.types.is_numeric_dtype(frame[c]) or
                     pd.to_numeric(frame[c], errors="coerce").notna().mean() > 0.5]
    if not feats:
        raise PipelineError("no feature columns left; name them with --features")
    task = task or table.default_task or infer_task(frame[targets[0]])
    if task not in ("regression", "classification"):
        raise PipelineError(f"--task must be regression or classification, got {task!r}")
    x = _check_numeric(frame, feats, table.source)
    if task == "classification":
        if len(targets) != 1:
            raise PipelineError("classification takes exactly one --target column")
        labels = frame[targets[0]]
        if labels.isna().any():
            i = int(np.flatnonzero(labels.isna().to_numpy())[0])
            raise PipelineError(f"{table.source}: target {targets[0]!r} is missing at row {i + 1} "
                                f"(CSV line {i + 2})")
        if classes is None:
            classes = sorted(labels.unique().tolist(), key=lambda v: (str(type(v)), v))
        lookup = {c: i for i, c in enumerate(classes)}
        unknown = [v for v in labels.unique().tolist() if v not in lookup]
        if unknown:
            raise PipelineError(f"target values {unknown[:5]} were not seen in training")
        if len(classes) < 2:
            raise PipelineError(f"classification needs at least 2 classes, {targets[0]!r} has {len(classes)}")
        y = labels.map(lookup).to_numpy(dtype=np.int64)
    else:
        y = _check_numeric(frame, targets, table.source)
    if table.kind == "images":
        side = int(round(np.sqrt(x.shape[1])))
        x = x.reshape(-1, 1, side, side)
    return Prepared(table.kind, task, feats, targets, x, y, classes, np.arange(len(frame)))


def split_indices(n: int, val_split: float, seed: int, shuffle: bool) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < val_split < 1.0:
        raise PipelineError(f"--val-split must be between 0 and 1, got {val_split}")
    n_val = int(round(n * val_split))
    n_train = n - n_val
    if n_val < 1 or n_train < 2:
        raise PipelineError(f"too few rows ({n}) for a {val_split:.0%} validation split: need at "
                            "least 2 training and 1 validation sample")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    return order[:n_train], order[n_train:]


def windows(x: np.ndarray, y: np.ndarray, window: int):
    """Sliding windows: inputs x[t-window:t] -> label y[t], for t = window .. rows-1."""
    if window < 1:
        raise PipelineError(f"--window must be >= 1, got {window}")
    rows = len(x)
    if rows - window < 3:
        raise PipelineError(f"too few rows ({rows}) for windows of {window}: need at least {window + 3}")
    idx = np.arange(window, rows)
    xs = np.stack([x[t - window:t] for t in idx])
    return xs, y[idx], idx
