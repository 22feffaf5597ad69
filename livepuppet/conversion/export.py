"""Checkpoint -> model folder: four SavedModels, four TFLite models, a manifest, all self-verified.

The folder is built beside its destination and renamed into place only once
every model has been run and compared with the TensorFlow graph, so a failed
or interrupted convert never leaves a half-made or half-replaced model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from livepuppet import __version__
from livepuppet.fomm.checkpoint import Checkpoint
from livepuppet.fomm.config import ModelConfig
from livepuppet.errors import LivepuppetError
from livepuppet.runtime import cpu as cpumod
from livepuppet.conversion import onnx_export
from livepuppet.conversion import openvino_ir as openvino_export
from livepuppet.modelfolder.manifest import FORMAT, MANIFEST, MODEL_NAMES
from livepuppet.fomm.modules import FOMM, GRAPHS, XNNPACK
from livepuppet.paths import partial_name, stale_partials

PRECISIONS = ("fp32", "fp16", "int8")
FP32_TOLERANCE = 1e-4
# Max abs error a reduced-precision .tflite may have against the float32 graph on the sample inputs:
# loose (SMALL 64x64, random weights, measured at most 3.6e-3 for fp16 and 5.8e-2 for int8 over the
# four models: about 28x and 17x below), there to catch a broken model (NaN, garbage), not to grade it.
REDUCED_TOLERANCE = {"fp16": 0.1, "int8": 1.0}
# Models a precision leaves at float32. int8 keypoints are the soft-argmax of quantised
# heatmaps at temperature 0.1: they move by pixels and cost int8 most of its error (vox-256,
# random weights: 6.6 levels per pixel with int8 keypoints, 1.8 without), while the keypoint
# detector is under a tenth of the per-frame work.
FLOAT32_MODELS = {"int8": ("kp_detector",)}
# OpenVINO models also stored with bf16 weights where the CPU computes bf16: the generator holds
# nearly all the weights (vox-256: 272 of 330 MB at float32); the keypoint detector runs at fp32 by default.
BF16_WEIGHTS = ("generator",)
BF16_WEIGHTS_TOLERANCE = 1e-6  # measured 0 (bit-identical) on vox-256 and SMALL, Zen 4 AVX512-BF16


def openvino_graph(cpu: cpumod.CPU) -> str:
    """The graph OpenVINO (oneDNN) runs fastest on ``cpu``, by the generator's bf16 time.

    With AMX, oneDNN's direct convolutions beat the rewritten forms (vox-256
    generator 40 ms plain against 78 ms with XNNPACK's rewrites, Xeon with
    AMX-BF16, issue 11). With AVX512-BF16 or AVX2 alone the rewrites pay on
    oneDNN too (Zen 4: 149 ms rewritten against 221 ms plain; see
    benchmarks/README.md).
    """
    return "plain" if cpu.amx else "xnnpack"


def model_precision(model: str, precision: str) -> str:
    """The precision ``model`` is stored at in a folder converted at ``precision``."""
    return "fp32" if model in FLOAT32_MODELS.get(precision, ()) else precision


class VerificationError(LivepuppetError):
    """A built model does not reproduce the TensorFlow graph."""


@dataclass(frozen=True)
class ModelSpec:
    """One exported graph: its input signature and the function computing its named outputs."""

    name: str
    inputs: list[tf.TensorSpec]
    fn: Callable[..., dict[str, tf.Tensor]]
    module: tf.Module  # the part of the model whose weights this graph needs


def model_specs(fomm: FOMM, batch: int | None) -> list[ModelSpec]:
    cfg = fomm.cfg
    h, w = cfg.frame_shape
    k = cfg.num_kp
    feat_shape, small_shape = (s.shape for s in fomm.encode_source(tf.zeros([1, h, w, 3])))
    spec = tf.TensorSpec

    def kp_specs(prefix: str, b: int | None) -> list[tf.TensorSpec]:
        return [spec([b, k, 2], tf.float32, f"{prefix}_value"), spec([b, k, 2, 2], tf.float32, f"{prefix}_jacobian")]

    def detect(image):
        value, jac = fomm.detect_keypoints(image)
        return {"value": value, "jacobian": jac}

    def encode(source):
        features, small = fomm.encode_source(source)
        return {"features": features, "source_small": small}

    def process(source_value, source_jacobian, initial_value, initial_jacobian, driving_value, driving_jacobian,
                relative, adapt_scale):
        value, jac = fomm.process_keypoints((source_value, source_jacobian), (driving_value, driving_jacobian),
                                            (initial_value, initial_jacobian), relative, adapt_scale)
        return {"value": value, "jacobian": jac}

    def generate(driving_value, driving_jacobian, source_value, source_jacobian, features, source_small):
        pred = fomm.generate((driving_value, driving_jacobian), (source_value, source_jacobian), features, source_small)
        return {"prediction": pred}

    switch = [1] if fomm.rewrites.webgpu else []  # WebGPU takes no scalar tensors
    return [
        ModelSpec("kp_detector", [spec([batch, h, w, 3], tf.float32, "image")], detect, fomm.kp_detector),
        ModelSpec("source_encoder", [spec([1, h, w, 3], tf.float32, "source")], encode, fomm.source_encoder),
        ModelSpec("kp_processing", kp_specs("source", 1) + kp_specs("initial", 1) + kp_specs("driving", batch)
                  + [spec(switch, tf.float32, "relative"), spec(switch, tf.float32, "adapt_scale")], process, tf.Module()),
        ModelSpec("generator", kp_specs("driving", batch) + kp_specs("source", 1)
                  + [spec(feat_shape, tf.float32, "features"), spec(small_shape, tf.float32, "source_small")],
                  generate, fomm.generator),
    ]


def _export_module(model: ModelSpec) -> tf.Module:
    holder = tf.Module()
    holder.model = model.module
    holder.serve = tf.function(model.fn, input_signature=model.inputs)
    return holder


def _to_tflite(saved_model: Path, precision: str) -> bytes:
    return _tflite_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved_model)), precision)


def _traced_tflite(module: tf.Module, concrete, precision: str = "fp32") -> bytes:
    return _tflite_bytes(tf.lite.TFLiteConverter.from_concrete_functions([concrete], module), precision)


def _tflite_bytes(converter, precision: str) -> bytes:
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex: runs on LiteRT alone
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        # Dynamic-range: int8 weights, activations quantised per inference. Full-integer
        # quantisation would round the sampling grids and keypoints to 8 bits.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def tflite_ops(path: Path) -> list[str]:
    """The builtin ops a TFLite model uses, read from its interpreter (no delegate applied)."""
    interp = make_interpreter(path, threads=1, delegates=False)
    return sorted({op["op_name"] for op in interp._get_ops_details()})


def make_interpreter(path: Path, threads: int | None = None, delegates: bool = True):
    try:
        from ai_edge_litert import interpreter as lite
    except ImportError:  # pragma: no cover - LiteRT is a dependency; TensorFlow's copy as a fallback
        lite = tf.lite
    resolver = lite.OpResolverType.AUTO if delegates else lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return lite.Interpreter(model_path=str(path), num_threads=threads or os.cpu_count(),
                            experimental_op_resolver_type=resolver)


def _describe(specs) -> list[dict]:
    return [{"name": s.name, "shape": [d if d is not None else -1 for d in s.shape], "dtype": s.dtype.name}
            for s in specs]


def sample_inputs(fomm: FOMM, model: ModelSpec, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible random inputs: images in [0, 1], keypoints in [-0.7, 0.7], jacobians near the identity."""
    rng = np.random.default_rng(seed)
    h, w = fomm.cfg.frame_shape
    out: dict[str, np.ndarray] = {}
    for s in model.inputs:
        shape = [batch if d is None else d for d in s.shape]
        if s.name.endswith("value"):
            out[s.name] = rng.uniform(-0.7, 0.7, shape).astype(np.float32)
        elif s.name.endswith("jacobian"):
            out[s.name] = (np.eye(2) + rng.normal(0, 0.1, shape)).astype(np.float32)
        elif s.name in ("relative", "adapt_scale"):
            out[s.name] = np.ones(shape, np.float32)
        elif s.name in ("image", "source"):
            out[s.name] = rng.uniform(0, 1, shape).astype(np.float32)
    if model.name == "generator":
        features, small = fomm.encode_source(tf.constant(rng.uniform(0, 1, (1, h, w, 3)).astype(np.float32)))
        out["features"], out["source_small"] = features.numpy(), small.numpy()
    return out


def run_tflite(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    runner = make_interpreter(path).get_signature_runner("serving_default")
    return runner(**inputs)


def _max_error(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a)


def build(checkpoint: Checkpoint, cfg: ModelConfig, out: Path, *, precision: str = "fp32",
          batch: int | None = 1, console: Console | None = None,
          on_model_built: Callable[[str], None] | None = None, fast: bool = False) -> dict:
    """Convert a checkpoint into the model folder ``out``; returns the manifest written.

    ``on_model_built`` is called after each model is written (progress hooks, tests).
    """
    console = console or Console(stderr=True)
    out = Path(out)
    check_destination(out)
    start = time.perf_counter()
    fomm = FOMM(cfg, checkpoint.generator, checkpoint.kp_detector, rewrites=XNNPACK)  # the TFLite graph
    specs = model_specs(fomm, batch)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_folder(out)
    try:
        models, errors = {}, []
        with Progress(TextColumn("{task.description:<16}"), BarColumn(), TextColumn("{task.fields[step]:<12}"),
                      TimeElapsedColumn(), console=console, transient=False) as progress:
            for model in specs:
                task = progress.add_task(model.name, total=4, step="tracing")
                models[model.name], err = _build_one(fomm, model, tmp, precision, batch, progress, task)
                errors.append((model.name, *err))
                if on_model_built:
                    on_model_built(model.name)
            openvino = _build_openvino(checkpoint, cfg, fomm, tmp, models, precision, batch, progress)
            portable = _build_portable(checkpoint, cfg, tmp, models, precision, batch, progress)
        _print_errors(console, errors, precision, openvino, portable)
        _check_errors(errors, precision, openvino, portable)
        manifest = {
            "format": FORMAT, "livepuppet_version": __version__, "config": cfg.to_dict(),
            "checkpoint": {"name": checkpoint.path.name, "sha256": checkpoint.sha256},
            "precision": precision, "batch": batch, "models": models,
            "graphs": {"tflite": "xnnpack", **({"openvino": openvino["graph"]} if openvino else {}),
                       **{kind: v["graph"] for kind, v in portable.items()}},
            **{kind: {k: v for k, v in entry.items() if k != "graph"} for kind, entry in portable.items()},
            "tensorflow_version": tf.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if fast:
            manifest["fast"] = _build_fast(tmp, manifest, openvino, console)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    console.print(f"[green]model written to {out}[/] in {time.perf_counter() - start:.1f} s")
    return manifest


def _partial_folder(out: Path) -> Path:
    """A new empty folder beside ``out``; made with mkdir, not mkdtemp, so that the model folder
    it becomes gets the user's ordinary permissions (umask), not mkdtemp's private 0700."""
    for stale in stale_partials(out):  # a killed convert's leftovers (its process is gone)
        shutil.rmtree(stale, ignore_errors=True)
    while True:
        tmp = partial_name(out)
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


def check_destination(out: Path) -> None:
    """Refuse to replace anything but an earlier model folder, and say so before any work."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise LivepuppetError(f"{out} exists and is not a livepuppet model folder; choose another --out")
    parent = out.parent if out.parent != Path("") else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise LivepuppetError(f"cannot write to {out}: {probe} is a file, not a folder; choose another --out")
    if not os.access(probe, os.W_OK):
        raise LivepuppetError(f"cannot write to {probe}; choose a writable --out")


def _build_one(fomm: FOMM, model: ModelSpec, tmp: Path, precision: str, batch: int | None,
               progress: Progress, task) -> tuple[dict, tuple[float, float]]:
    module = _export_module(model)
    concrete = module.serve.get_concrete_function()
    saved = tmp / model.name
    progress.update(task, advance=1, step="SavedModel")
    tf.saved_model.save(module, str(saved), signatures={"serving_default": concrete})
    progress.update(task, advance=1, step="TFLite")
    tflite = tmp / f"{model.name}.tflite"
    stored = model_precision(model.name, precision)
    tflite.write_bytes(_to_tflite(saved, stored))
    progress.update(task, advance=1, step="verifying")
    inputs = sample_inputs(fomm, model, batch or 2)
    expected = {k: v.numpy() for k, v in concrete(**{k: tf.constant(v) for k, v in inputs.items()}).items()}
    loaded = tf.saved_model.load(str(saved)).signatures["serving_default"]
    got_saved = {k: v.numpy() for k, v in loaded(**{k: tf.constant(v) for k, v in inputs.items()}).items()}
    got_lite = run_tflite(tflite, inputs)
    progress.update(task, advance=1, step="done")
    entry = {
        "savedmodel": model.name, "tflite": tflite.name,
        "inputs": _describe(model.inputs),
        "outputs": _describe([tf.TensorSpec(v.shape, v.dtype, k) for k, v in concrete.structured_outputs.items()]),
        "tflite_ops": tflite_ops(tflite), "tflite_bytes": tflite.stat().st_size, "precision": stored,
    }
    return entry, (_max_error(expected, got_saved), _max_error(expected, got_lite))


def _build_openvino(checkpoint: Checkpoint, cfg: ModelConfig, fomm: FOMM, tmp: Path, models: dict,
                    precision: str, batch: int | None, progress: Progress) -> dict | None:
    """OpenVINO IR of each model, from the float32 graph OpenVINO runs best here; None without OpenVINO.

    Where that graph is the TFLite one and the ``.tflite`` file is float32, the
    file is reused; otherwise a float32 ``.tflite`` of OpenVINO's graph is made
    in passing. Each IR is verified at float32 against its TensorFlow graph, and
    its entry joins the model's in the manifest.
    """
    if not openvino_export.available():
        return None
    graph = openvino_graph(cpumod.current())
    ov_fomm = fomm if GRAPHS[graph] == fomm.rewrites else FOMM(cfg, checkpoint.generator, checkpoint.kp_detector,
                                                               rewrites=GRAPHS[graph])
    errors, bf16 = {}, {}
    for model in model_specs(ov_fomm, batch):
        task = progress.add_task(f"{model.name} (OpenVINO)", total=2, step="IR")
        module = _export_module(model)
        concrete = module.serve.get_concrete_function()
        source = tmp / models[model.name]["tflite"]
        reuse = ov_fomm is fomm and model_precision(model.name, precision) == "fp32"
        if not reuse:
            source = tmp / f".{model.name}.openvino.tflite"
            source.write_bytes(_traced_tflite(module, concrete))
        xml = tmp / openvino_export.DIRNAME / f"{model.name}.xml"
        try:
            openvino_export.convert(source, xml)
        finally:
            if not reuse:
                source.unlink(missing_ok=True)
        progress.update(task, advance=1, step="verifying")
        inputs = sample_inputs(ov_fomm, model, batch or 2)
        expected = {k: v.numpy() for k, v in concrete(**{k: tf.constant(v) for k, v in inputs.items()}).items()}
        errors[model.name] = _max_error(expected, openvino_export.run(xml, inputs))
        models[model.name]["openvino"] = f"{openvino_export.DIRNAME}/{xml.name}"
        progress.update(task, advance=1, step="done")
        if model.name in BF16_WEIGHTS and cpumod.current().fast_precision() == "bf16":
            bf16[model.name] = _build_bf16_weights(xml, inputs, models[model.name])
    import openvino as ov

    return {"graph": graph, "errors": errors, "bf16_weights": bf16, "version": ov.__version__}


def _build_bf16_weights(xml: Path, inputs: dict[str, np.ndarray], entry: dict) -> float:
    """A copy of ``xml`` with its weights stored at bf16, for the bf16 engine; its difference from ``xml`` at bf16.

    Built where this CPU computes bf16 (where it would run), and checked there:
    the two must agree to the bit (the plugin rounds the same weights the same way).
    """
    out = xml.with_name(f"{xml.stem}.bf16.xml")
    openvino_export.save_with_bf16_weights(xml, out)
    want, got = (openvino_export.run(path, inputs, precision="bf16") for path in (xml, out))
    entry["openvino_bf16"] = f"{openvino_export.DIRNAME}/{out.name}"
    return _max_error(want, got)


@dataclass(frozen=True)
class Portable:
    """A model set beside the TFLite one, from another graph: where it goes and how it is written and run."""

    graph: str  # a name in GRAPHS
    folder: str
    suffix: str
    key: str  # the manifest key of each model's file
    stored: dict[str, str]  # folder precision -> the precision its files keep
    wanted: Callable[[int | None], bool]  # by the folder's batch
    write: Callable[[tf.Module, ModelSpec, Path, str], None]
    run: Callable[[Path, dict[str, np.ndarray]], dict[str, np.ndarray]]


def _write_webgpu(module: tf.Module, model: ModelSpec, path: Path, precision: str) -> None:
    path.write_bytes(_traced_tflite(module, module.serve.get_concrete_function(), precision))


def _write_onnx(module: tf.Module, model: ModelSpec, path: Path, precision: str) -> None:  # noqa: ARG001 - fp32
    onnx_export.convert(module.serve, model.inputs, path)


PORTABLE = {
    # The page on WebGPU: one frame a call; WebGPU computes in float, so int8 weights are stored as fp16 there.
    "webgpu": Portable("browser", "webgpu", ".tflite", "tflite_webgpu", {"fp32": "fp32", "fp16": "fp16", "int8": "fp16"},
                       lambda batch: batch == 1, _write_webgpu, run_tflite),
    # ONNX Runtime, where tf2onnx is installed (the onnx extra); float32, the precision is the provider's.
    "onnx": Portable("onnx", onnx_export.DIRNAME, ".onnx", "onnx", {"fp32": "fp32", "fp16": "fp32", "int8": "fp32"},
                     lambda batch: onnx_export.available(), _write_onnx, onnx_export.run),
}


def _build_portable(checkpoint: Checkpoint, cfg: ModelConfig, tmp: Path, models: dict, precision: str,
                    batch: int | None, progress: Progress) -> dict[str, dict]:
    """Each :data:`PORTABLE` set this folder wants, its models verified against their TensorFlow graph."""
    out = {}
    for kind, variant in PORTABLE.items():
        if not variant.wanted(batch):
            continue
        stored = variant.stored[precision]
        fomm = FOMM(cfg, checkpoint.generator, checkpoint.kp_detector, rewrites=GRAPHS[variant.graph])
        errors = {}
        for model in model_specs(fomm, batch):
            task = progress.add_task(f"{model.name} ({kind})", total=2, step="converting")
            module = _export_module(model)
            path = tmp / variant.folder / f"{model.name}{variant.suffix}"
            path.parent.mkdir(exist_ok=True)
            variant.write(module, model, path, model_precision(model.name, stored))
            progress.update(task, advance=1, step="verifying")
            inputs = sample_inputs(fomm, model, batch or 2)
            concrete = module.serve.get_concrete_function()
            expected = {k: v.numpy() for k, v in concrete(**{k: tf.constant(v) for k, v in inputs.items()}).items()}
            errors[model.name] = _max_error(expected, variant.run(path, inputs))
            models[model.name][variant.key] = path.relative_to(tmp).as_posix()
            progress.update(task, advance=1, step="done")
        out[kind] = {"graph": variant.graph, "precision": stored, "errors": errors}
        if kind == "onnx":
            out[kind].update(opset=onnx_export.OPSET, tf2onnx=onnx_export.version())
    return out


def _build_fast(tmp: Path, manifest: dict, openvino: dict | None, console: Console) -> dict:
    """``--fast``: the int8 generator (:mod:`.quantize`), its error against float32 said and recorded."""
    if not openvino:
        raise LivepuppetError("--fast needs OpenVINO and NNCF: pip install openvino nncf")
    try:
        from livepuppet.conversion.quantize import build_fast
    except ImportError:
        raise LivepuppetError("--fast needs NNCF: pip install nncf") from None
    with console.status("quantising the generator to int8 (NNCF, 40 calibration frames)..."):
        fast = build_fast(tmp, manifest, openvino["graph"])
    console.print(f"int8 generator: {fast['mean_levels']:.2f} mean / {fast['max_levels']:.1f} max levels from "
                  f"float32 on the bundled face ({fast['kept_in_float']} ops kept at {fast['float_precision']})")
    return fast


def _print_errors(console: Console, errors: list[tuple[str, float, float]], precision: str,
                  openvino: dict | None, portable: dict[str, dict] | None = None) -> None:
    table = Table(title="self-verification: max abs error against the TensorFlow graph")
    table.add_column("model")
    table.add_column("SavedModel (fp32)", justify="right")
    table.add_column("TFLite", justify="right")
    extra = {f"OpenVINO fp32 ({openvino['graph']} graph)": openvino} if openvino else {}
    titles = {"webgpu": "WebGPU TFLite", "onnx": "ONNX (CPU)"}
    extra |= {titles[kind]: v for kind, v in (portable or {}).items()}
    for title in extra:
        table.add_column(title, justify="right")
    for name, saved, lite in errors:
        row = [name, f"{saved:.2e}", f"{lite:.2e} ({model_precision(name, precision)})"]
        cells = [f"{v['errors'][name]:.2e}" + (f" ({model_precision(name, v['precision'])})"
                                               if v.get("precision", "fp32") != "fp32" else "") for v in extra.values()]
        table.add_row(*row, *cells)
    console.print(table)
    for name, err in (openvino or {}).get("bf16_weights", {}).items():
        console.print(f"{name} with bf16 weights (OpenVINO bf16): {err:.2e} from the float32 IR at bf16")


def _check_errors(errors: list[tuple[str, float, float]], precision: str, openvino: dict | None = None,
                  portable: dict[str, dict] | None = None) -> None:
    for name, err in (openvino or {}).get("bf16_weights", {}).items():
        if not err <= BF16_WEIGHTS_TOLERANCE:
            raise VerificationError(f"the {name} stored at bf16 computes {err:.2e} away from the float32 one at "
                                    "bf16 (they should agree); nothing was written. Please report this with your "
                                    "OpenVINO version")
    for name, saved, lite in errors:
        stored = model_precision(name, precision)
        worst = max(saved, lite) if stored == "fp32" else saved
        if openvino:
            worst = max(worst, openvino["errors"][name])
        for variant in (portable or {}).values():
            kept = model_precision(name, variant["precision"])
            if kept == "fp32":
                worst = max(worst, variant["errors"][name])
            elif not variant["errors"][name] <= REDUCED_TOLERANCE[kept]:
                lite, stored = variant["errors"][name], kept
        if stored != "fp32" and not lite <= REDUCED_TOLERANCE[stored]:  # NaN fails too
            raise VerificationError(
                f"the {stored} {name} differs from the float32 graph by {lite:.2e} (limit {REDUCED_TOLERANCE[stored]:g}); "
                "nothing was written. Convert with --precision fp32"
            )
        if not worst <= FP32_TOLERANCE:
            raise VerificationError(
                f"the converted {name} differs from the TensorFlow graph by {worst:.2e} (limit {FP32_TOLERANCE:g}); "
                "nothing was written. Please report this with your TensorFlow version"
            )


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished folder into place; an existing model is swapped out, never half-replaced."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old / out.name, out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["build", "model_specs", "openvino_graph", "PRECISIONS", "MODEL_NAMES", "VerificationError", "tflite_ops", "sample_inputs"]
