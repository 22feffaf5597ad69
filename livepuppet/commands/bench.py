"""``livepuppet bench``: what each stage of the model costs on this machine, for every engine that can run it.

The model is ``--model``, else the default model when it has been converted,
else a vox-256 model with random weights built in a temporary folder (so
anyone can run it). Each engine and precision :mod:`livepuppet.runtime.plan`
offers here (or the one ``--engine`` names) animates the bundled face
(:mod:`livepuppet.runtime.timing`): its stages are timed, its frames compared
with float32's in 8-bit levels, and its frame set against the *floor*, the
time the frame's convolutions need at this machine's measured peak
(:mod:`livepuppet.runtime.peak`) at the precision it computes at. A fraction
of the floor is only stated when no other process competed for the CPU.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from livepuppet.commands.options import BenchOptions
from livepuppet import __version__, outputs
from livepuppet.fomm import config as cfgmod
from livepuppet.fomm.config import ModelConfig
from livepuppet.errors import LivepuppetError
from livepuppet.modelfolder.read import read_folder
from livepuppet.modelfolder.schema import ModelFolder
from livepuppet.runtime import cpu as cpumod
from livepuppet.runtime import peak, timing
from livepuppet.runtime.engines import open_plan
from livepuppet.runtime.plan import RUNTIME_PACKAGES, Machine, Plan, Request, candidates, plan

# bench's stage -> (label, how often it runs, the timing stage)
STAGES: dict[str, tuple[str, str, str]] = {
    "keypoint_detection": ("keypoint detection", "per frame", "keypoints"),
    "keypoint_processing": ("keypoint processing", "per frame", "process"),
    "generation": ("generation", "per frame", "generate"),
    "source_encoding": ("source encoding", "per source", "source"),
}
QUIET_SHARE = 0.10  # others' share of the CPU above which timings are not set against the floor
BENCH_FRAMES = 6


def machine_info() -> dict[str, Any]:
    """CPU, cores, load, OS and library versions, read without importing TensorFlow."""
    cpu = cpumod.current()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {"cpu": cpu.name, "cores": os.cpu_count() or 1, "usable_cores": cpumod.usable_cores(),
            "simd": cpu.simd, "os": platform.platform(), "python": platform.python_version(),
            **{name: _version(package) for name, package in
               (("tensorflow", "tensorflow"), ("litert", "ai-edge-litert"), ("openvino", "openvino"))},
            "onnxruntime": next((v for v in map(_version, RUNTIME_PACKAGES["onnx"]) if v), None),
            "numpy": np.__version__, "livepuppet": __version__, "load_average": load}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def build_random_model(out: Path, cfg: ModelConfig | None = None, *, precision: str = "fp32",
                       batch: int | None = 1, seed: int = 0, console: Console | None = None,
                       targets: tuple[str, ...] | None = None) -> Path:
    """Convert a model with random weights (:func:`livepuppet.fomm.random_weights.random_state`) into ``out``.

    ``cfg`` defaults to the vox-256 architecture. Needs TensorFlow (it converts).
    """
    from livepuppet.conversion.export import build
    from livepuppet.conversion.targets import DEFAULT_TARGETS
    from livepuppet.fomm.checkpoint import Checkpoint
    from livepuppet.fomm.random_weights import random_state

    cfg = cfg or cfgmod.preset("vox")
    cfg.validate_frame_shape()
    generator, kp_detector = random_state(cfg, seed)
    h, w = cfg.frame_shape
    checkpoint = Checkpoint(generator, kp_detector, Path(f"random-{w}x{h}-seed{seed}"), sha256="random")
    build(checkpoint, cfg, Path(out), targets=targets or DEFAULT_TARGETS, precision=precision, batch=batch,
          console=console or Console(stderr=True))
    return Path(out)


def _stages(measured: timing.Measured, gflop: dict[str, float], batch: int) -> dict[str, dict[str, Any]]:
    work = {"keypoint_detection": gflop["kp_detector"] * batch, "keypoint_processing": 0.0,
            "generation": (gflop["dense_motion"] + gflop["generator"]) * batch,
            "source_encoding": gflop["source_encoder"] + gflop["kp_detector"]}
    out = {}
    for name, (label, when, stage) in STAGES.items():
        ms = measured.timing.stages_ms[stage]
        out[name] = {"label": label, "when": when, "ms": ms,
                     "ms_per_frame": ms / batch if when == "per frame" else None,
                     "gflop": work[name], "gflops": work[name] / ms * 1e3 if work[name] and ms else None}
    return out


def _row(measured: timing.Measured, gflop: float, peaks: dict[str, dict], quiet: bool,
         folder: ModelFolder) -> dict[str, Any]:
    """One engine's line: its speed, its error against float32, and its floor at its precision."""
    p = peaks.get(measured.plan.precision)
    floor_ms = gflop / p["gflops"] * 1e3 if p else None
    if measured.plan.precision == "int8":
        floor_ms = int8_floor_ms(folder, measured.plan, gflop, peaks)
    per_frame = measured.timing.per_frame_ms
    return {"engine": measured.label, "per_frame_ms": per_frame, "fps": 1e3 / per_frame,
            "stages_ms": dict(measured.timing.stages_ms), "mean": measured.mean, "max": measured.max,
            "within_budget": measured.within_budget, "floor_ms": floor_ms,
            "floor_ratio": per_frame / floor_ms if floor_ms and quiet else None}


def int8_gflop(folder: ModelFolder, chosen: Plan) -> float:
    """The frame's int8 work: the convolutions of the plan's int8 files that run at int8 (``convert --fast``'s
    plan keeps some in float), read from the files themselves."""
    import openvino as ov

    from livepuppet.conversion.int8_graph import groups

    core = ov.Core()
    return sum(group.gflop for step in chosen.steps.values() if step.variant.precision == "int8"
               for group in groups(core.read_model(str(folder.file(step.variant)))))


def int8_floor_ms(folder: ModelFolder, chosen: Plan, gflop: float, peaks: dict[str, dict]) -> float | None:
    """An int8 plan's floor: its int8 work at the int8 peak, the rest of the frame at its float precision's."""
    compute = chosen.steps["generator"].compute
    if "int8" not in peaks or compute not in peaks:
        return None
    int8 = min(int8_gflop(folder, chosen), gflop)
    return (int8 / peaks["int8"]["gflops"] + (gflop - int8) / peaks[compute]["gflops"]) * 1e3


def peak_precisions(plans: list[Plan]) -> set[str]:
    """The peaks the plans' floors need: each plan's precision, and an int8 plan's float one."""
    return {p.precision for p in plans} | {p.steps["generator"].compute for p in plans if p.precision == "int8"}


def summarise(folder: ModelFolder, results: list[timing.Measured], peaks: dict[str, dict], quiet: bool,
              batch: int, threads: int, reference_is_fp32: bool) -> dict[str, Any]:
    """The JSON-ready result: every engine's row, and the chosen one (auto's pick, or the one asked for)."""
    gflop = cfgmod.conv_gflop(folder.config)
    chosen = timing.fastest_within_budget(results) if reference_is_fp32 else results[-1]
    rows = [_row(r, gflop["per_frame"], peaks, quiet, folder) | {"auto": r is chosen} for r in results]
    mine = rows[results.index(chosen)]
    result = {"livepuppet_version": __version__, "machine": machine_info(), "engine": chosen.label,
              "model": {"folder": str(folder.path), "checkpoint": folder.checkpoint_name,
                        "random_weights": folder.random_weights,
                        "frame_size": f"{folder.frame_size[1]}x{folder.frame_size[0]}", "model_batch": folder.batch},
              "batch": batch, "threads": threads, "stages": _stages(chosen, gflop, batch), "per_frame_ms": mine["per_frame_ms"],
              "latency_ms": chosen.timing.frame_ms, "fps": mine["fps"], "gflop_per_frame": gflop["per_frame"],
              "quiet": quiet, "engines": rows, "mean": mine["mean"], "max": mine["max"]}
    if mine["floor_ms"]:
        result.update(peak=peaks[chosen.plan.precision], floor_ms=mine["floor_ms"])
    result["peaks"] = peaks
    if mine["floor_ratio"]:
        result["floor_ratio"] = mine["floor_ratio"]
    return result


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render(result: dict[str, Any], console: Console) -> None:
    """Tables that fit in 80 columns: every engine, then the chosen one's stages; a few lines under them."""
    if len(result["engines"]) > 1:
        table = Table(title=f"engines here (auto: fastest within {timing.BUDGET['mean']} mean / "
                            f"{timing.BUDGET['max']:g} max levels of fp32)", title_justify="left")
        for col in ("engine", "ms/frame", "fps", "floor ms", "x floor", "levels", ""):
            table.add_column(col, justify="left" if col in ("engine", "") else "right", no_wrap=col != "engine")
        for row in result["engines"]:
            note = "[bold]auto[/]" if row["auto"] else ("" if row["within_budget"] else "over")
            table.add_row(row["engine"], _f(row["per_frame_ms"]), _f(row["fps"]), _f(row["floor_ms"], 0),
                          _f(row["floor_ratio"], 2), f"{row['mean']:.2f}/{row['max']:.1f}", note)
        console.print(table)
    model = result["model"]
    weights = "random weights" if model["random_weights"] else model["checkpoint"] or "?"
    table = Table(title=f"{result['engine']}: {model['frame_size']}, {weights}, batch {result['batch']}",
                  title_justify="left")
    for col in ("stage", "runs", "ms/call", "ms/frame", "GFLOP", "GFLOP/s"):
        table.add_column(col, justify="left" if col in ("stage", "runs") else "right", no_wrap=True)
    for stage in result["stages"].values():
        table.add_row(stage["label"], stage["when"], _f(stage["ms"]), _f(stage["ms_per_frame"]),
                      _f(stage["gflop"], 2), _f(stage["gflops"], 0))
    console.print(table)
    for line in _lines(result):
        console.print(line)


def _lines(result: dict[str, Any]) -> list[str]:
    lines = [f"[bold]{result['fps']:.1f} avatar frames per second[/] ({result['per_frame_ms']:.1f} ms a frame; "
             f"{result['latency_ms']:.1f} ms from a frame to its avatar, camera not counted)"]
    if "peak" in result:
        p = result["peak"]
        work = ("its int8 convolutions at this CPU's int8 peak, the rest at its float peak" if p["precision"] == "int8"
                else f"{result['gflop_per_frame']:.1f} GFLOP at this CPU's {p['precision']} peak of "
                     f"{p['gflops']:.0f} GFLOP/s ({p['engine']})")
        lines.append(f"floor: {work} = {result['floor_ms']:.0f} ms a frame")
        lines.append(f"this run: [bold]{result['floor_ratio']:.2f}x the floor[/]" if "floor_ratio" in result else
                     "[yellow]other programs used the CPU meanwhile: timings are pessimistic, "
                     "and no fraction of the floor is stated[/]")
    for key, p in sorted(result["peaks"].items()):
        kernel = f", the convolution alone {p['kernel_gflops']:.0f}" if p.get("kernel_gflops") else ""
        lines.append(f"peak {key}: {p['gflops']:.0f} GFLOP/s ({p['engine']}{kernel})")
    row = next((r for r in result["engines"] if r["engine"].startswith("openvino int8")), None)
    if row:  # the first int8 candidate is what --fast runs
        ratio = f"{row['floor_ratio']:.2f}x" if row["floor_ratio"] else "not stated (busy CPU)"
        lines.append(f"{row['engine']} (--fast): {row['mean']:.2f} mean / {row['max']:.1f} max levels from float32, "
                     f"which is the original FOMM to 1e-4 (tests/reference); its floor (its int8 work at the int8 "
                     f"peak, the rest at the float one) {_f(row['floor_ms'], 0)} ms, this run {ratio}")
    m = result["machine"]
    lines.append(f"machine: {m['cpu']}, {m['usable_cores']} of {m['cores']} cores; load "
                 f"{' '.join(f'{v:.1f}' for v in m['load_average'] or [])}; LiteRT {m['litert']}, "
                 f"OpenVINO {m['openvino']}")
    return lines


def _model(args: BenchOptions, err: Console, tmp: list[Path]) -> Path:
    """--model, else the converted default model, else a random-weights vox-256 in a temporary folder."""
    if args.model is not None:
        return args.model
    from livepuppet.commands.default_model import converted_default_model

    found = converted_default_model()
    if found is not None:
        err.print(f"no --model: timing the default model {found}")
        return found
    cfg = args.random_config or cfgmod.preset("vox")
    h, w = cfg.frame_shape
    err.print(f"no --model and no default model yet: building a {w}x{h} model of the vox architecture with "
              "random weights in a temporary folder (about a minute)")
    tmp.append(Path(tempfile.mkdtemp(prefix="livepuppet-bench-")))
    return build_random_model(tmp[0] / "model", cfg, batch=args.batch, console=err, targets=_targets_for(args))


def _targets_for(args: BenchOptions) -> tuple[str, ...]:
    """What the random-weights folder must hold for the engine and precision asked for (an engine's files are
    the target of its name, as `convert --targets` has them)."""
    from livepuppet.conversion.targets import DEFAULT_TARGETS, TARGETS, resolve_targets

    extra = tuple(t for t in (args.engine,) if t in TARGETS) + (("int8",) if args.fast else ())
    return resolve_targets(DEFAULT_TARGETS + extra)


def _plans(folder: ModelFolder, args: BenchOptions) -> tuple[list[Plan], bool]:
    """The plans to time, and whether the first is the float32 reference the others are compared with."""
    machine = Machine.current()
    request = Request(args.engine, args.exact, args.fast, args.device)
    if args.engine == "auto" and not args.fast:
        return candidates(folder, machine, request), True
    chosen = plan(folder, machine, Request("openvino" if args.engine == "auto" else args.engine, args.exact,
                                           args.fast, args.device))
    if chosen.exact:
        return [chosen], True
    reference = plan(folder, machine, Request(chosen.engine, exact=True, device=args.device))
    return [reference, chosen], False


def run(args: BenchOptions) -> int:
    """``livepuppet bench``. ``args.random_config`` (a ModelConfig, not on the command line) picks the random model's
    architecture when there is no model (tests use a small one); the default is vox-256."""
    console, err = Console(), Console(stderr=True)
    outputs.check(args.json, [args.model])  # before a minute of work, not after
    tmp: list[Path] = []
    try:
        folder = read_folder(_model(args, err, tmp))
        plans, reference_is_fp32 = _plans(folder, args)
        err.print(f"timing {folder.path.name}: {', '.join(p.label for p in plans)}...")
        with timing.Contention() as watch:
            results = timing.measure_plans(folder, plans, args.threads, args.repeats, args.batch, BENCH_FRAMES)
            peaks = peak.peaks(peak_precisions([r.plan for r in results]), args.threads)
        quiet = watch.others_share is not None and watch.others_share < QUIET_SHARE
        threads = args.threads or cpumod.usable_cores()
        result = summarise(folder, results, peaks, quiet, args.batch, threads, reference_is_fp32)
        result["others_cpu_share"] = watch.others_share
    finally:
        for path in tmp:
            shutil.rmtree(path, ignore_errors=True)
    render(result, console)
    if args.json is not None:
        try:
            outputs.write_atomically(Path(args.json), json.dumps(result, indent=2) + "\n")
        except OSError as exc:
            raise LivepuppetError(f"cannot write {args.json}: {exc.strerror or exc}") from None
        err.print(f"results written to {args.json}")
    return 0
