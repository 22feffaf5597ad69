"""vox-256 end to end on an NVIDIA GPU: ONNX Runtime's TensorRT and CUDA providers and TensorFlow, each
precision's speed and error against float32. One script, two steps:

    # here (TensorFlow and tf2onnx; about a minute): the vox-256 ONNX models without their large weights
    python benchmarks/gpu_check.py prepare                       # -> .gpu_check/ (about 3 MB)
    # on the GPU machine (device tool: carry [".gpu_check"]), within a few minutes:
    python3 benchmarks/gpu_check.py run [--frames 30] [--json $OUT/gpu_check.json]

A lent machine reaches no package registry and carries at most 64 MiB, so the
180 MB generator cannot travel: ``prepare`` keeps the graphs and their small
constants and, for each large weight tensor, its shape, mean and spread;
``run`` draws those weights again (seeded, the same everywhere) and writes the
four models back. They are random weights either way (as every vox-256 figure
in benchmarks/README.md), so speed and each precision's error keep their meaning.

``run`` first installs any wheels found in ``--wheels`` (default:
.gpu_check/wheels, shared/wheels) without an index: onnxruntime-gpu, tensorrt,
tensorflow and their CUDA libraries, where they fit; otherwise it uses what the
machine has. It then measures, on the bundled portrait's head motion
(runtime/probe.py) and livepuppet's own pipeline:

- ONNX Runtime on every provider the installed build offers, at each precision
  it has here (TensorRT fp32 and fp16; CUDA fp32 and TF32), errors against the
  CPU provider at float32 on the same weights; where the ops ran (profiled);
- TensorFlow on the GPU (the savedmodel engine's graph, built from vox-256
  random weights), TF32 on (TensorFlow's default) and off, errors against
  TensorFlow on the CPU.

What cannot run is said with its reason (a provider missing from the build, a
library that fails to load); nothing is skipped silently. The issue's bar: 60
fps or more end to end on CUDA/TensorRT.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SKELETON = ROOT / ".gpu_check"
LARGE = 16384  # float initializers with more elements are drawn again on the GPU machine
FRAMES = 30


# --------------------------------------------------------------------------- prepare (here)


def prepare(out: Path) -> None:
    """The vox-256 ONNX models (random weights, seed 0) with their large weights replaced by their statistics."""
    import onnx
    from onnx import numpy_helper

    from dataclasses import asdict

    from livepuppet.conversion import onnx_export
    from livepuppet.conversion.graphs import networks, signature
    from livepuppet.fomm import config as cfgmod
    from livepuppet.fomm.modules import FOMM, GRAPHS
    from livepuppet.fomm.random_weights import random_state

    cfg = cfgmod.preset("vox")
    generator, kp_detector = random_state(cfg, seed=0)
    fomm = FOMM(cfg, generator, kp_detector, rewrites=GRAPHS["onnx"])
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    drawn, signatures = {}, {}
    for model in networks(fomm, 1):
        holder, concrete = model.concrete()
        signatures[model.name] = asdict(signature(model, concrete))
        path = out / "onnx" / f"{model.name}.onnx"
        onnx_export.convert(holder.serve, model.inputs, path)
        proto = onnx.load(str(path))
        for tensor in proto.graph.initializer:
            values = numpy_helper.to_array(tensor)
            if values.dtype == np.float32 and values.size > LARGE:
                drawn[f"{model.name}/{tensor.name}"] = [list(values.shape), float(values.mean()), float(values.std())]
                tensor.ClearField("raw_data")
                tensor.ClearField("float_data")
        onnx.save(proto, str(path))
    (out / "signatures.json").write_text(json.dumps(signatures))
    (out / "drawn.json").write_text(json.dumps(drawn))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {len(drawn)} weight tensors to draw again there; {size / 1e6:.1f} MB to carry")


# --------------------------------------------------------------------------- run (on the GPU machine)


def install(folders: list[Path]) -> list[str]:
    """pip-install every wheel in ``folders`` without an index; returns what was installed."""
    wheels = [str(w) for folder in folders if folder.is_dir() for w in sorted(folder.glob("*.whl"))]
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--quiet",
                        *[f"--find-links={f}" for f in folders if f.is_dir()], *wheels], check=False)
    return [Path(w).name for w in wheels]


def rebuild(skeleton: Path, folder: Path) -> Path:
    """The model folder of ``skeleton`` with its large weights drawn again (seeded by name: the same everywhere)."""
    import onnx
    from onnx import numpy_helper

    drawn = json.loads((skeleton / "drawn.json").read_text())
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    for path in sorted((skeleton / "onnx").glob("*.onnx")):
        proto = onnx.load(str(path))
        for i, tensor in enumerate(proto.graph.initializer):
            key = f"{path.stem}/{tensor.name}"
            if key in drawn:
                shape, mean, std = drawn[key]
                rng = np.random.default_rng(zlib.crc32(key.encode()))
                values = rng.normal(mean, std, shape).astype(np.float32)
                proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(values, tensor.name))
        onnx.save(proto, str(folder / "onnx" / path.name))
    _write_manifest(skeleton, folder)
    return folder


def _write_manifest(skeleton: Path, folder: Path) -> None:
    """The rebuilt folder's manifest: its four ONNX variants, with the sizes and hashes of the files drawn here."""
    from livepuppet.fomm import config as cfgmod
    from livepuppet.modelfolder.schema import ModelFolder, Signature, Tensor, Variant, file_entry, to_json

    sigs = {name: Signature(*(tuple(Tensor(t["name"], tuple(t["shape"]), t["dtype"]) for t in doc[part])
                              for part in ("inputs", "outputs")))
            for name, doc in json.loads((skeleton / "signatures.json").read_text()).items()}
    variants = tuple(Variant(name, "onnx", "onnx", "fp32", (file_entry(folder, folder / "onnx" / f"{name}.onnx"),))
                     for name in sigs)
    model = ModelFolder(folder, cfgmod.preset("vox"), 1, sigs, variants, checkpoint_name="random-256x256-seed0",
                        checkpoint_sha256="random", created="gpu_check")
    (folder / "manifest.json").write_text(to_json(model))


def measure_onnx(folder: Path, frames: int) -> list[dict]:
    """Every provider and precision of the installed onnxruntime, against its CPU provider at float32."""
    from livepuppet.modelfolder.read import read_folder
    from livepuppet.runtime import timing
    from livepuppet.runtime.engines import onnx as engines_onnx, open_plan
    from livepuppet.runtime.plan import Machine, Request, candidates

    model = read_folder(folder)
    offered = engines_onnx.available()
    rows, reference = [], None
    plans = candidates(model, Machine.current(), Request("onnx", device="cpu"))
    plans += [p for p in candidates(model, Machine.current(), Request("onnx", device="auto")) if p.device != "cpu"]
    for chosen in plans:
        label = f"onnx {chosen.precision} on {engines_onnx.BY_NAME[chosen.device].label}"
        try:
            start = time.perf_counter()
            engine = open_plan(model, chosen)
            measured = timing.measure(engine, frames)
            out, frame_ms, generator_ms = measured.frames, measured.frame_ms, measured.stages_ms["generate"]
            opened = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - a provider that fails to load is a finding, not a crash
            rows.append({"engine": label, "error": _first_line(exc)})
            continue
        reference = out if reference is None else reference
        mean, worst = timing.levels(out, reference)
        rows.append({"engine": label, "frame_ms": frame_ms, "fps": 1e3 / frame_ms, "generator_ms": generator_ms,
                     "levels_mean": mean, "levels_max": worst, "seconds_with_start": opened,
                     "picture_std": float(out.std()),  # a picture, not a flat frame, from the drawn weights
                     "placement": {m: engines_onnx.describe_placement(p) for m, p in engine.placement.items()}})
        del engine
    missing = [p.label for p in engines_onnx.PROVIDERS if p.name in ("tensorrt", "cuda") and p not in offered]
    for label in missing:
        rows.append({"engine": f"onnx on {label}", "error": f"this onnxruntime build offers no {label} provider "
                     f"({', '.join(p.label for p in offered)}): carry onnxruntime-gpu (and tensorrt) wheels"})
    return rows


def measure_tensorflow(skeleton: Path, frames: int) -> list[dict]:
    """TensorFlow's graph (the savedmodel engine's) on the GPU, TF32 on and off, against TensorFlow on the CPU."""
    try:
        from livepuppet.quiet import import_tensorflow

        tf = import_tensorflow()
    except ImportError as exc:
        return [{"engine": "tensorflow (GPU)", "error": f"TensorFlow is not installed here ({exc})"}]
    if not tf.config.list_physical_devices("GPU"):
        built = "built with CUDA" if tf.test.is_built_with_cuda() else "built without CUDA"
        return [{"engine": "tensorflow (GPU)", "error": f"TensorFlow {tf.__version__} sees no GPU ({built})"}]
    from livepuppet.runtime import timing

    manifest_folder = Path(tempfile.mkdtemp(prefix="gpu-check-tf-"))
    rebuild(skeleton, manifest_folder)
    rows, reference = [], None
    # the savedmodel engine's graph (the TFLite one, XNNPACK's rewrites) on the CPU for reference, then on the
    # GPU with TF32 (TensorFlow's default) and without, and the plain graph, which a GPU may run better
    for device, graph, tf32 in (("CPU", "xnnpack", False), ("GPU", "xnnpack", True), ("GPU", "xnnpack", False),
                                ("GPU", "plain", False)):
        tf.config.experimental.enable_tensor_float_32_execution(tf32)
        engine = TensorFlowGraph(manifest_folder, f"/{device}:0", graph)
        measured = timing.measure(engine, frames)
        out, frame_ms, generator_ms = measured.frames, measured.frame_ms, measured.stages_ms["generate"]
        reference = out if reference is None else reference
        mean, worst = timing.levels(out, reference)
        label = f"tensorflow {graph} graph on {device}, {'TF32' if tf32 else 'fp32'}"
        rows.append({"engine": label, "frame_ms": frame_ms, "fps": 1e3 / frame_ms, "generator_ms": generator_ms,
                     "levels_mean": mean, "levels_max": worst})
    return rows


def TensorFlowGraph(folder: Path, device: str, graph: str):  # noqa: N802 - a class made where TensorFlow is
    """An Engine running the four TensorFlow functions of vox-256 (random weights, seed 0) on ``device``."""
    import tensorflow as tf

    from livepuppet.conversion.graphs import networks
    from livepuppet.fomm import config as cfgmod
    from livepuppet.fomm.modules import FOMM, GRAPHS
    from livepuppet.fomm.random_weights import random_state
    from livepuppet.modelfolder.read import read_folder
    from livepuppet.runtime.engines import Engine
    from livepuppet.runtime.plan import Machine, Request, plan

    class Graph(Engine):
        name = "tensorflow"

        def __init__(self):
            model = read_folder(folder)
            super().__init__(model, plan(model, Machine.current(), Request("onnx", exact=True)))
            cfg = cfgmod.preset("vox")
            with tf.device(device):
                fomm = FOMM(cfg, *random_state(cfg, seed=0), rewrites=GRAPHS[graph])
                self.fns = {m.name: tf.function(m.fn, input_signature=m.inputs) for m in networks(fomm, 1)}
                self.fomm = fomm

        def _run(self, model, inputs):
            with tf.device(device):
                return {k: v.numpy() for k, v in self.fns[model](**{k: tf.constant(v) for k, v in inputs.items()}).items()}

    return Graph()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def report(rows: list[dict], machine: dict) -> None:
    print(f"machine: {machine}")
    print(f"{'engine':34s} {'frame ms':>9s} {'fps':>7s} {'gen ms':>8s}  levels from fp32 (mean / max)")
    for r in rows:
        if "error" in r:
            print(f"{r['engine']:34s} not measured: {r['error']}")
            continue
        print(f"{r['engine']:34s} {r['frame_ms']:9.2f} {r['fps']:7.1f} {r['generator_ms']:8.2f}  "
              f"{r['levels_mean']:.3f} / {r['levels_max']:.1f}"
              + (f"  (picture std {r['picture_std']:.3f})" if "picture_std" in r else ""))
        for model, where in r.get("placement", {}).items():
            print(f"{'':36s}{model}: {where}")


def machine() -> dict:
    info = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        info["gpu"] = smi.stdout.strip() or smi.stderr.strip()[:200]
    except (OSError, subprocess.TimeoutExpired) as exc:
        info["gpu"] = f"nvidia-smi failed: {exc}"
    for package in ("onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorflow"):
        try:
            from importlib import metadata

            info[package] = metadata.version(package)
        except Exception:  # noqa: BLE001
            pass
    return info


def run(args: argparse.Namespace) -> None:
    installed = install([Path(w) for w in args.wheels])
    if installed:
        print(f"installed from wheels: {', '.join(installed)}")
    facts = machine()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        folder = rebuild(args.skeleton, Path(tmp) / "vox")
        rows = measure_onnx(folder, args.frames) + measure_tensorflow(args.skeleton, args.frames)
    report(rows, facts)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": facts, "rows": rows}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="here: write the carried vox-256 ONNX skeleton")
    p.add_argument("--out", type=Path, default=SKELETON)
    p = sub.add_parser("run", help="on the GPU machine: install carried wheels, rebuild, measure")
    p.add_argument("--skeleton", type=Path, default=SKELETON)
    p.add_argument("--frames", type=int, default=FRAMES)
    p.add_argument("--wheels", nargs="*", default=[str(SKELETON / "wheels"), str(ROOT / "shared" / "wheels")])
    p.add_argument("--json", help="also write the results as JSON (e.g. $OUT/gpu_check.json)")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.out)
    else:
        run(args)


if __name__ == "__main__":
    main()
