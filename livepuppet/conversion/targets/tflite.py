"""The ``tflite`` target: each network as a ``.tflite`` file of the XNNPACK graph, for LiteRT (and OpenVINO).

Built straight from the traced function (no SavedModel in between), at the
folder's precision, builtin ops only, and run once against the TensorFlow
graph on sample inputs: a file that does not reproduce it fails the convert.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from livepuppet.conversion.graphs import max_error, run_concrete, sample_inputs, signature
from livepuppet.conversion.job import Check, Job
from livepuppet.modelfolder.schema import Variant, Verified
from livepuppet.quiet import native_stderr_silenced

GRAPH = "xnnpack"  # what XNNPACK runs fastest (livepuppet.fomm.modules.rewrites)
FP32_TOLERANCE = 1e-4
# Max abs error a reduced-precision .tflite may have against the float32 graph on the sample inputs:
# loose (SMALL 64x64, random weights, measured at most 3.6e-3 for fp16 and 5.8e-2 for int8 over the
# four networks: about 28x and 17x below), there to catch a broken model (NaN, garbage), not to grade it.
REDUCED_TOLERANCE = {"fp16": 0.1, "int8": 1.0}
# Networks a precision leaves at float32. int8 keypoints are the soft-argmax of quantised
# heatmaps at temperature 0.1: they move by pixels and cost int8 most of its error (vox-256,
# random weights: 6.6 levels per pixel with int8 keypoints, 1.8 without), while the keypoint
# detector is under a tenth of the per-frame work.
FLOAT32_NETWORKS = {"int8": ("kp_detector",)}


def stored_precision(network: str, precision: str) -> str:
    """The precision ``network`` is stored at in a folder converted at ``precision``."""
    return "fp32" if network in FLOAT32_NETWORKS.get(precision, ()) else precision


def to_tflite(holder: tf.Module, concrete, precision: str) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex: runs on LiteRT alone
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        # Dynamic-range: int8 weights, activations quantised per inference. Full-integer
        # quantisation would round the sampling grids and keypoints to 8 bits.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with native_stderr_silenced():  # the converter's MLIR passes log to descriptor 2
        return converter.convert()


def make_interpreter(path: Path, threads: int | None = None, delegates: bool = True):
    from livepuppet.runtime.engines.tflite import interpreter_module

    lite = interpreter_module()
    resolver = lite.OpResolverType.AUTO if delegates else lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with native_stderr_silenced():
        return lite.Interpreter(model_path=str(path), num_threads=threads or os.cpu_count(),
                                experimental_op_resolver_type=resolver)


def tflite_ops(path: Path) -> list[str]:
    """The builtin ops a TFLite model uses, read from its interpreter (no delegate applied)."""
    interp = make_interpreter(path, threads=1, delegates=False)
    return sorted({op["op_name"] for op in interp._get_ops_details()})


def tensor_names(path: Path) -> dict[str, str]:
    """Signature name -> the file's own tensor name (``image`` -> ``serving_default_image:0``)."""
    runner = make_interpreter(path, threads=1, delegates=False).get_signature_runner("serving_default")
    return {name: d["name"] for group in (runner.get_input_details(), runner.get_output_details())
            for name, d in group.items()}


def run_tflite(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with native_stderr_silenced():  # the XNNPACK delegate says hello when the tensors are allocated
        return make_interpreter(path).get_signature_runner("serving_default")(**inputs)


def build(job: Job) -> None:
    """Write ``<network>.tflite`` for each network and check it against its TensorFlow graph."""
    fomm = job.graphs.fomm(GRAPH)
    for network in job.graphs.networks(GRAPH):
        task = job.progress.add_task(f"{network.name} (LiteRT)", total=3, step="tracing")
        holder, concrete = network.concrete()
        stored = stored_precision(network.name, job.precision)
        job.progress.update(task, advance=1, step="converting")
        path = job.tmp / f"{network.name}.tflite"
        path.write_bytes(to_tflite(holder, concrete, stored))
        job.progress.update(task, advance=1, step="verifying")
        inputs = sample_inputs(fomm, network, job.batch or 2)
        error = max_error(run_concrete(concrete, inputs), run_tflite(path, inputs))
        job.signatures[network.name] = signature(network, concrete)
        variant = Variant(network.name, "tflite", GRAPH, stored, (job.entry(path),), Verified("tensorflow", stored,
                          error), tensor_names(path))
        limit = FP32_TOLERANCE if stored == "fp32" else REDUCED_TOLERANCE[stored]
        job.add(variant, Check(variant.label, error, limit))
        job.progress.update(task, advance=1, step="done")
        if job.on_built:
            job.on_built(network.name)
