"""livepuppet against the original PyTorch model, and what each optimisation buys, in one run.

One checkpoint, the vox-256 architecture with random weights from the test
factory (``tests/reference``), saved as a real ``.pth.tar``, is converted at
each precision and run through:

- livepuppet: TFLite fp32, fp16 and int8 (LiteRT/XNNPACK, all cores), and the
  fp32 SavedModel (TensorFlow), each with the source work cached;
- the PyTorch reference (``tests/reference/fomm.py``), as the original demo runs
  it: eager, float32, all cores, ``torch.no_grad``, per frame the keypoint
  detector, ``normalize_kp`` and the whole generator, which redoes the source
  part every frame.

Every timed call is interleaved round-robin with the others, so a machine that
gets busier or quieter meanwhile affects them alike. It prints the median ms of
each stage, the ms a frame end to end, the speed-up over PyTorch, how far each
is from the floor (the frame's convolutions at the peak convolution speed
measured here, see ``livepuppet bench``), and the mean error per pixel, in
8-bit levels, against TFLite fp32 and against PyTorch.

Then, unless ``--quick``, the ablations: the generator rebuilt with one
optimisation undone at a time, all timed interleaved in the same run:

- the bottleneck's 3x3 convolutions by Winograd F(2x2, 3x3) (shipped) versus CONV_2D;
- nearest-neighbour x2 + 3x3 conv as one subpixel convolution (shipped), versus
  RESIZE_NEAREST_NEIGHBOR (the previous code; left to the builtin kernels by
  XNNPACK), concat x4 + DEPTH_TO_SPACE, reshape + BROADCAST_TO, and tf.repeat;
- the 3-channel 7x7 ``final`` conv split into 1x7 + 7x1 (shipped) versus one conv;
- all three undone (the previous model);
- batch norm folded (shipped) versus not, on TFLite and on TensorFlow;
- the warps (grid_sample) replaced by the identity: what sampling costs;
- grid_sample without the guard that keeps NaN coordinates from indexing out of bounds;
- XNNPACK versus the builtin kernels only, and 1 thread versus all;

and which TFLite ops XNNPACK leaves to the builtin kernels in each variant.

Usage: python benchmarks/compare.py [--frames 8] [--repeats 5] [--threads N] [--quick] [--json out.json]
Needs the test extras (torch, scipy). Takes 10-20 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from livepuppet.commands import bench  # noqa: E402
from livepuppet.fomm import config as cfgmod  # noqa: E402
from livepuppet.modelfolder.read import read_folder  # noqa: E402
from livepuppet.runtime import cpu, peak as peakmod, probe  # noqa: E402
from livepuppet.runtime.choose import open_engine  # noqa: E402
from livepuppet.runtime.engines import open_plan  # noqa: E402
from livepuppet.runtime.pipeline import Pipeline  # noqa: E402
from livepuppet.runtime.plan import Machine, Request, candidates  # noqa: E402
from tests.reference.factory import (  # noqa: E402
    VOX_PARAMS, make_checkpoint, random_frames, random_video, to_torch_nchw,
)
from tests.reference.fomm import normalize_kp  # noqa: E402

console = Console(width=max(Console().width, 150))
log = Console(stderr=True)


def interleaved(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """ms of each call: one warm-up each, then ``repeats`` round-robin rounds (a machine getting busier
    or quieter meanwhile affects every call alike)."""
    log.print(f"timing {len(calls)} calls x {repeats} rounds, interleaved...")
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def stage_calls(engine, source: np.ndarray, calibration: np.ndarray, frames: np.ndarray
                ) -> dict[str, Callable[[], Any]]:
    """One call per stage, each repeating exactly the work of animating ``frames`` after the source and
    calibration were set."""
    data = engine.encode_source(source)
    initial = engine.detect_keypoints(calibration[None])
    detected = engine.detect_keypoints(frames)
    norm = engine.process_keypoints(data.keypoints, detected, initial, True, True)
    pipeline = Pipeline(engine)
    pipeline.set_source(source)
    pipeline.calibrate(calibration)
    return {"keypoint_detection": lambda: engine.detect_keypoints(frames),
            "keypoint_processing": lambda: engine.process_keypoints(data.keypoints, detected, initial, True, True),
            "generation": lambda: engine.generate(norm, data),
            "source_encoding": lambda: engine.encode_source(source),
            "end_to_end": lambda: pipeline.animate(frames)}


def open_labelled(folder: Path, threads: int | None) -> dict[str, Any]:
    """Every plan this machine can run the folder with (its int8 generator too), opened, by label."""
    model = read_folder(folder)
    return {p.label: open_plan(model, p, threads) for p in candidates(model, Machine.current(), Request())
            if p.engine == "openvino" and not p.exact}


def med(times: list[float]) -> float:
    return statistics.median(times)


def levels(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean and max absolute difference in 8-bit levels (images in [0, 1])."""
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) * 255
    return float(d.mean()), float(d.max())


# --------------------------------------------------------------------------- livepuppet and PyTorch

def main_comparison(args, ckpt: Path, workdir: Path, torch_models, peak: dict) -> dict[str, Any]:
    from livepuppet.commands.convert import convert_checkpoint

    h, w = 256, 256
    folders = {}
    for precision in ("fp32", "fp16", "int8"):
        folders[precision] = workdir / f"vox-{precision}"
        if not (folders[precision] / "manifest.json").is_file():
            targets = ("tflite", "openvino", "savedmodel") + (("int8",) if precision == "fp32" else ())
            convert_checkpoint(ckpt, folders[precision], precision=precision, targets=targets)
    threads = args.threads
    engines = {
        "tflite fp32": open_engine(folders["fp32"], "tflite", threads),
        "tflite fp16": open_engine(folders["fp16"], "tflite", threads),
        "tflite int8": open_engine(folders["int8"], "tflite", threads),
        "savedmodel fp32": open_engine(folders["fp32"], "savedmodel"),
        "tflite fp32, 1 thread": open_engine(folders["fp32"], "tflite", 1),
        "openvino fp32": open_engine(folders["fp32"], "openvino", threads, exact=True),
    }
    engines.update(open_labelled(folders["fp32"], threads))  # bf16 (keypoints fp32 and bf16), int8 (--fast)
    # a real face (the bundled portrait) moving: reduced precisions are judged on what they will animate
    source = probe.portrait((h, w))
    driving = probe.head_motion((h, w), args.frames + 1, seed=6)

    # ---- outputs: every variant on the same frames
    generator, kp_detector = torch_models
    outputs = {}
    with torch.no_grad():
        src_t = to_torch_nchw(source[None])
        kp_src = kp_detector(src_t)
        kp_init = kp_detector(to_torch_nchw(driving[:1]))
        preds = []
        for frame in driving[1:]:
            kp_drv = kp_detector(to_torch_nchw(frame[None]))
            norm = normalize_kp(kp_src, kp_drv, kp_init, True, True, True)
            preds.append(generator(src_t, kp_driving=norm, kp_source=kp_src)["prediction"])
        outputs["pytorch"] = torch.cat(preds).permute(0, 2, 3, 1).numpy()
    fast_torch = pytorch_fastest(torch_models)
    outputs["pytorch bf16 channels-last"] = fast_torch["animate"](source, driving)
    for name, engine in engines.items():
        p = Pipeline(engine)
        p.set_source(source)
        p.calibrate(driving[0])
        outputs[name] = np.concatenate([p.animate(f[None]) for f in driving[1:]])

    # ---- timing: everything interleaved
    frame = driving[1:2]
    calls: dict[str, Callable[[], Any]] = {}
    stage_names = {"keypoint_detection": "kp", "keypoint_processing": "process", "generation": "generate",
                   "source_encoding": "source", "end_to_end": "frame"}
    for name, engine in engines.items():
        for stage, call in stage_calls(engine, source, driving[0], frame).items():
            calls[f"{name}|{stage_names[stage]}"] = call
        if name == "tflite fp32":
            uncached = Pipeline(engine)
            uncached.calibrate(driving[0])
            calls["tflite fp32, no source cache|frame"] = lambda p=uncached: (
                p.set_source(source), p.animate(frame))

    frame_t = to_torch_nchw(frame)
    with torch.no_grad():
        kp_drv_t = kp_detector(frame_t)
        norm_t = normalize_kp(kp_src, kp_drv_t, kp_init, True, True, True)

    def torch_call(fn):
        def wrapped():
            with torch.no_grad():
                return fn()
        return wrapped

    def torch_frame():
        kp = kp_detector(frame_t)
        n = normalize_kp(kp_src, kp, kp_init, True, True, True)
        return generator(src_t, kp_driving=n, kp_source=kp_src)["prediction"]

    calls["pytorch|kp"] = torch_call(lambda: kp_detector(frame_t))
    calls["pytorch|process"] = torch_call(lambda: normalize_kp(kp_src, kp_drv_t, kp_init, True, True, True))
    calls["pytorch|generate"] = torch_call(lambda: generator(src_t, kp_driving=norm_t, kp_source=kp_src))
    calls["pytorch|frame"] = torch_call(torch_frame)
    calls["pytorch bf16 channels-last|frame"] = lambda: fast_torch["frame"](frame)
    load_before = os.getloadavg()
    times = interleaved(calls, args.repeats)
    load_after = os.getloadavg()

    cfg = cfgmod.from_dict(engines["tflite fp32"].manifest.config)
    gflop = cfgmod.conv_gflop(cfg)
    rows = {}
    torch_frame_ms = med(times["pytorch|frame"])
    for name in ["pytorch", "pytorch bf16 channels-last", *engines, "tflite fp32, no source cache"]:
        t = {stage: med(times[f"{name}|{stage}"]) for stage in ("kp", "process", "generate", "source", "frame")
             if f"{name}|{stage}" in times}
        row: dict[str, Any] = {"ms": t, "frame_ms": t["frame"], "fps": 1e3 / t["frame"],
                               "speedup_vs_pytorch": torch_frame_ms / t["frame"]}
        out = outputs.get(name)
        if out is not None:
            row["error_vs_tflite_fp32_levels"] = (levels(out, outputs["tflite fp32"])
                                                  if name not in ("tflite fp32", "pytorch") else None)
            row["error_vs_pytorch_levels"] = levels(out, outputs["pytorch"]) if name != "pytorch" else None
            if name == "pytorch bf16 channels-last":
                row["error_vs_tflite_fp32_levels"] = levels(out, outputs["tflite fp32"])
        rows[name] = row
    return {"rows": rows, "gflop": gflop, "load_before": load_before,
            "load_after": load_after, "frames_compared": args.frames,
            "folders": {k: str(v) for k, v in folders.items()},
            "times_ms": times, "tflite_ops": engines["tflite fp32"].manifest.data["models"]}


def print_comparison(result: dict[str, Any], peak: dict, bf16_peak: dict | None = None) -> None:
    table = Table(title="vox-256, one frame at a time: median ms (livepuppet caches the source work)")
    for col in ("variant", "kp", "process", "generate", "source", "frame", "fps",
                "vs torch", "x floor", "err/fp32", "err/torch"):
        table.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True)
    for name, row in result["rows"].items():
        t = row["ms"]

        def cell(stage):
            return f"{t[stage]:,.1f}" if stage in t else "-"

        def err(key):
            v = row.get(key)
            return f"{v[0]:.3f} / {v[1]:.0f}" if v else "-"

        src = cell("source") if name != "pytorch" else "in generate"
        table.add_row(name, cell("kp"), cell("process"), cell("generate"), src, f"[bold]{t['frame']:,.1f}[/]",
                      f"{row['fps']:.2f}", f"{row['speedup_vs_pytorch']:.2f}x", f"{row['floor_ratio']:.2f}",
                      err("error_vs_tflite_fp32_levels"), err("error_vs_pytorch_levels"))
    console.print(table)
    g = result["gflop"]
    console.print("kp: keypoint detection, process: keypoint normalisation, generate: the generator (livepuppet: "
                  "the per-frame part; PyTorch: all of it), source: livepuppet's once-per-source work, frame: one "
                  "frame end to end; int8: int8 weights but the float32 keypoint detector (see export.FLOAT32_MODELS)")
    console.print(f"floor: {g['per_frame']:.1f} GFLOP a frame / {peak['gflops']:.1f} GFLOP/s peak "
                  f"({peak['shape']}, {peak['threads']} threads) = {result['floor_ms']:.0f} ms; errors are mean "
                  f"/ max absolute differences per pixel, in 8-bit levels, over {result['frames_compared']} frames")
    if bf16_peak:
        console.print(f"bf16 rows' floor: {g['per_frame']:.1f} GFLOP / {bf16_peak['gflops']:.1f} GFLOP/s bf16 peak "
                      f"(OpenVINO, {bf16_peak['shape']}) = {result['floor_ms_bf16']:.0f} ms")
    console.print(f"load average before timing {' '.join(f'{v:.2f}' for v in result['load_before'])}, "
                  f"after {' '.join(f'{v:.2f}' for v in result['load_after'])}")


def pytorch_fastest(torch_models) -> dict[str, Callable]:
    """The reference at its fastest CPU setting: bfloat16 autocast and channels-last memory.

    Copies of the models, so the float32 rows keep theirs. ``frame(frame)`` is one
    frame as the original demo does it; ``animate(source, driving)`` the error run.
    """
    import copy

    generator, kp_detector = (copy.deepcopy(m).to(memory_format=torch.channels_last).eval() for m in torch_models)

    def nchw(x):
        return to_torch_nchw(x).contiguous(memory_format=torch.channels_last)

    def kp(x):  # keypoints in float32: normalize_kp's convex hull runs in numpy
        return {k: v.float() for k, v in kp_detector(x).items()}

    def animate(source, driving):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            src = nchw(source[None])
            kp_src, kp_init = kp(src), kp(nchw(driving[:1]))
            state["src"], state["kp_src"], state["kp_init"] = src, kp_src, kp_init
            preds = []
            for f in driving[1:]:
                norm = normalize_kp(kp_src, kp(nchw(f[None])), kp_init, True, True, True)
                preds.append(generator(src, kp_driving=norm, kp_source=kp_src)["prediction"].float())
        return torch.cat(preds).permute(0, 2, 3, 1).numpy()

    def frame(f):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            norm = normalize_kp(state["kp_src"], kp(nchw(f)), state["kp_init"], True, True, True)
            return generator(state["src"], kp_driving=norm, kp_source=state["kp_src"])["prediction"]

    state: dict[str, Any] = {}
    return {"animate": animate, "frame": frame}


# --------------------------------------------------------------------------- ablations

@contextlib.contextmanager
def patched(*triples):
    """Temporarily set attributes: patched((obj, name, value), ...)."""
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in triples]
    try:
        for obj, name, value in triples:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def _upsample_variant(kind: str):
    import tensorflow as tf
    from livepuppet.fomm.modules import blocks

    def up(x):
        _, h, w, c = x.shape
        if kind == "resize":  # the previous code
            return tf.image.resize(x, [2 * h, 2 * w], method="nearest")
        if kind == "depth_to_space":
            return tf.nn.depth_to_space(tf.concat([x, x, x, x], -1), 2)
        if kind == "broadcast":
            y = tf.broadcast_to(x[:, :, None, :, None, :], [tf.shape(x)[0], h, 2, w, 2, c])
            return tf.reshape(y, [-1, 2 * h, 2 * w, c])
        if kind == "repeat":
            return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)
        raise ValueError(kind)

    return [(blocks, "upsample_nearest2x", up)]  # with fused_upsample=False (see ablations)


def _no_warp():
    import tensorflow as tf
    from livepuppet.fomm.modules import dense_motion as dm_mod
    from livepuppet.fomm.modules import generator as gen_mod

    def identity(image, grid):  # the shape grid_sample returns, without sampling
        extra = len(grid.shape) - 3
        image = tf.reshape(image, [-1, *image.shape[1:3]] + [1] * (extra - 1) + [image.shape[-1]])
        return image + tf.zeros_like(grid[..., :1])

    return [(dm_mod, "grid_sample", identity), (gen_mod, "grid_sample", identity)]


def _no_nan_guard():
    from livepuppet.fomm.modules import ops

    return [(ops, "_finite_or", lambda x, value: x)]


def _rewrites(**undone: bool):
    """The XNNPACK graph with the named rewrites undone (model/rewrites.py), as a Rewrites."""
    import dataclasses

    from livepuppet.fomm.modules import XNNPACK

    return dataclasses.replace(XNNPACK, **{k: False for k in undone})


def undelegated_ops(model: bytes) -> dict[str, int]:
    """TFLite ops XNNPACK does not take (they run on the builtin kernels).

    With delegate node fusion off, each delegated op becomes its own DELEGATE
    node with that op's outputs; an op whose outputs no DELEGATE node produces
    stayed with the builtin kernels.
    """
    from ai_edge_litert import interpreter as lite

    interp = lite.Interpreter(model_content=model, num_threads=1, experimental_disable_delegate_node_fusion=True)
    interp.allocate_tensors()
    ops = interp._get_ops_details()
    delegated = {int(t) for op in ops if op["op_name"] == "DELEGATE" for t in op["outputs"]}
    return dict(collections.Counter(op["op_name"] for op in ops if op["op_name"] != "DELEGATE"
                                    and not {int(t) for t in op["outputs"]} & delegated))


def ablations(args, ckpt: Path, engine_inputs: dict[str, np.ndarray], kp_image: np.ndarray) -> dict[str, Any]:
    import tensorflow as tf
    from ai_edge_litert import interpreter as lite

    from livepuppet.fomm.checkpoint import load_checkpoint
    from livepuppet.conversion.graphs import networks
    from livepuppet.fomm.modules import FOMM

    state = load_checkpoint(ckpt)
    cfg = cfgmod.infer(state.generator, state.kp_detector).with_frame_shape(*kp_image.shape[1:3])
    unfused = {"fused_upsample": True}
    # name -> (patches, rewrites, fold batch norm)
    variants = {
        "shipped": ([], _rewrites(), True),
        "bottleneck: CONV_2D, no Winograd (previous)": ([], _rewrites(winograd=True), True),
        "upsample: RESIZE_NEAREST_NEIGHBOR + conv (previous)": (_upsample_variant("resize"), _rewrites(**unfused), True),
        "upsample: concat x4 + DEPTH_TO_SPACE + conv": (_upsample_variant("depth_to_space"), _rewrites(**unfused), True),
        "upsample: reshape + BROADCAST_TO + conv": (_upsample_variant("broadcast"), _rewrites(**unfused), True),
        "upsample: tf.repeat + conv": (_upsample_variant("repeat"), _rewrites(**unfused), True),
        "final: one 7x7 conv, 3 outputs (previous)": ([], _rewrites(split_thin=True), True),
        "previous model (all three undone: the plain graph)": (
            _upsample_variant("resize"), _rewrites(winograd=True, fused_upsample=True, split_thin=True), True),
        "batch norm not folded": ([], _rewrites(), False),
        "no warps (grid_sample -> identity)": (_no_warp(), _rewrites(), True),
        "grid_sample without its NaN guard (previous)": (_no_nan_guard(), _rewrites(), True),
    }
    interps, ops, tf_fns = {}, {}, {}
    for name, (patches, rewrites, fold) in variants.items():
        log.print(f"ablation: building the generator, {name}")
        with patched(*patches):
            fomm = FOMM(cfg, state.generator, state.kp_detector, fold_batchnorm=fold, rewrites=rewrites)
            specs = {s.name: s for s in networks(fomm, 1)}
            # (the keypoint detector is as it was: see keypoint_detector.py)
            module, concrete = specs["generator"].concrete()
            converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            model = converter.convert()
            threads = args.threads or os.cpu_count()
            interps[name] = lite.Interpreter(model_content=model, num_threads=threads).get_signature_runner()
            all_ops = collections.Counter(op["op_name"] for op in lite.Interpreter(
                model_content=model, experimental_op_resolver_type=lite.OpResolverType.
                BUILTIN_WITHOUT_DEFAULT_DELEGATES)._get_ops_details())
            ops[name] = {"ops": dict(all_ops), "left_to_builtin": undelegated_ops(model)}
            if name == "shipped":
                builtin = lite.Interpreter(model_content=model, num_threads=threads,
                                           experimental_op_resolver_type=lite.OpResolverType.
                                           BUILTIN_WITHOUT_DEFAULT_DELEGATES)
                interps["shipped, builtin kernels only (no XNNPACK)"] = builtin.get_signature_runner()
                interps["shipped, 1 thread"] = lite.Interpreter(model_content=model,
                                                                num_threads=1).get_signature_runner()
            if name in ("shipped", "batch norm not folded"):
                tf_fns[f"TensorFlow (SavedModel engine), {name}"] = (concrete, module, fomm)
            del converter, model
            del fomm, specs
        gc.collect()
    calls: dict[str, Callable[[], Any]] = {}
    for name, runner in interps.items():
        calls[f"generator, {name}"] = lambda r=runner: r(**engine_inputs)
    tf_inputs = {k: tf.constant(v) for k, v in engine_inputs.items()}
    for name, fn in tf_fns.items():
        calls[f"generator, {name}"] = lambda f=fn[0]: f(**tf_inputs)
    load_before = os.getloadavg()
    times = interleaved(calls, args.ablation_repeats)
    return {"times_ms": times, "ops": ops, "load_before": load_before, "load_after": os.getloadavg()}


def print_ablations(result: dict[str, Any]) -> None:
    times = result["times_ms"]
    base = med(times["generator, shipped"])
    table = Table(title="ablations: the generator (per frame) with one optimisation undone; same run, interleaved")
    for col in ("variant", "median ms", "min ms", "vs shipped", "TFLite ops left to the builtin kernels"):
        table.add_column(col, justify="left" if col in ("variant", "TFLite ops left to the builtin kernels")
                         else "right")
    kp_base = med(times["kp detector, shipped"]) if "kp detector, shipped" in times else None  # older JSON
    for name, t in times.items():
        m = med(t)
        ref = kp_base if name.startswith("kp detector") else base
        variant = name.split(", ", 1)[1] if name.startswith("generator, ") else name
        left = result["ops"].get(variant, {}).get("left_to_builtin")
        left_s = ", ".join(f"{k} {v}" for k, v in sorted(left.items())) if left else ("none" if left == {} else "")
        table.add_row(name, f"{m:,.1f}", f"{min(t):,.1f}", f"{m / ref:.2f}x", left_s)
    console.print(table)
    shipped = result["ops"]["shipped"]["ops"]
    console.print(f"shipped generator ops: {', '.join(f'{k} {v}' for k, v in sorted(shipped.items()))}")
    console.print(f"load average before {' '.join(f'{v:.2f}' for v in result['load_before'])}, after "
                  f"{' '.join(f'{v:.2f}' for v in result['load_after'])}")


# --------------------------------------------------------------------------- main

def print_header(machine: dict, torch_version: str, torch_threads, date: str) -> None:
    console.print(f"machine: {machine['cpu']}, {machine['usable_cores']} of {machine['cores']} cores "
                  f"({machine['simd']}), {machine['os']}, Python {machine['python']}, TensorFlow "
                  f"{machine['tensorflow']}, LiteRT {machine['litert']}, torch {torch_version} "
                  f"({torch_threads} threads); {date}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8, help="driving frames for the error columns (default 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--ablation-repeats", type=int, default=7, help="timed rounds of the ablations (default 7)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    parser.add_argument("--workdir", type=Path, help="keep the checkpoint and models here (default: a temp folder)")
    parser.add_argument("--quick", action="store_true", help="skip the ablations")
    parser.add_argument("--ablations-only", action="store_true", help="skip the comparison (needs an fp32 model: "
                        "give the --workdir of an earlier run, or it is converted)")
    parser.add_argument("--json", type=Path, help="also write everything as JSON")
    parser.add_argument("--render", type=Path, metavar="JSON", help="print the tables of an earlier --json and exit")
    args = parser.parse_args(argv)
    if args.render:
        report = json.loads(args.render.read_text())
        print_header(report["machine"], report.get("torch", "?"), report.get("torch_threads", "?"), report["date"])
        if "comparison" in report:
            print_comparison(report["comparison"], report["peak"], report.get("peak_bf16"))
        if "ablations" in report:
            print_ablations(report["ablations"])
        return 0
    args.threads = args.threads or os.cpu_count()
    torch.set_num_threads(args.threads)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="livepuppet-compare-")
        args.workdir = Path(tmp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    machine = bench.machine_info()
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    print_header(machine, torch.__version__, torch.get_num_threads(), date)
    ckpt = args.workdir / "vox-random.pth.tar"
    if ckpt.is_file():
        from tests.reference.fomm import build_models

        torch_models = build_models(VOX_PARAMS)
        blob = torch.load(ckpt, map_location="cpu", weights_only=False)
        torch_models[0].load_state_dict(blob["generator"])
        torch_models[1].load_state_dict(blob["kp_detector"])
    else:
        log.print("making a vox-256 checkpoint with random weights (tests/reference/factory.py)...")
        torch_models = make_checkpoint(ckpt, VOX_PARAMS, seed=0)
    for m in torch_models:
        m.eval()
    report: dict[str, Any] = {"machine": machine, "date": date, "torch": torch.__version__,
                              "torch_threads": torch.get_num_threads()}
    fp32_folder = args.workdir / "vox-fp32"
    if args.ablations_only:
        if not (fp32_folder / "manifest.json").is_file():
            from livepuppet.commands.convert import convert_checkpoint

            convert_checkpoint(ckpt, fp32_folder, numerics="original")
    else:
        report.update(comparison(args, ckpt, torch_models))
    if not args.quick:
        report["ablations"] = run_ablations(args, ckpt, fp32_folder)
        print_ablations(report["ablations"])
    console.print(f"total {time.time() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


def comparison(args, ckpt: Path, torch_models) -> dict[str, Any]:
    peak = peakmod.measure_peak(args.threads, repeats=10)
    result = main_comparison(args, ckpt, args.workdir, torch_models, peak)
    peak_after = peakmod.measure_peak(args.threads, repeats=10)
    log.print(f"peak convolution speed: {peak['gflops']:.1f} GFLOP/s before, {peak_after['gflops']:.1f} after")
    peak = max(peak, peak_after, key=lambda p: p["gflops"])  # the best the machine did during this run
    result["floor_ms"] = result["gflop"]["per_frame"] / peak["gflops"] * 1e3
    bf16_peak = peakmod.measure_peak_openvino("bf16", args.threads, repeats=10) if cpu.current().bf16 else None
    if bf16_peak:
        result["floor_ms_bf16"] = result["gflop"]["per_frame"] / bf16_peak["gflops"] * 1e3
    for name, row in result["rows"].items():
        bf16 = ("bf16" in name or "int8" in name) and bf16_peak
        row["floor_ratio"] = row["frame_ms"] / result["floor_ms_bf16" if bf16 else "floor_ms"]
    print_comparison(result, peak, bf16_peak)
    return {"peak": peak, "peak_bf16": bf16_peak, "comparison": result}


def run_ablations(args, ckpt: Path, fp32_folder: Path) -> dict[str, Any]:
    engine = open_engine(fp32_folder, "tflite", args.threads)
    frames = random_video(2, 256, 256, seed=6)
    source = random_frames(1, 256, 256, seed=5)[0]
    data = engine.encode_source(source)
    initial = engine.detect_keypoints(frames[:1])
    norm = engine.process_keypoints(data.keypoints, engine.detect_keypoints(frames[1:]), initial, True, True)
    inputs = {"driving_value": norm.value, "driving_jacobian": norm.jacobian,
              "source_value": data.keypoints.value, "source_jacobian": data.keypoints.jacobian,
              "features": data.features, "source_small": data.source_small}
    del engine
    return ablations(args, ckpt, inputs, frames[1:2])


if __name__ == "__main__":
    sys.exit(main())
