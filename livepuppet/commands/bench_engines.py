"""``livepuppet bench`` across engines: every engine and precision that can run a folder here, side by side.

Each row is one :mod:`~livepuppet.runtime.engines.auto` candidate, timed by
:func:`livepuppet.commands.bench.measure` and checked on the bundled portrait's head
motion against float32 (levels of 8 bits). Each is set against the floor at its
own precision: the frame's convolutions at the speed one large 3x3 convolution
reaches on this machine at that precision (float32 on XNNPACK or oneDNN,
whichever is faster; bfloat16 and float16 on oneDNN).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from livepuppet.fomm import config as cfgmod
from livepuppet.commands.bench import PEAK_SHAPE, measure, measure_peak
from livepuppet.runtime.engines import auto
from livepuppet.runtime.engines.openvino import PRECISIONS as OV_HINTS
from livepuppet.modelfolder.manifest import read_manifest



def measure_peak_openvino(precision: str, threads: int | None = None, repeats: int = 7,
                          shape: tuple[int, int, int, int] = PEAK_SHAPE) -> dict[str, Any] | None:
    """GFLOP/s of one 3x3 convolution on OpenVINO's CPU plugin at ``precision``; None without OpenVINO."""
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        return None
    h, w, cin, cout = shape
    rng = np.random.default_rng(0)
    x = ops.parameter([1, cin, h, w], np.float32, name="x")
    kernel = ops.constant((rng.standard_normal((cout, cin, 3, 3)) * (2 / (9 * cin)) ** 0.5).astype(np.float32))
    model = ov.Model([ops.convolution(x, kernel, [1, 1], [1, 1], [1, 1], [1, 1])], [x])
    config = {"INFERENCE_PRECISION_HINT": OV_HINTS[precision], "PERFORMANCE_HINT": "LATENCY",
              "ENABLE_CPU_PINNING": False}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    data = rng.uniform(0, 1, (1, cin, h, w)).astype(np.float32)
    request.infer({0: data})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        request.infer({0: data})
        times.append(time.perf_counter() - start)
    gflop = 2 * 9 * cin * cout * h * w / 1e9
    return {"gflops": gflop / min(times), "gflop": gflop, "best_ms": min(times) * 1e3,
            "median_ms": statistics.median(times) * 1e3, "threads": threads, "engine": "openvino",
            "precision": precision, "shape": f"1x{h}x{w}x{cin} -> {cout}, 3x3"}


def peaks(precisions: set[str], threads: int | None) -> dict[str, dict[str, Any]]:
    """The peak at each precision asked for: float32 is the better of XNNPACK and oneDNN."""
    out = {}
    for precision in sorted(precisions):
        found = [p for p in [measure_peak_openvino(precision, threads)] if p]
        if precision == "fp32":
            found.append({**measure_peak(threads), "engine": "tflite", "precision": "fp32"})
        if found:
            out[precision] = max(found, key=lambda p: p["gflops"])
    return out


def compare(folder: str | Path, threads: int | None = None, repeats: int = 5, exact: bool = False,
            device: str = "cpu") -> list[dict[str, Any]]:
    """One row per candidate: timings (``bench.measure``), error against fp32, floor at its precision."""
    manifest = read_manifest(folder)
    gflop = cfgmod.conv_gflop(cfgmod.from_dict(manifest.config, str(folder)))["per_frame"]
    rows, reference = [], None
    for candidate in auto.candidates(manifest, auto.cpumod.current(), exact, device):
        engine = auto.open_candidate(manifest, candidate, threads, device, cache=False)
        frames, _, _ = auto.measure(engine)
        reference = frames if reference is None else reference
        mean, max_ = auto.levels(frames, reference)
        result = measure(folder, threads=threads, repeats=repeats, peak=False, engine_obj=engine)
        rows.append({"candidate": candidate, "result": result, "mean": mean, "max": max_})
        del engine
    # int8 has no floor here: its convolutions run at int8 and its kept layers at bf16; a GPU's is not the CPU's
    on_cpu = [r for r in rows if not (r["candidate"].provider and auto.onnx_provider(r["candidate"].provider).gpu)]
    peak = peaks({r["candidate"].precision for r in on_cpu} & set(OV_HINTS), threads)
    for row in rows:
        p = peak.get(row["candidate"].precision) if row in on_cpu else None
        if p:
            row["peak"] = p
            row["floor_ms"] = gflop / p["gflops"] * 1e3
            row["floor_ratio"] = row["result"]["per_frame_ms"] / row["floor_ms"]
        row["within_budget"] = auto.within_budget(row["mean"], row["max"])
    fastest = min((r for r in rows if r["within_budget"]), key=lambda r: r["result"]["per_frame_ms"])
    fastest["auto"] = True
    return rows


def render(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="every engine here (auto picks the fastest within "
                        f"{auto.BUDGET['mean']} mean / {auto.BUDGET['max']:g} max levels of fp32)")
    for col in ("engine", "ms/frame", "fps", "generation ms", "keypoints ms", "floor ms", "x floor",
                "levels from fp32 (mean / max)", ""):
        table.add_column(col, justify="left" if col in ("engine", "") else "right", no_wrap=True)
    for row in rows:
        r, stages = row["result"], row["result"]["stages"]
        table.add_row(row["candidate"].label, f"{r['per_frame_ms']:.1f}", f"{r['fps']:.1f}",
                      f"{stages['generation']['ms_per_frame']:.1f}", f"{stages['keypoint_detection']['ms_per_frame']:.1f}",
                      f"{row['floor_ms']:.0f}" if "floor_ms" in row else "-",
                      f"{row['floor_ratio']:.2f}" if "floor_ratio" in row else "-",
                      f"{row['mean']:.2f} / {row['max']:.1f}",
                      "[bold]auto[/]" if row.get("auto") else ("" if row["within_budget"] else "over budget"))
    console.print(table)
    for precision, p in sorted({row["candidate"].precision: row["peak"] for row in rows if "peak" in row}.items()):
        console.print(f"peak {precision}: {p['gflops']:.0f} GFLOP/s ({p['engine']}, {p['shape']}, best of its runs)")
