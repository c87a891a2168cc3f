"""PNG charts of the training history and of evaluation results (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import save_figure


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def history_plots(history: list[dict], out: Path, task: str) -> list[Path]:
    """loss.png, plus accuracy.png (classification) or rmse.png and mape.png (regression)."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    charts = [("loss", "loss (normalised units)" if task == "regression" else "cross-entropy")]
    charts += [("accuracy", "accuracy")] if task == "classification" else [("rmse", "RMSE"), ("mape", "MAPE (%)")]
    written = []
    for key, label in charts:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for split, style in (("train", "-o"), ("val", "-s")):
            ax.plot(epochs, [h[f"{split}_{key}"] for h in history], style, ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        path = out / f"{key}.png"
        save_figure(path, fig)
        plt.close(fig)
        written.append(path)
    return written


def predicted_vs_actual(pred: np.ndarray, actual: np.ndarray, names, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for j, name in enumerate(names):
        ax.scatter(actual[:, j], pred[:, j], s=10, alpha=0.6, label=name)
    lo = float(min(actual.min(), pred.min()))
    hi = float(max(actual.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="perfect")
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title("predicted vs actual")
    ax.legend()
    save_figure(path, fig)
    plt.close(fig)
    return path


def confusion_plot(matrix: np.ndarray, classes, path: Path) -> Path:
    plt = _plt()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * n, 0.8 + 0.5 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), [str(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(n), [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_title("confusion matrix")
    save_figure(path, fig)
    plt.close(fig)
    return path
