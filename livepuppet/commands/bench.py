"""The ``bench`` subcommand: what each stage of the model costs on this machine.

For a converted model folder (or, with no ``--model``, a vox-256 model with
random weights built in a temporary folder, so anyone can run it) this times
each stage the live loop runs:

- keypoint detection: the driving frames' keypoints, every frame;
- keypoint processing: relative motion and movement scale, every frame;
- generation: dense motion, warp and decoder, every frame;
- source encoding: the source image's keypoints and features, once per source;

then a whole frame end to end (a :class:`~livepuppet.runtime.pipeline.Pipeline` call),
and sets each against the architecture's convolution count
(:func:`livepuppet.fomm.config.conv_gflop`) and against the convolution speed this
machine sustains: one large 3x3 convolution on LiteRT/XNNPACK, timed here with
the same threads. Its time for a frame's convolutions is the *floor*, what a
frame would cost if every convolution ran as fast as that one.

Results print as a table and, with ``--json FILE``, are written as JSON. The
machine (CPU, cores, load average, OS, Python, TensorFlow and LiteRT versions)
goes with them: timings from a busy machine are worth little, so the load
average is part of the record. With a model folder and the tflite engine
nothing here imports TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rich.console import Console
from rich.table import Table

from livepuppet import __version__
from livepuppet.fomm import config as cfgmod
from livepuppet.fomm.config import ModelConfig
from livepuppet.runtime.engines import Engine, open_engine
from livepuppet.runtime.engines.auto import ORT_DISTRIBUTIONS
from livepuppet.errors import LivepuppetError
from livepuppet.modelfolder.manifest import read_manifest
from livepuppet.runtime.pipeline import Pipeline

__all__ = [
    "run", "measure", "stage_calls", "measure_peak", "machine_info", "random_state", "build_random_model",
    "synthetic_frames", "render", "STAGES",
]

# stage -> (label, how often it runs)
STAGES: dict[str, tuple[str, str]] = {
    "keypoint_detection": ("keypoint detection", "per frame"),
    "keypoint_processing": ("keypoint processing", "per frame"),
    "generation": ("generation", "per frame"),
    "source_encoding": ("source encoding", "per source"),
}
PEAK_SHAPE = (64, 64, 256, 256)  # (h, w, in, out) of the 3x3 convolution that measures peak speed


# --------------------------------------------------------------------------- the machine

def machine_info() -> dict[str, Any]:
    """CPU, cores, load, OS and library versions, read without importing TensorFlow."""
    from livepuppet.runtime import cpu as cpumod

    cpu = cpumod.current()
    info = {
        "cpu": cpu.name,
        "cores": os.cpu_count() or 1,
        "usable_cores": cpumod.usable_cores(),
        "simd": cpu.simd,
        "os": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow"),
        "litert": _version("ai-edge-litert"),
        "openvino": _version("openvino"),
        "onnxruntime": next((v for v in map(_version, ORT_DISTRIBUTIONS) if v), None),
        "numpy": np.__version__,
        "livepuppet": __version__,
    }
    info["load_average"] = _load()
    return info


def _load() -> list[float] | None:
    """The 1, 5 and 15 minute load averages: how busy the machine is (compare with the cores)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- peak convolution speed

def _peak_model(h: int, w: int, cin: int, cout: int, seed: int = 0) -> bytes:
    """A one-op TFLite model, a 3x3 'same' CONV_2D, written with the flatbuffer schema (no TensorFlow)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    rng = np.random.default_rng(seed)
    weights = (rng.standard_normal((cout, 3, 3, cin)) * (2 / (9 * cin)) ** 0.5).astype(np.float32)  # OHWI
    bias = np.zeros(cout, np.float32)

    def buffer(array: np.ndarray | None = None):
        b = fb.BufferT()
        if array is not None:
            b.data = np.frombuffer(array.tobytes(), np.uint8)
        return b

    def tensor(shape, index: int, name: str):
        t = fb.TensorT()
        t.shape, t.type, t.buffer, t.name = list(shape), fb.TensorType.FLOAT32, index, name
        return t

    options = fb.Conv2DOptionsT()
    options.padding = fb.Padding.SAME
    options.strideH = options.strideW = options.dilationHFactor = options.dilationWFactor = 1
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType, op.builtinOptions = fb.BuiltinOptions.Conv2DOptions, options
    graph = fb.SubGraphT()
    graph.tensors = [tensor((1, h, w, cin), 0, "x"), tensor(weights.shape, 1, "w"), tensor(bias.shape, 2, "b"),
                     tensor((1, h, w, cout), 0, "y")]
    graph.inputs, graph.outputs, graph.operators = [0], [3], [op]
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.CONV_2D
    code.version = 1
    model = fb.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [graph]
    model.buffers = [buffer(), buffer(weights), buffer(bias)]
    model.description = "livepuppet bench: peak convolution"
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def measure_peak(threads: int | None = None, repeats: int = 7, shape: tuple[int, int, int, int] = PEAK_SHAPE
                 ) -> dict[str, Any]:
    """GFLOP/s of one large float32 3x3 convolution on LiteRT/XNNPACK: the best this machine does.

    The best of ``repeats`` runs, not the median: the aim is what the hardware
    sustains, and a busy machine only ever makes a run slower. :func:`measure`
    takes it before and after the stage timings and keeps the better one.
    """
    from livepuppet.runtime.engines.tflite import _interpreter_module

    h, w, cin, cout = shape
    lite = _interpreter_module()
    threads = threads or os.cpu_count() or 1
    interp = lite.Interpreter(model_content=_peak_model(h, w, cin, cout), num_threads=threads)
    interp.allocate_tensors()
    index = interp.get_input_details()[0]["index"]
    interp.set_tensor(index, np.random.default_rng(1).uniform(0, 1, (1, h, w, cin)).astype(np.float32))
    interp.invoke()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - start)
    gflop = 2 * 9 * cin * cout * h * w / 1e9
    return {"gflops": gflop / min(times), "gflop": gflop, "best_ms": min(times) * 1e3,
            "median_ms": statistics.median(times) * 1e3, "threads": threads,
            "shape": f"1x{h}x{w}x{cin} -> {cout}, 3x3"}


# --------------------------------------------------------------------------- a model with random weights

def random_state(cfg: ModelConfig, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(generator, kp_detector) state dicts for ``cfg`` with random, numerically sane weights.

    numpy only. Convolutions get He-style weights; batch norms positive
    running variances; the jacobian head starts at the identity and the output
    heads are damped, so keypoints, jacobians and sampling grids stay finite
    and plausible, which is all that timing needs.
    """
    rng = np.random.default_rng(seed)
    states = []
    for shapes in cfgmod.expected_shapes(cfg):
        state: dict[str, np.ndarray] = {}
        for name, shape in shapes.items():
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith("down.weight"):  # the anti-alias Gaussian, a fixed buffer
                k = shape[-1]
                scale = next(1 / n for n in range(2, 33) if cfgmod.antialias_kernel_size(1 / n) == k)
                value = np.broadcast_to(cfgmod.gaussian_kernel(scale), shape)
            elif leaf == "weight" and len(shape) == 4:
                fan_in = shape[1] * shape[2] * shape[3]
                value = rng.standard_normal(shape) * (2 / fan_in) ** 0.5
                if name.split(".")[0] in ("kp", "jacobian", "final") or ".mask." in name or ".occlusion." in name:
                    value = value * (0.02 if name.startswith("jacobian") else 0.2)
                elif name.endswith(".conv2.weight"):  # residual branches: keep the bottleneck O(1)
                    value = value * 0.25
            elif name == "jacobian.bias":
                value = np.tile([1.0, 0.0, 0.0, 1.0], shape[0] // 4)
            elif leaf == "running_var":
                value = rng.uniform(0.5, 2.0, shape)
            elif leaf == "running_mean":
                value = rng.normal(0, 0.2, shape)
            elif leaf == "weight":  # batch norm scale
                value = rng.uniform(0.7, 1.3, shape)
            else:  # biases
                value = rng.normal(0, 0.05, shape)
            state[name] = np.ascontiguousarray(value, dtype=np.float32)
        states.append(state)
    return states[0], states[1]


def build_random_model(out: Path, cfg: ModelConfig | None = None, *, precision: str = "fp32",
                       batch: int | None = 1, seed: int = 0, console: Console | None = None) -> Path:
    """Convert a model with random weights (:func:`random_state`) into the model folder ``out``.

    ``cfg`` defaults to the vox-256 architecture. Needs TensorFlow (it converts).
    """
    from livepuppet.fomm.checkpoint import Checkpoint
    from livepuppet.conversion.export import build

    cfg = cfg or cfgmod.preset("vox")
    cfg.validate_frame_shape()
    generator, kp_detector = random_state(cfg, seed)
    h, w = cfg.frame_shape
    name = f"random-{w}x{h}-seed{seed}"
    checkpoint = Checkpoint(generator, kp_detector, Path(name), sha256="random")
    build(checkpoint, cfg, Path(out), precision=precision, batch=batch, console=console or Console(stderr=True))
    return Path(out)


# --------------------------------------------------------------------------- frames

def synthetic_frames(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) float32 in [0, 1]: smooth colour gradients and blobs, a little different each frame."""
    h, w = size
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h, dtype=np.float32), np.linspace(0, 1, w, dtype=np.float32),
                         indexing="ij")
    gx, gy = rng.uniform(-0.3, 0.3, 3), rng.uniform(-0.3, 0.3, 3)
    base = rng.uniform(0.2, 0.8, 3) + gx * xx[..., None] + gy * yy[..., None]
    centres, radii, colours = rng.uniform(0.2, 0.8, (6, 2)), rng.uniform(0.05, 0.2, 6), rng.uniform(-0.5, 0.5, (6, 3))
    frames = []
    for i in range(n):
        img = base.copy()
        for (cy, cx), r, colour in zip(centres + 0.01 * i, radii, colours):
            img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None] * colour
        frames.append(img)
    return np.clip(np.stack(frames), 0, 1).astype(np.float32)


# --------------------------------------------------------------------------- measuring

def _interleaved(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Each call once untimed (warm-up), then ``repeats`` timed rounds, round-robin.

    Round-robin, so that a machine getting busier or quieter meanwhile
    affects every stage alike.
    """
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def stage_calls(engine: Engine, source: np.ndarray, calibration: np.ndarray,
                frames: np.ndarray) -> dict[str, Callable[[], Any]]:
    """One call per stage (the keys of STAGES, plus ``end_to_end``), set up so that each repeats
    exactly the work of animating ``frames`` after ``source`` was set and ``calibration`` taken."""
    data = engine.encode_source(source)
    initial = engine.detect_keypoints(calibration[None])
    detected = engine.detect_keypoints(frames)
    norm = engine.process_keypoints(data.keypoints, detected, initial, True, True)
    pipeline = Pipeline(engine)
    pipeline.set_source(source)
    pipeline.calibrate(calibration)
    return {
        "keypoint_detection": lambda: engine.detect_keypoints(frames),
        "keypoint_processing": lambda: engine.process_keypoints(data.keypoints, detected, initial, True, True),
        "generation": lambda: engine.generate(norm, data),
        "source_encoding": lambda: engine.encode_source(source),
        "end_to_end": lambda: pipeline.animate(frames),
    }


def measure(folder: str | Path, engine: str = "tflite", threads: int | None = None, batch: int = 1,
            repeats: int = 5, peak: dict[str, Any] | None | bool = True,
            engine_obj: Engine | None = None, device: str = "cpu") -> dict[str, Any]:
    """Time every stage of the model in ``folder``; returns the JSON-ready result.

    ``peak``: True measures the peak convolution speed here, a dict reuses
    one measured before, False/None leaves the floor out.
    """
    manifest = read_manifest(folder)
    cfg = cfgmod.from_dict(manifest.config, str(folder))
    gflop = cfgmod.conv_gflop(cfg)
    threads = threads or os.cpu_count() or 1
    load_before = _load()
    if engine_obj is None:
        if engine == "savedmodel":
            _tf_threads(threads)
        engine_obj = open_engine(folder, engine, threads, device=device)
    size = engine_obj.frame_size
    frames = synthetic_frames(batch + 1, size, seed=1)
    source, driving = frames[0], frames[1:]
    calls = stage_calls(engine_obj, source, driving[0], driving)
    peak_before = measure_peak(threads) if peak is True else None
    times = _interleaved(calls, repeats)
    stage_gflop = {
        "keypoint_detection": gflop["kp_detector"] * batch,
        "keypoint_processing": 0.0,
        "generation": (gflop["dense_motion"] + gflop["generator"]) * batch,
        "source_encoding": gflop["source_encoder"] + gflop["kp_detector"],  # its features and its keypoints
    }
    stages = {}
    for name, (label, when) in STAGES.items():
        ms = statistics.median(times[name])
        per_frame = when == "per frame"
        stages[name] = {
            "label": label, "when": when, "ms": ms, "ms_per_frame": ms / batch if per_frame else None,
            "min_ms": min(times[name]), "gflop": stage_gflop[name],
            "gflops": stage_gflop[name] / ms * 1e3 if stage_gflop[name] else None,
            "runs_ms": times[name],
        }
    end_ms = statistics.median(times["end_to_end"])
    per_frame_ms = end_ms / batch
    result: dict[str, Any] = {
        "livepuppet_version": __version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine_info(), "load_average_before": load_before},
        "model": {
            "folder": str(folder), "checkpoint": manifest.data.get("checkpoint", {}).get("name"),
            "random_weights": manifest.data.get("checkpoint", {}).get("sha256") == "random",
            "frame_size": f"{size[1]}x{size[0]}", "precision": manifest.precision, "model_batch": manifest.batch,
        },
        "engine": engine_obj.label,
        "threads": _tf_thread_count(threads) if engine_obj.name == "savedmodel" else threads,
        "batch": batch,
        "repeats": repeats,
        "stages": stages,
        "end_to_end": {"ms": end_ms, "min_ms": min(times["end_to_end"]), "runs_ms": times["end_to_end"]},
        "per_frame_ms": per_frame_ms,
        "stages_per_frame_ms": sum(s["ms_per_frame"] for s in stages.values() if s["ms_per_frame"] is not None),
        "fps": 1e3 / per_frame_ms,
        "gflop_per_frame": gflop["per_frame"],
        "gflop_by_part": gflop,
        "gflops": gflop["per_frame"] / per_frame_ms * 1e3,
    }
    if peak is True:  # the best the machine did around the timings
        peak = max(peak_before, measure_peak(threads), key=lambda p: p["gflops"])
    if peak:
        floor_ms = gflop["per_frame"] / peak["gflops"] * 1e3
        result.update(peak=peak, peak_gflops=peak["gflops"], floor_ms=floor_ms,
                      floor_ratio=per_frame_ms / floor_ms, peak_fraction=result["gflops"] / peak["gflops"])
    return result


def _tf_threads(threads: int) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already initialised: keep its pools
        pass


def _tf_thread_count(requested: int) -> int:
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() or requested


# --------------------------------------------------------------------------- output

def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render(result: dict[str, Any], console: Console) -> None:
    model, machine = result["model"], result["machine"]
    weights = "random weights" if model["random_weights"] else model["checkpoint"] or "?"
    title = (f"livepuppet bench: {model['frame_size']} ({weights}), {result['engine']}, "
             f"batch {result['batch']}, {result['threads']} threads, median of {result['repeats']}")
    table = Table(title=title)
    for col, justify in (("stage", "left"), ("runs", "left"), ("ms/call", "right"), ("ms/frame", "right"),
                         ("GFLOP", "right"), ("GFLOP/s", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    for s in result["stages"].values():
        table.add_row(s["label"], s["when"], _f(s["ms"]), _f(s["ms_per_frame"]), _f(s["gflop"], 2),
                      _f(s["gflops"]))
    table.add_section()
    table.add_row("[bold]end to end[/]", "per frame", _f(result["end_to_end"]["ms"]),
                  f"[bold]{_f(result['per_frame_ms'])}[/]", _f(result["gflop_per_frame"], 2),
                  f"[bold]{_f(result['gflops'])}[/]")
    console.print(table)
    lines = [f"[bold]{result['fps']:.2f} frames per second[/] end to end "
             f"({result['per_frame_ms']:.1f} ms a frame; the per-frame stages add up to "
             f"{result['stages_per_frame_ms']:.1f} ms)"]
    if "peak" in result:
        p = result["peak"]
        where = ("LiteRT/XNNPACK fp32" if p.get("engine", "tflite") == "tflite"
                 else f"OpenVINO {p.get('precision', '')}".strip())
        lines.append(f"peak convolution speed here: {p['gflops']:.1f} GFLOP/s ({where}, {p['shape']}, "
                     f"{p['threads'] or 'all'} threads, best of its runs)")
        lines.append(f"floor: {result['gflop_per_frame']:.1f} GFLOP / {p['gflops']:.1f} GFLOP/s = "
                     f"{result['floor_ms']:.0f} ms a frame; this run is "
                     f"[bold]{result['floor_ratio']:.2f}x[/] the floor "
                     f"({100 * result['peak_fraction']:.0f}% of peak, counting the architecture's convolutions)")
    load, before = machine.get("load_average"), machine.get("load_average_before")
    loads = " ".join(f"{v:.2f}" for v in load) if load else "?"
    if before:
        loads = f"{' '.join(f'{v:.2f}' for v in before)} before, {loads} after"
    lines.append(f"machine: {machine['cpu']}, {machine['usable_cores']} of {machine['cores']} cores"
                 f"{', ' + machine['simd'] if machine.get('simd') else ''}; load average "
                 f"{loads}; {machine['os']}; "
                 f"Python {machine['python']}, TensorFlow {machine['tensorflow']}, LiteRT {machine['litert']}")
    if load and load[0] > 0.5 * machine["usable_cores"]:
        lines.append(f"[yellow]note: the machine was busy (load {load[0]:.1f} on {machine['usable_cores']} cores): "
                     "these timings are pessimistic[/]")
    for line in lines:
        console.print(line)


# --------------------------------------------------------------------------- the command

def run(args: argparse.Namespace) -> int:
    """``livepuppet bench``. A hidden ``args.random_config`` (a ModelConfig) picks the random model's
    architecture when no ``--model`` is given (tests use a small one); the default is vox-256."""
    console = Console()
    err = Console(stderr=True)
    engine = getattr(args, "engine", "auto") or "auto"
    threads = getattr(args, "threads", None)
    batch = getattr(args, "batch", 1) or 1
    repeats = getattr(args, "repeats", 5) or 5
    tmp = None
    try:
        folder = getattr(args, "model", None)
        if folder is None:
            cfg = getattr(args, "random_config", None) or cfgmod.preset("vox")
            h, w = cfg.frame_shape
            err.print(f"no --model: building a {w}x{h} model of the vox architecture with random weights "
                      "in a temporary folder (about a minute)")
            tmp = Path(tempfile.mkdtemp(prefix="livepuppet-bench-"))
            folder = build_random_model(tmp / "model", cfg, batch=batch, console=err)
        err.print(f"timing {folder} on {engine}...")
        rows = None
        if engine == "auto" and batch == 1:
            from livepuppet.commands import bench_engines

            rows = bench_engines.compare(folder, threads, repeats, exact=bool(getattr(args, "exact", False)),
                                         device=getattr(args, "device", None) or "cpu")
            best = next(r for r in rows if r.get("auto"))
            engine_obj = open_engine(folder, best["candidate"].engine, threads, precision=best["candidate"].precision,
                                     kp_precision=best["candidate"].kp_precision,
                                     device=best["candidate"].provider or getattr(args, "device", None) or "cpu")
            result = measure(folder, threads=threads, batch=batch, repeats=repeats, engine_obj=engine_obj,
                             peak=best.get("peak") or True)
            result["engines"] = [{**{k: v for k, v in r.items() if k not in ("candidate", "result")},
                                  "engine": r["candidate"].label, "per_frame_ms": r["result"]["per_frame_ms"],
                                  "stages_ms": {k: v["ms"] for k, v in r["result"]["stages"].items()}}
                                 for r in rows]
        else:
            result = measure(folder, "tflite" if engine == "auto" else engine, threads, batch, repeats,
                             device=getattr(args, "device", None) or "cpu")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if rows:
        bench_engines.render(rows, console)
    render(result, console)
    json_path = getattr(args, "json", None)
    if json_path is not None:
        try:
            Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
        except OSError as exc:
            raise LivepuppetError(f"cannot write {json_path}: {exc.strerror or exc}") from None
        err.print(f"results written to {json_path}")
    return 0
