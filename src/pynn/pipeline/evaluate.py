"""python -m pynn evaluate: checkpoint -> data -> saved normalisation -> predict -> metrics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import checkpoint
from .assemble import assemble
from .dataset import load_table, prepare
from .errors import PipelineError
from .io import write_csv, write_json
from .metrics import accuracy, confusion, mape, rmse
from .normalize import Normalizer
from .plots import confusion_plot, predicted_vs_actual
from .registry import get_spec
from .train import predict, resolve_device


def run(checkpoint_path, data=None, out="runs/eval", split="val", device="auto", quiet=False) -> dict:
    if split not in ("val", "all"):
        raise PipelineError(f"--split must be val or all, got {split!r}")
    ckpt = checkpoint.load(checkpoint_path)
    spec = get_spec(ckpt["model"])
    dev = resolve_device(device)
    model = spec.build(ckpt["in_size"], ckpt["out_size"], dict(ckpt["model_args"]))
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise PipelineError(f"checkpoint weights do not fit model {ckpt['model']!r}: {first}") from None
    model.to(dev)

    source = data or ckpt["data"]
    table = load_table(source)
    features = ckpt["features"] if table.kind != "timeseries" or ckpt["features"] != ckpt["targets"] else None
    prepared = prepare(table, ckpt["targets"], features, ckpt["task"], classes=ckpt["classes"])
    x_norm = Normalizer.from_state(ckpt["x_norm"])
    y_norm = Normalizer.from_state(ckpt["y_norm"]) if ckpt["y_norm"] else None
    a = assemble(prepared, spec, normalize=x_norm.method, val_split=ckpt["split"]["val_split"],
                 seed=ckpt["split"]["seed"], window=ckpt["window"], x_norm=x_norm, y_norm=y_norm)
    if split == "all":
        x, y = torch.cat([a.x_train, a.x_val]), torch.cat([a.y_train, a.y_val])
        rows = np.concatenate([a.rows_train, a.rows_val])
        raw = np.concatenate([a.raw_train, a.raw_val])
    else:
        x, y, rows, raw = a.x_val, a.y_val, a.rows_val, a.raw_val
    out_t = predict(model, x, dev)
    out = Path(out)
    result = {"checkpoint": str(checkpoint_path), "data": source, "split": split, "samples": len(y),
              "model": ckpt["model"], "task": ckpt["task"]}
    if ckpt["task"] == "regression":
        pred, actual = y_norm.inverse(out_t.numpy()), raw
        m, skipped = mape(pred, actual)
        result.update({"rmse": rmse(pred, actual), "mape": m, "mape_zero_targets_excluded": skipped,
                       "per_target": {t: {"rmse": rmse(pred[:, j], actual[:, j]),
                                          "mape": mape(pred[:, j], actual[:, j])[0]}
                                      for j, t in enumerate(ckpt["targets"])}})
        frame = pd.DataFrame({"row": rows})
        for j, t in enumerate(ckpt["targets"]):
            frame[f"actual_{t}"] = actual[:, j]
            frame[f"predicted_{t}"] = pred[:, j]
        plot = predicted_vs_actual(pred, actual, ckpt["targets"], out / "predicted_vs_actual.png")
        plots = [plot]
        line = (f"RMSE {result['rmse']:.4f}  MAPE {m:.2f}%"
                + (f" ({skipped} zero target(s) excluded from MAPE)" if skipped else ""))
    else:
        labels = out_t.argmax(1).numpy()
        truth = y.numpy()
        classes = ckpt["classes"]
        matrix = confusion(labels, truth, len(classes))
        result.update({"accuracy": accuracy(labels, truth), "confusion_matrix": matrix.tolist(),
                       "classes": classes})
        frame = pd.DataFrame({"row": rows, "actual": [classes[i] for i in truth],
                              "predicted": [classes[i] for i in labels]})
        plots = [confusion_plot(matrix, classes, out / "confusion_matrix.png"),
                 _class_scatter(labels, truth, classes, out / "predicted_vs_actual.png")]
        line = f"accuracy {result['accuracy']:.4f}"
    write_csv(out / "predictions.csv", frame)
    write_json(out / "metrics.json", result)
    if not quiet:
        print(f"evaluated {ckpt['model']} on {source} ({split} split, {len(y)} samples): {line}")
        print("wrote " + ", ".join(str(p) for p in [out / "predictions.csv", out / "metrics.json", *plots]))
    return result


def _class_scatter(pred, truth, classes, path):
    """Predicted vs actual class, jittered so that each cell's count is visible."""
    rng = np.random.default_rng(0)
    jt = truth + rng.uniform(-0.25, 0.25, len(truth))
    jp = pred + rng.uniform(-0.25, 0.25, len(pred))
    return predicted_vs_actual(jp[:, None], jt[:, None], ["class index"], path)
