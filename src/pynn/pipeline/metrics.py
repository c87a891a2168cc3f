"""Regression and classification metrics in the data's original units."""
from __future__ import annotations

import numpy as np


def rmse(pred: np.ndarray, actual: np.ndarray) -> float:
    pred, actual = np.asarray(pred, np.float64), np.asarray(actual, np.float64)
    return float(np.sqrt(np.mean((pred - actual) ** 2))) if actual.size else float("nan")


def mape(pred: np.ndarray, actual: np.ndarray) -> tuple[float, int]:
    """Mean absolute percentage error over the targets that are not zero, and how many zero
    targets were left out. A zero target has no defined percentage error (it would divide by
    zero), so it is excluded rather than counted as infinite; with only zero targets MAPE is nan.
    """
    pred, actual = np.asarray(pred, np.float64).ravel(), np.asarray(actual, np.float64).ravel()
    nonzero = actual != 0
    skipped = int((~nonzero).sum())
    if not nonzero.any():
        return float("nan"), skipped
    return float(np.mean(np.abs((pred[nonzero] - actual[nonzero]) / actual[nonzero])) * 100.0), skipped


def accuracy(pred_labels: np.ndarray, labels: np.ndarray) -> float:
    labels = np.asarray(labels)
    return float(np.mean(np.asarray(pred_labels) == labels)) if labels.size else float("nan")


def confusion(pred_labels: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (np.asarray(labels), np.asarray(pred_labels)), 1)
    return m
