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
from livepuppet.runtime.engines.openvino import default_precision
from livepuppet.modelfolder.manifest import read_manifest



def measure_peak_openvino(precision: str, threads: int | None = None, repeats: int = 7,
                          shape: tuple[int, int, int, int] = PEAK_SHAPE) -> dict[str, Any] | None:
    """GFLOP/s of one 3x3 convolution on OpenVINO's CPU plugin at ``precision``; None without OpenVINO.

    ``int8``: the convolution with its input and weights quantised (FakeQuantize, weights per output
    channel), as ``convert --fast`` makes them, its float parts at this CPU's float precision. The
    time is the whole call, as a frame's convolutions are timed; ``kernel_gflops`` is the
    convolution's own, from OpenVINO's per-op counters (without the conversions in and out, which
    on AMX take longer than the convolution itself)."""
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        return None
    h, w, cin, cout = shape
    rng = np.random.default_rng(0)
    x = ops.parameter([1, cin, h, w], np.float32, name="x")
    weights = (rng.standard_normal((cout, cin, 3, 3)) * (2 / (9 * cin)) ** 0.5).astype(np.float32)
    source, kernel = x, ops.constant(weights)
    if precision == "int8":
        source = _fake_quantize(ops, x, np.float32(0), np.float32(1), 256)
        limit = np.abs(weights).reshape(cout, -1).max(axis=1).reshape(cout, 1, 1, 1)
        kernel = _fake_quantize(ops, kernel, -limit, limit, 255)
    model = ov.Model([ops.convolution(source, kernel, [1, 1], [1, 1], [1, 1], [1, 1])], [x])
    hint = default_precision() if precision == "int8" else precision
    config = {"INFERENCE_PRECISION_HINT": OV_HINTS[hint], "PERFORMANCE_HINT": "LATENCY",
              "ENABLE_CPU_PINNING": False, "PERF_COUNT": True}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    data = rng.uniform(0, 1, (1, cin, h, w)).astype(np.float32)
    request.infer({0: data})
    times, kernel_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        request.infer({0: data})
        times.append(time.perf_counter() - start)
        kernel_times.append(sum(p.real_time.total_seconds() for p in request.get_profiling_info()
                                if p.node_type == "Convolution"))
    gflop = 2 * 9 * cin * cout * h * w / 1e9
    kernel_best = min(t for t in kernel_times) or min(times)
    return {"gflops": gflop / min(times), "gflop": gflop, "best_ms": min(times) * 1e3,
            "median_ms": statistics.median(times) * 1e3, "kernel_gflops": gflop / kernel_best,
            "threads": threads, "engine": "openvino", "precision": precision,
            "shape": f"1x{h}x{w}x{cin} -> {cout}, 3x3"}


def _fake_quantize(ops, value, low, high, levels: int):
    low, high = ops.constant(np.asarray(low, np.float32)), ops.constant(np.asarray(high, np.float32))
    return ops.fake_quantize(value, low, high, low, high, levels)


def int8_floor_ms(manifest, gflop: dict[str, float], peak: dict[str, dict[str, Any]]) -> float | None:
    """The int8 row's floor: its int8 convolutions at the int8 peak, the rest at the float peak.

    The int8 work is what ``convert --fast``'s plan left at int8 (from the
    folder's manifest), plus the keypoint detector where it runs at int8."""
    fast = manifest.data.get("fast")
    try:
        int8 = float(fast["plan"]["int8_gflop"])
        float_peak = peak[fast["float_precision"]]["gflops"]
        int8_peak = peak["int8"]["gflops"]
    except (KeyError, TypeError, ValueError):
        return None
    if auto.fast_kp_precision(manifest) == "int8":
        int8 += gflop["kp_detector"]
    int8 = min(max(int8, 0.0), gflop["per_frame"])
    return (int8 / int8_peak + (gflop["per_frame"] - int8) / float_peak) * 1e3


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
            device: str = "cpu") -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """One row per candidate (timings by ``bench.measure``, error against fp32, floor at its precision),
    and the peaks measured for the floors."""
    manifest = read_manifest(folder)
    gflop = cfgmod.conv_gflop(cfgmod.from_dict(manifest.config, str(folder)))
    rows, reference = [], None
    for candidate in auto.candidates(manifest, auto.cpumod.current(), exact):
        engine = auto.open_candidate(manifest, candidate, threads, device, cache=False)
        frames, _, _ = auto.measure(engine)
        reference = frames if reference is None else reference
        mean, max_ = auto.levels(frames, reference)
        result = measure(folder, threads=threads, repeats=repeats, peak=False, engine_obj=engine)
        rows.append({"candidate": candidate, "result": result, "mean": mean, "max": max_})
        del engine
    precisions = {r["candidate"].precision for r in rows}
    if "int8" in precisions:  # its floor: int8 work at the int8 peak, the rest at the float one
        precisions |= {default_precision()}
    peak = peaks(precisions, threads)
    for row in rows:
        precision = row["candidate"].precision
        p = peak.get(precision)
        floor = int8_floor_ms(manifest, gflop, peak) if precision == "int8" else gflop["per_frame"] / p["gflops"] * 1e3 if p else None
        if floor:
            row["peak"] = p
            row["floor_ms"] = floor
            row["floor_ratio"] = row["result"]["per_frame_ms"] / row["floor_ms"]
        row["within_budget"] = auto.within_budget(row["mean"], row["max"])
    fastest = min((r for r in rows if r["within_budget"]), key=lambda r: r["result"]["per_frame_ms"])
    fastest["auto"] = True
    return rows, peak


def render(rows: list[dict[str, Any]], console: Console, peak: dict[str, dict[str, Any]] | None = None) -> None:
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
    for precision, p in sorted((peak or {}).items()):
        kernel = f"; the convolution alone {p['kernel_gflops']:.0f}" if p.get("kernel_gflops") else ""
        console.print(f"peak {precision}: {p['gflops']:.0f} GFLOP/s ({p['engine']}, {p['shape']}, best of its "
                      f"runs{kernel})")
    for row in rows:
        if row["candidate"].precision == "int8":
            console.print(f"{row['candidate'].label} (--fast): {row['mean']:.2f} mean / {row['max']:.1f} max levels "
                          "from float32, which is the original FOMM to 1e-4 (tests/reference); "
                          + (f"{row['floor_ratio']:.2f}x its floor (its int8 work at the int8 peak, the rest at "
                             "the float one)" if "floor_ratio" in row else "no floor (no --fast plan recorded)"))
