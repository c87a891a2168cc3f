"""Writes a run's results: results.csv, results.md, machine.json and, with matplotlib, charts.

matplotlib is optional here (the GPU image may lack it): without it the CSV and markdown are
still written and results.md says the charts were skipped.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from .runner import COLUMNS, RunResult


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def _csv_value(v):
    if isinstance(v, float):
        return f"{v:.6g}" if v == v else ""
    return v


def write_csv(result: RunResult, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for row in result.rows:
            w.writerow({k: _csv_value(row.get(k, "")) for k in COLUMNS})


def geomean(xs) -> float:
    xs = [x for x in xs if _num(x) and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


# ---------------------------------------------------------------- markdown

def _f(v, fmt="{:.3g}", empty="") -> str:
    return fmt.format(v) if _num(v) else empty


def _ms(v, spread) -> str:
    if not _num(v):
        return ""
    return f"{v:.4g} ±{100 * spread:.0f}%" if _num(spread) else f"{v:.4g}"


def _pct(v) -> str:
    return f"{100 * v:.1f}%" if _num(v) else ""


def _table(header: list, rows: list) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def machine_lines(result: RunResult) -> list[str]:
    m, c, s = result.machine, result.ceilings, result.settings
    rows = [("date", m["date"]),
            ("CPU", f"{m['cpu']} ({m['cpu_cores']} cores, {m['cpu_cores_usable']} usable)"),
            ("threads", f"torch {m['torch_threads']}, pynn {m['pynn_threads']}")]
    if s.device == "cuda":
        rows.append(("GPU", f"{m['gpu']} ({m['gpu_memory']}, {m['gpu_sms']} SMs, "
                            f"compute capability {m['gpu_compute_capability']}, L2 {m['gpu_l2']})"))
        rows.append(("driver / CUDA", f"driver {m['gpu_driver']}, torch CUDA {m['torch_cuda']}, "
                                      f"cuDNN {m['cudnn']}"))
    pynn_build = m["pynn"] + (f" ({m['pynn_commit']})" if m.get("pynn_commit") else "")
    rows += [("versions", f"pynn {pynn_build}, torch {m['torch']}, python {m['python']}"),
             ("pynn build", m["pynn_cxx"] + (f"; CUDA {m['pynn_cuda_build']}"
                                             if m.get("pynn_cuda_build") else "; no CUDA kernels")),
             ("OS", m["os"])]
    if _num(c.copy_gbps):
        rows.append(("copy ceiling", f"{c.copy_gbps:.1f} GB/s ({c.detail.get('copy', '')}, "
                                     "bytes read + written)"))
        gemm = f"{c.gemm_gflops:.1f} GFLOP/s, {c.gemm_source} ({c.detail.get('gemm', '')})"
        if _num(c.gemm_tf32_gflops):
            gemm += f"; torch with TF32: {c.gemm_tf32_gflops:.1f} GFLOP/s"
        rows.append(("GEMM ceiling", gemm))
    rt = sorted(r["core_rt_ns"] for r in result.rows if _num(r.get("core_rt_ns")))
    if rt:
        rows.append(("core round trip", f"{rt[len(rt) // 2]:.0f} ns median before a case, "
                                        f"{rt[0]:.0f}-{rt[-1]:.0f} ns range (a cache line "
                                        "between two threads and back)"))
    preset = "quick" if s.quick else "full"
    rows.append(("method", f"{preset}: median of up to {s.resolved('repeats')} interleaved "
                           f"samples of >= {1e3 * s.resolved('min_time'):g} ms each after "
                           f"{s.resolved('warmup')} warm-up call(s) per input copy; inputs "
                           f"rotated over up to {s.max_copies} copies"
                           + ("; CUDA events after a synchronise" if s.device == "cuda" else "")))
    rows.append(("run time", f"{result.seconds:.0f} s"))
    return _table(["", ""], rows)


# A case whose round trip before it was this many times the run's lowest ran with the threads
# on distant cores (on a virtual machine the host may move them at any time).
FAR_CORES = 3.0


def _far_core_notes(rows: list[dict]) -> list[str]:
    rt = [r["core_rt_ns"] for r in rows if _num(r.get("core_rt_ns"))]
    if not rt:
        return []
    floor = min(rt)
    far = [r for r in rows if _num(r.get("core_rt_ns")) and r["core_rt_ns"] > FAR_CORES * floor]
    if not far:
        return []
    names = ", ".join(f"{r['case']} ({r['core_rt_ns']:.0f} ns)" for r in far)
    return [f"{len(far)} case(s) started with a core round trip over {FAR_CORES:g}x the run's "
            f"lowest ({floor:.0f} ns), i.e. with the threads on distant cores, where kernels "
            f"that exchange data between threads at every step slow down: {names}. Rerun them "
            "before comparing."]


def write_markdown(result: RunResult, path: Path, chart_notes: list[str]) -> None:
    s, rows = result.settings, result.rows
    dtype = str(s.dtype).replace("torch.", "")
    cuda = s.device == "cuda"
    ok = [r for r in rows if r["status"] == "ok"]
    lines = [f"# pynn vs torch: {s.device}, {dtype}", ""]
    lines += machine_lines(result)
    lines += ["", "speedup = torch time / pynn time (above 1: pynn is faster). "
              + ("On CUDA `torch` is strict float32 (TF32 off for matmul and cuDNN), the "
                 "like-for-like baseline; `TF32` is torch with TF32 on. " if cuda else "")
              + "Times are milliseconds per call, ± the spread (max - min) / median. "
              "% roofline = achieved GFLOP/s over min(GEMM ceiling, intensity x copy ceiling).",
              ""]

    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)

    lines += ["## Summary", ""]
    head = ["op", "cases", "ok", "geomean speedup", "min", "max"]
    if cuda and any(_num(r["speedup_tf32"]) for r in ok):
        head.append("geomean vs TF32")
    body = []
    for g, rs in list(groups.items()) + [("**all**", rows)]:
        good = [r for r in rs if r["status"] == "ok"]
        sp = [r["speedup"] for r in good if _num(r["speedup"])]
        line = [g, len(rs), len(good), _f(geomean(sp), "{:.2f}x"),
                _f(min(sp) if sp else None, "{:.2f}x"), _f(max(sp) if sp else None, "{:.2f}x")]
        if len(head) > 6:
            line.append(_f(geomean([r["speedup_tf32"] for r in good]), "{:.2f}x"))
        body.append(line)
    lines += _table(head, body) + [""]

    lines += ["## Results by op", ""]
    head = ["shape", "mode", "pynn ms", "torch ms", "speedup"]
    if cuda:
        head += ["torch TF32 ms", "speedup vs TF32"]
    head += ["pynn GB/s", "pynn GFLOP/s", "% copy BW", "% GEMM", "% roofline"]
    if cuda:
        head += ["peak MiB pynn / torch"]
    for g, rs in groups.items():
        good = [r for r in rs if r["status"] == "ok"]
        if not good:
            continue
        lines += [f"### {g}", ""]
        body = []
        for r in good:
            line = [r["name"], r["mode"], _ms(r["pynn_ms"], r["pynn_spread"]),
                    _ms(r["torch_ms"], r["torch_spread"]), _f(r["speedup"], "{:.2f}x")]
            if cuda:
                line += [_ms(r["torch_tf32_ms"], r["torch_tf32_spread"]),
                         _f(r["speedup_tf32"], "{:.2f}x")]
            line += [_f(r["pynn_gbps"], "{:.1f}"), _f(r["pynn_gflops"], "{:.1f}"),
                     _pct(r["pynn_frac_copy_bw"]), _pct(r["pynn_frac_gemm"]),
                     _pct(r["pynn_frac_roofline"])]
            if cuda:
                line.append(f"{_f(r['pynn_peak_mib'], '{:.1f}')} / {_f(r['torch_peak_mib'], '{:.1f}')}")
            body.append(line)
        lines += _table(head, body) + [""]

    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        lines += ["## Errors and skipped cases", ""]
        lines += _table(["case", "status", "message"], [[r["case"], r["status"], r["error"]]
                                                         for r in bad]) + [""]
    notes = list(result.notes) + list(chart_notes) + _far_core_notes(rows)
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------- charts

def _colors(groups):
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return {g: cmap(i % 20) for i, g in enumerate(groups)}


def speedup_chart(result: RunResult, path: Path) -> bool:
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    ok = [r for r in result.rows if r["status"] == "ok" and _num(r["speedup"]) and r["speedup"] > 0]
    if not ok:
        return False
    tf32 = [r for r in ok if _num(r["speedup_tf32"]) and r["speedup_tf32"] > 0]
    colors = _colors(dict.fromkeys(r["group"] for r in ok))
    fig = Figure(figsize=(10, 1.2 + 0.28 * len(ok)), layout="constrained")
    ax = fig.add_subplot()
    ys = list(range(len(ok)))[::-1]
    h = 0.4 if tf32 else 0.8
    # Bars grow from the 1x line: right when pynn is faster, left when it is slower.
    sp = [r["speedup"] for r in ok]
    ax.barh([y + (h / 2 if tf32 else 0) for y in ys], [v - 1 for v in sp], left=1, height=h,
            color=[colors[r["group"]] for r in ok], label="vs torch (strict fp32)" if tf32 else None)
    if tf32:
        by_id = {r["case"]: r for r in tf32}
        pts = [(y - h / 2, by_id[r["case"]]["speedup_tf32"], colors[r["group"]])
               for y, r in zip(ys, ok) if r["case"] in by_id]
        ax.barh([p[0] for p in pts], [p[1] - 1 for p in pts], left=1, height=h,
                color=[p[2] for p in pts], hatch="//", alpha=0.6, label="vs torch with TF32")
        sp += [p[1] for p in pts]
        ax.legend(loc="lower right")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    lo, hi = min(sp + [1.0]) / 1.3, max(sp + [1.0]) * 1.3
    ax.set_xlim(lo, hi)
    ticks = [m * 10.0 ** e for e in range(-4, 5) for m in (1, 2, 5) if lo <= m * 10.0 ** e <= hi]
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(ys, [r["case"] for r in ok], fontsize=7)
    ax.set_ylim(-0.6, len(ok) - 0.4)
    ax.set_xlabel("speedup = torch time / pynn time (log scale; right of 1x: pynn is faster)")
    dtype = str(result.settings.dtype).replace("torch.", "")
    ax.set_title(f"pynn vs torch, {result.settings.device} {dtype}")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.savefig(path, dpi=110)
    return True


def roofline_chart(result: RunResult, path: Path) -> bool:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    c = result.ceilings
    pts = [r for r in result.rows if r["status"] == "ok" and _num(r["intensity"])
           and r["intensity"] > 0]
    if not pts or not (_num(c.copy_gbps) and _num(c.gemm_gflops)):
        return False
    colors = _colors(dict.fromkeys(r["group"] for r in pts))
    fig = Figure(figsize=(9, 6.5), layout="constrained")
    ax = fig.add_subplot()
    ai = [r["intensity"] for r in pts]
    lo, hi = min(ai + [c.gemm_gflops / c.copy_gbps]) / 4, max(ai + [c.gemm_gflops / c.copy_gbps]) * 4
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(xs, [min(c.gemm_gflops, x * c.copy_gbps) for x in xs], color="black",
            label=f"roof: copy {c.copy_gbps:.0f} GB/s, GEMM {c.gemm_gflops:.0f} GFLOP/s")
    if _num(c.gemm_tf32_gflops):
        ax.plot(xs, [min(c.gemm_tf32_gflops, x * c.copy_gbps) for x in xs], color="gray",
                linestyle="--", label=f"torch TF32 GEMM {c.gemm_tf32_gflops:.0f} GFLOP/s")
    for r in pts:
        col = colors[r["group"]]
        ax.plot([r["intensity"]] * 2, [r["torch_gflops"], r["pynn_gflops"]], color=col,
                linewidth=0.6, alpha=0.5)
        ax.scatter(r["intensity"], r["pynn_gflops"], color=col, marker="o", s=28, zorder=3)
        ax.scatter(r["intensity"], r["torch_gflops"], color=col, marker="x", s=24, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved GFLOP/s")
    dtype = str(result.settings.dtype).replace("torch.", "")
    ax.set_title(f"roofline, {result.settings.device} {dtype}: pynn (o) and torch (x)")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color=col, marker="o", linestyle="", label=g)
                for g, col in colors.items()]
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.grid(which="both", alpha=0.3)
    fig.savefig(path, dpi=110)
    return True


def write_charts(result: RunResult, out_dir: Path) -> tuple[list[Path], list[str]]:
    """(written chart paths, notes for results.md)."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401 - the Agg canvas, no pyplot state
    except ImportError:
        return [], ["charts skipped: matplotlib is not installed"]
    written, notes = [], []
    for name, fn in (("speedup.png", speedup_chart), ("roofline.png", roofline_chart)):
        try:
            if fn(result, out_dir / name):
                written.append(out_dir / name)
            else:
                notes.append(f"{name} not drawn: no successful case with the data it needs")
        except Exception as exc:  # a chart must never cost the tables
            notes.append(f"{name} failed: {type(exc).__name__}: {exc}")
    return written, notes


def _json_safe(x):
    if isinstance(x, float) and x != x:
        return None  # JSON has no NaN
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_all(result: RunResult, out_dir) -> dict:
    """Writes every output into out_dir; returns {"csv":..., "md":..., "charts": [...]}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    charts, chart_notes = write_charts(result, out_dir)
    write_csv(result, out_dir / "results.csv")
    write_markdown(result, out_dir / "results.md", chart_notes)
    meta = {"machine": result.machine, "ceilings": result.ceilings.as_dict(),
            "settings": {k: (str(v) if k == "dtype" else v)
                         for k, v in vars(result.settings).items()},
            "seconds": result.seconds, "notes": result.notes + chart_notes}
    (out_dir / "machine.json").write_text(json.dumps(_json_safe(meta), indent=2, default=str))
    return {"csv": out_dir / "results.csv", "md": out_dir / "results.md", "charts": charts,
            "notes": chart_notes}
