"""The benchmark suite's code paths on tiny cases: selection, timing arithmetic, input rotation,
error rows, CSV/markdown/charts, network cases and the GPU check's dry run. No timing is asserted:
where a number is checked, the clock is a fake one the test controls."""
import csv
import importlib.util
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as TF

import pynn.functional as F
from pynn.bench import Case
from pynn.bench import timing as T
from pynn.bench.__main__ import main
from pynn.bench.cases import _broken, all_cases
from pynn.bench.machine import Ceilings, tf32, tf32_state
from pynn.bench.network import INFERENCE, TRAIN_STEP, make_network, network_cases
from pynn.bench.runner import COLUMNS, Settings, copies_for, run, run_case, select

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# One thread: tiny ops on a busy shared machine otherwise wait on OpenMP barriers.
TINY = ["--repeats", "3", "--warmup", "1", "--min-time", "0.0005", "--gemm-size", "64",
        "--copy-mb", "2", "--threads", "1"]


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _unary(ours, ref, shape, backward=False):
    def make(device, dtype):
        x = torch.randn(shape, device=device, dtype=dtype, requires_grad=backward)
        if not backward:
            return (lambda: ours(x)), (lambda: ref(x))
        g = torch.randn(shape, device=device, dtype=dtype)
        return (lambda: ours(x).backward(g)), (lambda: ref(x).backward(g))
    return make


def _fails_in_make(device, dtype):
    raise NotImplementedError("no kernel for this device")


def _fails_in_call(device, dtype):
    def boom():
        raise ValueError("bad shape in the kernel")
    return boom, (lambda: None)


def tiny_cases():
    n = 7 * 33
    return [
        Case("relu", "7x33", "forward", _unary(F.relu, TF.relu, (7, 33)), flops=n, bytes=8 * n,
             quick=True),
        Case("relu", "7x33", "forward+backward", _unary(F.relu, TF.relu, (7, 33), True),
             flops=2 * n, bytes=20 * n, quick=True),
        Case("tanh", "5x3", "forward", _unary(F.tanh, torch.tanh, (5, 3)), quick=True),  # no counts
        Case("broken", "make", "forward", _fails_in_make, quick=True),
        Case("broken", "call", "forward", _fails_in_call, quick=True),
    ]


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_quick_run_writes_csv_markdown_and_charts(tmp_path, device, capsys):
    rc = main(["--quick", "--device", device, "--out", str(tmp_path), *TINY], cases=tiny_cases())
    assert rc == 0
    rows = _read_csv(tmp_path / "results.csv")
    assert list(rows[0].keys()) == COLUMNS
    assert [r["case"] for r in rows] == [c.id for c in tiny_cases()]
    by = {r["case"]: r for r in rows}

    for cid in ("relu/7x33/forward", "relu/7x33/forward+backward", "tanh/5x3/forward"):
        r = by[cid]
        assert r["status"] == "ok", r["error"]
        pynn_ms, torch_ms = float(r["pynn_ms"]), float(r["torch_ms"])
        assert pynn_ms > 0 and torch_ms > 0
        assert float(r["speedup"]) == pytest.approx(torch_ms / pynn_ms, rel=1e-4)
        if device == "cuda":  # torch timed again with TF32 on; both ratios reported
            assert float(r["speedup_tf32"]) == pytest.approx(
                float(r["torch_tf32_ms"]) / pynn_ms, rel=1e-4)
            assert float(r["pynn_peak_mib"]) >= 0 and float(r["torch_peak_mib"]) >= 0
        else:
            assert r["speedup_tf32"] == "" and r["pynn_peak_mib"] == ""
    fwd = by["relu/7x33/forward"]
    assert float(fwd["max_abs_diff"]) == 0.0  # same inputs on both sides
    assert float(fwd["pynn_gbps"]) == pytest.approx(
        float(fwd["bytes"]) / (float(fwd["pynn_ms"]) / 1e3) / 1e9, rel=1e-4)
    assert float(fwd["intensity"]) == pytest.approx(1 / 8)
    assert float(fwd["pynn_frac_copy_bw"]) > 0 and float(fwd["pynn_frac_roofline"]) > 0
    assert by["tanh/5x3/forward"]["pynn_gflops"] == ""  # no FLOP count, no rate
    if device == "cpu":  # measured before every case, failed ones included
        assert all(0 < float(r["core_rt_ns"]) < 1e6 for r in rows)
    else:
        assert all(r["core_rt_ns"] == "" for r in rows)

    assert by["broken/make/forward"]["status"] == "error"
    assert "NotImplementedError: no kernel for this device" in by["broken/make/forward"]["error"]
    assert by["broken/call/forward"]["status"] == "error"
    assert "bad shape in the kernel" in by["broken/call/forward"]["error"]

    md = (tmp_path / "results.md").read_text()
    assert md.startswith(f"# pynn vs torch: {device}, float32")
    for label in ("| date |", "| CPU |", "| threads |", "| versions |", "| copy ceiling |",
                  "| GEMM ceiling |", "## Summary", "### relu", "### tanh",
                  "## Errors and skipped cases"):
        assert label in md
    if device == "cuda":
        assert "| GPU |" in md and "| driver / CUDA |" in md
    else:
        assert "| core round trip |" in md
    assert "| 7x33 | forward+backward |" in md
    assert "| broken/make/forward | error |" in md

    for chart in ("speedup.png", "roofline.png"):
        data = (tmp_path / chart).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert (tmp_path / "machine.json").stat().st_size > 0
    assert "5 cases: 3 ok, 2 errors" in capsys.readouterr().out


def test_core_round_trip_probe_and_far_core_note():
    """The probe returns a time per round trip and refuses a count below one; results.md names
    the cases that started with a round trip over FAR_CORES times the run's lowest."""
    from pynn import _backend
    from pynn.bench import report

    rt = _backend._C.core_round_trip_ns(2000)
    assert 0 < rt < 1e6
    with pytest.raises(ValueError, match="max_round_trips must be >= 1"):
        _backend._C.core_round_trip_ns(0)
    rows = [{"case": "a", "core_rt_ns": 60.0}, {"case": "b", "core_rt_ns": 170.0},
            {"case": "c", "core_rt_ns": 350.0}, {"case": "d", "core_rt_ns": ""}]
    (note,) = report._far_core_notes(rows)
    assert "c (350 ns)" in note and "b (" not in note and "lowest (60 ns)" in note
    assert report._far_core_notes(rows[:2]) == []
    assert report._far_core_notes([{"case": "x", "core_rt_ns": ""}]) == []


def test_strict_exit_status_counts_error_rows(tmp_path):
    cases = [Case("broken", "make", "forward", _fails_in_make)]
    assert main(["--out", str(tmp_path), "--no-ceilings", *TINY], cases=cases) == 0
    assert main(["--out", str(tmp_path), "--no-ceilings", "--strict", *TINY], cases=cases) == 1


class _FakeClock:
    """time.perf_counter stand-in that only moves when a contestant 'runs'."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_row_arithmetic_with_a_fake_clock(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(T, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))

    def make(device, dtype):
        def ours():
            clock.now += 0.002
            return torch.ones(3)

        def ref():
            clock.now += 0.006
            return torch.ones(3) * 1.5
        return ours, ref

    case = Case("fake", "n", "forward", make, flops=4e6, bytes=1e6, rotate=False)
    ceil = Ceilings(copy_gbps=2.0, gemm_gflops=10.0, gemm_source="torch")
    s = Settings(repeats=5, warmup=1, min_time=0.0, budget=100.0)
    row = run_case(case, s, ceil, cache_bytes=1 << 20)
    assert row["pynn_ms"] == pytest.approx(2.0) and row["torch_ms"] == pytest.approx(6.0)
    assert row["speedup"] == pytest.approx(3.0)  # torch / pynn
    assert row["pynn_spread"] == 0.0 and row["repeats"] == 5
    assert row["pynn_gbps"] == pytest.approx(0.5) and row["pynn_gflops"] == pytest.approx(2.0)
    assert row["torch_gflops"] == pytest.approx(2 / 3)
    assert row["intensity"] == pytest.approx(4.0)
    assert row["pynn_frac_copy_bw"] == pytest.approx(0.25)
    assert row["pynn_frac_gemm"] == pytest.approx(0.2)
    # roof at intensity 4 FLOP/B: min(10 GFLOP/s, 4 * 2 GB/s) = 8 GFLOP/s
    assert row["pynn_frac_roofline"] == pytest.approx(2.0 / 8.0)
    assert row["max_abs_diff"] == pytest.approx(0.5)

    # FLOPs without a byte count: a rate, but no intensity, bandwidth or roofline fraction
    row = run_case(Case("fake", "n", "forward", make, flops=4e6, rotate=False), s, ceil, 1 << 20)
    assert row["pynn_gflops"] == pytest.approx(2.0) and row["pynn_frac_gemm"] == pytest.approx(0.2)
    assert all(math.isnan(row[k]) for k in ("intensity", "pynn_gbps", "pynn_frac_roofline"))

    # float64 moves twice the bytes of the float32 count; a callable count is taken as is
    assert case.bytes_for(torch.float64) == 2e6
    assert Case("c", "n", "m", make, bytes=lambda dt: 123.0).bytes_for(torch.float64) == 123.0


def test_slow_case_gets_fewer_repeats_but_never_below_three(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(T, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))

    def slow():
        clock.now += 1.0

    c = [T.Contestant("pynn", [slow]), T.Contestant("torch", [slow])]
    out = T.time_contestants(c, warmup=1, repeats=15, min_time=0.0, budget=5.0)
    assert len(out["pynn"].samples) == 3 and out["pynn"].inner == 1


def test_inputs_are_rotated_over_copies():
    calls = []

    def make(device, dtype):
        idx = len(calls)
        calls.append([0, 0])

        def ours():
            calls[idx][0] += 1

        def ref():
            calls[idx][1] += 1
        return ours, ref

    case = Case("rot", "n", "forward", make, bytes=1000.0)
    s = Settings(repeats=3, warmup=1, min_time=0.0, budget=10.0, max_copies=4)
    row = run_case(case, s, Ceilings(), cache_bytes=1 << 20)
    assert row["copies"] == 4 and len(calls) == 4
    assert all(p > 0 and t > 0 for p, t in calls)  # every copy timed on both sides

    assert copies_for(10 * 2**20, 2**20, 8, 1e12) == 1          # streams past the cache already
    assert copies_for(2**20, 4 * 2**20, 8, 1e12) == 8           # capped at max_copies
    assert copies_for(2**20, 4 * 2**20, 8, 3 * 2**20) == 3      # capped by memory
    assert copies_for(0, 4 * 2**20, 8, 1e12) == 1               # unknown size: no rotation
    no_rot = Case("rot", "n", "forward", make, bytes=1000.0, rotate=False)
    calls.clear()
    assert run_case(no_rot, s, Ceilings(), cache_bytes=1 << 20)["copies"] == 1


def test_charts_are_skipped_without_matplotlib(tmp_path, monkeypatch, capsys):
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)  # import now raises ImportError
    rc = main(["--out", str(tmp_path), *TINY], cases=tiny_cases()[:1])
    assert rc == 0
    assert _read_csv(tmp_path / "results.csv")[0]["status"] == "ok"
    assert "charts skipped: matplotlib is not installed" in (tmp_path / "results.md").read_text()
    assert not list(tmp_path.glob("*.png"))
    assert "charts skipped" in capsys.readouterr().out


def test_select_by_quick_and_patterns():
    cases = tiny_cases() + [Case("relu", "big", "forward", _fails_in_make, quick=False)]
    assert len(select(cases)) == 6
    assert len(select(cases, quick=True)) == 5
    assert [c.id for c in select(cases, only="relu/*/forward")] == ["relu/7x33/forward",
                                                                    "relu/big/forward"]
    assert [c.id for c in select(cases, quick=True, only="tanh,broken/call/*")] == [
        "tanh/5x3/forward", "broken/call/forward"]
    assert select(cases, only="nothing-matches") == []


def test_list_and_empty_selection(capsys):
    assert main(["--list", "--quick"], cases=tiny_cases()) == 0
    assert "relu/7x33/forward  [quick]" in capsys.readouterr().out
    assert main(["--only", "nothing-matches"], cases=tiny_cases()) == 2


def test_registered_cases_have_unique_ids_and_counts():
    cases = all_cases()
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    for c in cases:
        assert c.mode != "load", f"a case file failed to load: {c.group}"
        assert c.flops >= 0 and c.bytes_for(torch.float32) >= 0


def test_broken_case_file_becomes_an_error_row():
    row = run([_broken("conv", ImportError("cannot import name 'conv2d'"))],
              Settings(ceilings=False), log=lambda *_: None).rows[0]
    assert row["status"] == "error" and "cases/conv.py failed to load" in row["error"]
    assert "conv2d" in row["error"]


def test_time_limit_skips_the_remaining_cases():
    res = run(tiny_cases()[:2], Settings(ceilings=False, time_limit=0.0, repeats=3),
              log=lambda *_: None)
    assert [r["status"] for r in res.rows] == ["skipped", "skipped"]


def test_tf32_switches_are_set_and_restored():
    before = tf32_state()
    for enabled in (True, False):
        with tf32(enabled):
            state = tf32_state()
            assert all(v in (("tf32", True) if enabled else ("ieee", False)) for v in state), state
        assert tf32_state() == before


def test_machine_names_a_given_commit_over_the_trees_git(monkeypatch):
    """A tree copied to the GPU machine carries some other .git: the commit gpu_check.sh is
    given must be the one the benchmark's machine description records."""
    from pynn.bench import machine
    monkeypatch.delenv("PYNN_SOURCE_COMMIT", raising=False)
    own = machine.describe("cpu")["pynn_commit"]
    monkeypatch.setenv("PYNN_SOURCE_COMMIT", "0123456789abcdef0123")
    given = machine.describe("cpu")["pynn_commit"]
    assert given == "0123456789ab (given by PYNN_SOURCE_COMMIT)"
    assert given != own


def test_max_abs_diff_compares_only_like_outputs():
    a = torch.tensor([1.0, 2.0])
    assert T.max_abs_diff(a, a + 0.25) == pytest.approx(0.25)
    assert T.max_abs_diff((a, a), (a, a * 2)) == pytest.approx(2.0)
    assert math.isnan(T.max_abs_diff(None, None))
    assert math.isnan(T.max_abs_diff(a, torch.ones(3)))


# ---------------------------------------------------------------- network cases

def _tiny_net(device, dtype):
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).to(
        device=device, dtype=dtype)


def _batch(device, dtype):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(4, 5, generator=g, dtype=dtype).to(device),
            torch.randn(4, 2, generator=g, dtype=dtype).to(device))


def test_network_train_step_starts_equal_and_steps_both(device):
    built = {}

    def build(device, dtype):
        built["ours"] = _tiny_net(device, dtype)   # stands in for a model of pynn layers
        return built["ours"]

    def reference(device, dtype):
        built["ref"] = _tiny_net(device, dtype)    # fresh weights, overwritten from ours
        return built["ref"]

    losses = (TF.mse_loss, TF.mse_loss)
    ours_fn, ref_fn = make_network(build, reference, _batch, TRAIN_STEP, loss=losses)(
        device, torch.float64)
    w0 = built["ours"][0].weight.detach().clone()
    torch.testing.assert_close(built["ref"][0].weight, w0)
    l_ours, l_ref = ours_fn(), ref_fn()
    torch.testing.assert_close(l_ours, l_ref)
    assert not torch.equal(built["ours"][0].weight, w0)  # the optimizer stepped
    for p, q in zip(built["ours"].parameters(), built["ref"].parameters()):
        torch.testing.assert_close(p, q)
    l2 = ours_fn()
    assert l2.item() < l_ours.item()  # the same batch again: SGD lowered its loss


def test_network_inference_runs_in_eval_without_grad(device):
    nets = {}
    make = make_network(lambda d, t: nets.setdefault("o", _tiny_net(d, t)),
                        lambda d, t: nets.setdefault("r", _tiny_net(d, t)), _batch, INFERENCE)
    ours_fn, ref_fn = make(device, torch.float32)
    out = ours_fn()
    assert not out.requires_grad and not nets["o"].training
    torch.testing.assert_close(out, ref_fn())


def test_network_cases_describe_the_group_and_modes(tmp_path):
    cases = network_cases("tiny", "5x8x2-b4", build=_tiny_net, reference=_tiny_net,
                          batch=_batch, loss=(TF.mse_loss, TF.mse_loss), flops_forward=100.0,
                          quick=True)
    assert [c.id for c in cases] == ["network/tiny-5x8x2-b4/train_step",
                                     "network/tiny-5x8x2-b4/inference"]
    assert [c.flops for c in cases] == [300.0, 100.0]
    assert not any(c.rotate for c in cases)
    assert main(["--out", str(tmp_path), *TINY], cases=cases) == 0
    rows = _read_csv(tmp_path / "results.csv")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert float(rows[0]["max_abs_diff"]) < 1e-5  # the first losses agree
    with pytest.raises(NotImplementedError, match="pynn.functional has no no_such_loss"):
        make_network(_tiny_net, _tiny_net, _batch, TRAIN_STEP, loss="no_such_loss")(
            "cpu", torch.float32)
    with pytest.raises(ValueError, match="network mode"):
        make_network(_tiny_net, _tiny_net, _batch, "fit")


# ---------------------------------------------------------------- the real suite and GPU check

def test_cli_runs_a_registered_case(tmp_path):
    rc = main(["--quick", "--only", "relu/*/forward", "--out", str(tmp_path), *TINY])
    assert rc == 0
    rows = _read_csv(tmp_path / "results.csv")
    assert rows and all(r["status"] == "ok" and r["group"] == "relu" for r in rows)


def test_gpu_check_dry_run_reports_and_fails_on_test_failure(tmp_path):
    tests = tmp_path / "t"
    tests.mkdir()
    (tests / "test_probe.py").write_text("def test_ok():\n    pass\n\n"
                                         "def test_broken():\n    assert 1 == 2\n")
    # the script's own settings only, whatever the shell that runs pytest exports
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}
    env.update(PYTHON=sys.executable, GPU_CHECK_PYTEST_ARGS=f"{tests} -p no:cacheprovider",
               GPU_CHECK_XDIST="0", GPU_CHECK_COMMIT="abc1234", GPU_CHECK_SUFFIX="-probe",
               GPU_CHECK_BENCH_ARGS="--only relu/32x64x56x56/forward " + " ".join(TINY))
    # the in-place build when there is one (development), else the installed package (CI)
    if list((ROOT / "src" / "pynn").glob("_C*.so")):
        env["PYTHONPATH"] = str(ROOT / "src")
    proc = subprocess.run(["bash", str(ROOT / "tools/gpu_check.sh"), "--dry-run", "--skip-build",
                           "--report-dir", str(tmp_path / "rep")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    reports = list((tmp_path / "rep").glob("gpu-check-*-dry-run-probe.md"))
    assert len(reports) == 1, proc.stdout + proc.stderr
    text = reports[0].read_text()
    for needle in ("| tests | FAILED", "1 failed, 1 passed", "test_broken", "| benchmark | ok",
                   "relu/32x64x56x56/forward", "## Test output", "## Benchmark output",
                   "| torch |", "| nvcc |", "| pynn commit | abc1234 (given by GPU_CHECK_COMMIT) |"):
        assert needle in text, needle
    assert (tmp_path / "rep" / reports[0].stem / "results.csv").exists()


# ---- benchmarks/ab.py: two builds in one process ----

def _ab(*args):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ab.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_ab_runs_two_builds_and_torch_side_by_side():
    """The build under test against itself: both copies import and run, and each reports its
    times, the per-round ratio and speedups (a ratio far from 1 would mean the copies are not
    timed alike; the bound is loose because no timing is asserted)."""
    build = Path(F.__file__).resolve().parents[1]  # the folder that holds this pynn
    out = _ab(build, build, "--cases", "conv1x1", "--rounds", "2", "--threads", "1")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [s for s in out.stdout.splitlines() if s.startswith("conv1x1_28")]
    assert len(lines) == 1, out.stdout
    fields = lines[0].split()
    ratio = float(fields[fields.index("new/old") + 1])
    assert 0.2 < ratio < 5 and "speedup old" in lines[0] and "(new faster" in lines[0]


def test_ab_gradient_cases_run_on_both_libraries():
    """The cases that time a backward (an input gradient, a weight gradient, an LSTM's whole
    backward, a linear layer's three gradients) build and run with pynn's copies and with torch alike."""
    build = Path(F.__file__).resolve().parents[1]
    names = ("gx3x3s2_14", "gw3x3s2_14", "lstm_128_train", "linear_32_train")
    out = _ab(build, build, "--cases", ",".join(names), "--rounds", "1", "--threads", "1")
    assert out.returncode == 0, out.stderr[-2000:]
    for name in names:
        lines = [s for s in out.stdout.splitlines() if s.split()[:1] == [name]]
        assert len(lines) == 1, out.stdout
        fields = lines[0].split()
        assert float(fields[fields.index("torch") + 1]) > 0, lines[0]


def test_ab_rejects_a_folder_without_a_build_and_an_unknown_case(tmp_path):
    out = _ab(tmp_path, tmp_path)
    assert out.returncode != 0 and "holds no built pynn package" in out.stderr
    build = Path(F.__file__).resolve().parents[1]
    out = _ab(build, build, "--cases", "nosuchcase")
    assert out.returncode != 0 and "no case starts with 'nosuchcase'" in out.stderr


# ---- benchmarks/cell_floor.py: the LSTMCell loop's cost outside the cell ----

def _cell_floor_module():
    spec = importlib.util.spec_from_file_location("cell_floor",
                                                  ROOT / "benchmarks" / "cell_floor.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cell_floor_cell_gives_autograd_the_work_of_a_real_cell():
    """The floor is only a floor if autograd does for the no-math cell what it does for a real
    one: a gradient of every input's shape reaches x and all four parameters, and the outputs
    have LSTMCell's shapes."""
    mod = _cell_floor_module()
    cells = mod.make_cells(5, 7)
    x = torch.randn(3, 2, 5, requires_grad=True)
    h0 = torch.zeros(2, 7)
    floor, real = cells["floor"], cells["torch"]
    for cell in (floor, real):
        h, c = cell(x[0], (h0, h0))
        assert h.shape == c.shape == (2, 7)
    mod.loop(floor, x, h0, backward=True)()
    assert x.grad is not None and x.grad.shape == x.shape
    for p in floor.ref.parameters():
        assert p.grad is not None and p.grad.shape == p.shape
    with torch.no_grad():
        h, c = floor(x[0], (h0, h0))
    assert h.shape == (2, 7) and h.grad_fn is None


def test_cell_floor_runs_and_reports_every_loop():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cell_floor.py"), "--steps",
                          "2", "--rounds", "1", "--threads", "1"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [s for s in out.stdout.splitlines() if s.startswith("| T2 ")]
    assert len(rows) == 4, out.stdout
    for row in rows:
        cells = [s.strip() for s in row.strip("|").split("|")]
        assert all(float(v) > 0 for v in (cells[2], cells[3], cells[4])), row
