"""End-to-end runs of `python -m pynn train / evaluate / datasets` on small data, and every bad
input the pipeline promises to reject with a one-line error."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pynn.__main__ import main
from pynn.pipeline.metrics import mape, rmse
from pynn.pipeline.normalize import Normalizer


def run_cli(*argv):
    return main([str(a) for a in argv])


def train(tmp_path, *extra, name="run"):
    out = tmp_path / name
    code = run_cli("train", "--out", out, "--quiet", *extra)
    assert code == 0
    return out


# ---- happy paths ----

def test_regression_csv_train_then_evaluate(tmp_path):
    out = train(tmp_path, "--data", "diabetes", "--epochs", "25", "--seed", "1")
    for f in ["checkpoint.pt", "metrics.json", "history.csv", "loss.png", "rmse.png", "mape.png"]:
        assert (out / f).stat().st_size > 0, f
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 26))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert len(pd.read_csv(out / "history.csv")) == 25

    ev = tmp_path / "eval"
    assert run_cli("evaluate", "--checkpoint", out / "checkpoint.pt", "--out", ev, "--quiet") == 0
    pred = pd.read_csv(ev / "predictions.csv")
    metrics = json.loads((ev / "metrics.json").read_text())
    raw = pd.read_csv(Path(__import__("pynn").data.__file__).parent / "files" / "diabetes.csv")
    # de-normalised actuals are the CSV's own values for those rows
    np.testing.assert_allclose(pred["actual_progression"], raw["progression"].to_numpy()[pred["row"]], rtol=1e-6)
    # the reported metrics are those of the written predictions
    err = pred["predicted_progression"] - pred["actual_progression"]
    assert metrics["rmse"] == pytest.approx(float(np.sqrt(np.mean(err ** 2))), rel=1e-6)
    assert metrics["mape"] == pytest.approx(float(np.mean(np.abs(err / pred["actual_progression"])) * 100), rel=1e-6)
    # and better than predicting the training mean
    baseline = float(np.sqrt(np.mean((pred["actual_progression"] - raw["progression"].mean()) ** 2)))
    assert metrics["rmse"] < baseline
    assert (ev / "predicted_vs_actual.png").stat().st_size > 0


def test_time_series_lstm_uses_time_ordered_windows(tmp_path):
    out = train(tmp_path, "--data", "sunspots", "--model", "lstm", "--window", "10", "--epochs", "6")
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["window"] == 10 and ckpt["task"] == "regression"
    ev = tmp_path / "eval"
    assert run_cli("evaluate", "--checkpoint", out, "--out", ev, "--quiet") == 0
    rows = pd.read_csv(ev / "predictions.csv")["row"].to_numpy()
    n = 309 - 10
    n_val = int(round(n * 0.2))
    np.testing.assert_array_equal(rows, np.arange(309 - n_val, 309))  # the last steps, in order


def test_images_lenet_classification(tmp_path):
    out = train(tmp_path, "--data", "digits", "--model", "lenet5", "--epochs", "3", "--lr", "0.003")
    hist = json.loads((out / "metrics.json").read_text())["history"]
    assert hist[-1]["val_accuracy"] > 0.8
    assert (out / "accuracy.png").exists()
    ev = tmp_path / "eval"
    assert run_cli("evaluate", "--checkpoint", out, "--out", ev, "--quiet") == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert np.asarray(m["confusion_matrix"]).sum() == m["samples"]
    assert m["accuracy"] == pytest.approx(np.trace(np.asarray(m["confusion_matrix"])) / m["samples"])
    assert (ev / "confusion_matrix.png").stat().st_size > 0


def test_classification_with_text_labels(tmp_path):
    out = train(tmp_path, "--data", "iris", "--epochs", "30")
    ev = tmp_path / "eval"
    assert run_cli("evaluate", "--checkpoint", out, "--out", ev, "--quiet") == 0
    pred = pd.read_csv(ev / "predictions.csv")
    assert set(pred["predicted"]) <= {"setosa", "versicolor", "virginica"}
    assert (pred["predicted"] == pred["actual"]).mean() > 0.8


def test_config_file_and_flag_override(tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('data = "diabetes"\nepochs = 7\nnormalize = "minmax"\n[model_args]\nhidden = [16]\n')
    out = train(tmp_path, "--config", cfg, "--epochs", "3")
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 3                         # the flag won
    assert ckpt["x_norm"]["method"] == "minmax"       # the file's value
    assert ckpt["model_args"] == {"hidden": [16]}
    assert ckpt["state_dict"]["layers.0.weight"].shape[0] == 16   # the [model_args] table


def test_resume_continues_the_history(tmp_path):
    out = train(tmp_path, "--epochs", "2")
    assert run_cli("train", "--out", out, "--quiet", "--epochs", "4", "--resume") == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_normalisation_is_fitted_on_training_rows_and_inverts_by_hand():
    x = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]])
    n = Normalizer("zscore").fit(x)
    # by hand: mean 3, population std sqrt(8/3); the constant column gets scale 1
    np.testing.assert_allclose(n.shift, [3.0, 10.0])
    np.testing.assert_allclose(n.scale, [np.sqrt(8 / 3), 1.0])
    np.testing.assert_allclose(n.transform([[5.0, 10.0]]), [[2 / np.sqrt(8 / 3), 0.0]])
    np.testing.assert_allclose(n.inverse(n.transform(x)), x)
    m = Normalizer("minmax").fit(x)
    np.testing.assert_allclose(m.transform([[2.0, 10.0]]), [[0.25, 0.0]])


def test_mape_leaves_out_zero_targets():
    value, skipped = mape(np.array([1.0, 5.0, 9.0]), np.array([2.0, 0.0, 10.0]))
    assert skipped == 1
    assert value == pytest.approx((0.5 + 0.1) / 2 * 100)
    assert np.isnan(mape(np.array([1.0]), np.array([0.0]))[0])
    assert rmse(np.array([1.0, 3.0]), np.array([1.0, 1.0])) == pytest.approx(np.sqrt(2))


def test_zero_targets_reported_in_evaluation(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 2))
    y = np.round(x[:, 0] * 2, 0)
    y[:10] = 0.0
    csv = tmp_path / "z.csv"
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": y + 0.5 * (y != 0) * 0}).to_csv(csv, index=False)
    out = train(tmp_path, "--data", csv, "--target", "y", "--task", "regression", "--epochs", "2")
    ev = tmp_path / "ev"
    assert run_cli("evaluate", "--checkpoint", out, "--out", ev, "--quiet", "--split", "all") == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert m["mape_zero_targets_excluded"] == int((y == 0).sum())


def test_datasets_lists_embedded(capsys):
    assert run_cli("datasets") == 0
    out = capsys.readouterr().out
    for name in ["diabetes", "iris", "digits", "sunspots"]:
        assert name in out


# ---- bad input: one line, non-zero exit, nothing written ----

def _csv(tmp_path, text, name="bad.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


BAD = [
    ("missing file", lambda t: ["--data", t / "nope.csv"], "not found"),
    ("empty csv", lambda t: ["--data", _csv(t, "")], "empty"),
    ("header only", lambda t: ["--data", _csv(t, "a,b\n"), "--target", "b"], "no data rows"),
    ("misspelled target", lambda t: ["--data", "diabetes", "--target", "progresion"], "did you mean 'progression'"),
    ("misspelled feature", lambda t: ["--data", "diabetes", "--features", "age,bmii"], "did you mean 'bmi'"),
    ("non-numeric", lambda t: ["--data", _csv(t, "a,b\n1,2\n3,x\n5,6\n7,8\n", "nn.csv"), "--target", "b", "--task", "regression"],
     "column 'b' has a non-numeric value 'x' at row 2"),
    ("nan", lambda t: ["--data", _csv(t, "a,b\n1,2\n,4\n5,6\n7,8\n", "nan.csv"), "--target", "b"],
     "column 'a' has a missing or infinite value (NaN/inf) at row 2"),
    ("too few rows", lambda t: ["--data", _csv(t, "a,b\n1,2\n3,4\n", "few.csv"), "--target", "b", "--task", "regression"], "too few rows"),
    ("window too long", lambda t: ["--data", "sunspots", "--model", "lstm", "--window", "400"], "too few rows"),
    ("unknown model", lambda t: ["--model", "resnet19"], "unknown model 'resnet19'"),
    ("unknown dataset", lambda t: ["--data", "diabetis"], "unknown dataset 'diabetis' (did you mean 'diabetes'?)"),
    ("image model on tables", lambda t: ["--model", "lenet5"], "needs image data"),
    ("bad val split", lambda t: ["--val-split", "1.5"], "between 0 and 1"),
]
if not __import__("pynn").cuda_available():
    BAD.append(("cuda requested", lambda t: ["--device", "cuda"], "CUDA is not available"))


@pytest.mark.parametrize("name,args,message", BAD, ids=[b[0] for b in BAD])
def test_train_bad_input(tmp_path, capsys, name, args, message):
    out = tmp_path / "out"
    code = run_cli("train", "--out", out, "--quiet", "--epochs", "1", *args(tmp_path))
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_evaluate_bad_checkpoints(tmp_path, capsys):
    good = train(tmp_path, "--epochs", "1")
    cases = []
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((good / "checkpoint.pt").read_bytes()[:300])
    cases.append((corrupt, "not a readable checkpoint"))
    plain = tmp_path / "plain.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), plain)
    cases.append((plain, "not a pynn checkpoint"))
    other = tmp_path / "other.pt"
    ck = torch.load(good / "checkpoint.pt", weights_only=True)
    ck["model"] = "lenet5"
    torch.save(ck, other)
    cases.append((other, "do not fit model 'lenet5'"))
    cases.append((tmp_path / "missing.pt", "checkpoint not found"))
    for path, message in cases:
        ev = tmp_path / f"ev_{path.stem}"
        code = run_cli("evaluate", "--checkpoint", path, "--out", ev, "--quiet")
        err = capsys.readouterr().err.strip()
        assert code != 0 and message in err and len(err.splitlines()) == 1, (path, err)
        assert not ev.exists()


def test_evaluate_on_data_missing_the_columns(tmp_path, capsys):
    good = train(tmp_path, "--epochs", "1")
    csv = _csv(tmp_path, "age,sex\n1,2\n3,4\n5,6\n")
    code = run_cli("evaluate", "--checkpoint", good, "--data", csv, "--out", tmp_path / "ev")
    err = capsys.readouterr().err
    assert code != 0 and "target column 'progression' not found" in err


# ---- atomic writes ----

def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    from pynn.pipeline import io

    target = tmp_path / "metrics.json"
    io.write_json(target, {"ok": 1})

    def broken(obj, f, *a, **k):
        Path(f).write_text("{half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        io.save_torch(tmp_path / "checkpoint.pt", {"x": 1})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_killed_run_leaves_only_complete_files(tmp_path):
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "pynn", "train", "--out", str(out), "--epochs", "400",
                             "--data", "diabetes"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    try:
        for line in proc.stdout:  # wait until a few epochs (and their files) were written
            if line.startswith("epoch   3/"):
                break
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    names = sorted(p.name for p in out.iterdir())
    finals = [n for n in names if not n.startswith(".")]
    assert "checkpoint.pt" in finals
    ck = torch.load(out / "checkpoint.pt", weights_only=True)   # complete, loadable
    assert ck["epoch"] >= 3
    json.loads((out / "metrics.json").read_text())
    pd.read_csv(out / "history.csv")
    # a temp file being written at the instant of SIGKILL may remain, hidden and never under a final name
    assert all(n.startswith(".") and n.endswith(".tmp") for n in names if n not in finals)


# ---- beyond one machine ----

def test_torchrun_two_processes_keep_replicas_identical(tmp_path):
    out = tmp_path / "ddp"
    port = 29500 + os.getpid() % 1000
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(port), "-m", "pynn", "train", "--out", str(out), "--epochs", "3", "--quiet", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert summary["distributed"]["world_size"] == 2
    assert summary["distributed"]["max_weight_diff_across_ranks"] == 0.0
