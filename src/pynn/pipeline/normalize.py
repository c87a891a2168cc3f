"""Feature / target scaling fitted on the training split only and saved in the checkpoint."""
from __future__ import annotations

import numpy as np

from .errors import PipelineError

METHODS = ("minmax", "zscore", "none")


class Normalizer:
    """x' = (x - shift) / scale per column; `none` is shift 0, scale 1.

    minmax maps the training range to [0, 1]; zscore to mean 0, std 1. A constant column gets
    scale 1 so it maps to 0 instead of dividing by zero.
    """

    def __init__(self, method: str = "zscore", shift=None, scale=None):
        if method not in METHODS:
            raise PipelineError(f"--normalize must be one of {', '.join(METHODS)}, got {method!r}")
        self.method = method
        self.shift = None if shift is None else np.asarray(shift, dtype=np.float64)
        self.scale = None if scale is None else np.asarray(scale, dtype=np.float64)

    def fit(self, x: np.ndarray, axis=0) -> "Normalizer":
        x = np.asarray(x, dtype=np.float64)
        if self.method == "minmax":
            lo, hi = x.min(axis=axis), x.max(axis=axis)
            shift, scale = lo, hi - lo
        elif self.method == "zscore":
            shift, scale = x.mean(axis=axis), x.std(axis=axis)
        else:
            shift, scale = np.zeros(np.shape(x.mean(axis=axis))), np.ones(np.shape(x.mean(axis=axis)))
        scale = np.where(np.asarray(scale) > 0, scale, 1.0)
        self.shift, self.scale = np.asarray(shift, np.float64), np.asarray(scale, np.float64)
        return self

    def transform(self, x):
        return (np.asarray(x, dtype=np.float64) - self.shift) / self.scale

    def inverse(self, x):
        return np.asarray(x, dtype=np.float64) * self.scale + self.shift

    def state(self) -> dict:
        return {"method": self.method, "shift": self.shift.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> "Normalizer":
        return cls(state["method"], state["shift"], state["scale"])
