"""The ``openvino`` target: the XNNPACK graph as OpenVINO reads it, and the plain-graph generator at bf16.

See :mod:`livepuppet.conversion.openvino_ir` for why there are two graphs.
Every variant is run on OpenVINO here and compared with its TensorFlow graph.
"""

from __future__ import annotations

from dataclasses import replace

import tensorflow as tf

from livepuppet.conversion import openvino_ir
from livepuppet.conversion.graphs import max_error, run_concrete, sample_inputs
from livepuppet.conversion.job import Check, Job
from livepuppet.conversion.targets.tflite import FP32_TOLERANCE
from livepuppet.errors import LivepuppetError
from livepuppet.modelfolder.schema import Variant, Verified
from livepuppet.quiet import native_stderr_silenced
from livepuppet.runtime import cpu as cpumod

DIRNAME = "openvino"
BF16_WEIGHTS_TOLERANCE = 1e-6  # at bf16, bf16 weights and float32 weights must agree: measured 0 (bit-identical)
# bf16 weights computed at fp32 against the float32 graph: rounding of the weights alone (2^-9 relative);
# loose, there to catch a broken file (measured below 1e-2 on SMALL and vox-256 random weights)
BF16_WEIGHTS_AT_FP32_TOLERANCE = 0.1


def build(job: Job) -> None:
    if not openvino_ir.available():
        raise LivepuppetError("the openvino target needs OpenVINO: pip install openvino (or drop it from --targets)")
    _xnnpack_graph(job)
    _plain_generator(job)


def _xnnpack_graph(job: Job) -> None:
    """float32 .tflite files are OpenVINO's variants as they are; other precisions get float32 IR files."""
    fomm = job.graphs.fomm("xnnpack")
    for network in job.graphs.networks("xnnpack"):
        task = job.progress.add_task(f"{network.name} (OpenVINO)", total=2, step="reading")
        holder, concrete = network.concrete()
        lite = job.find(network.name, "tflite")
        if lite is not None and lite.precision == "fp32" and lite.graph == "xnnpack":
            variant = replace(lite, backend="openvino", verified=Verified())
        else:
            xml = job.tmp / DIRNAME / f"{network.name}.xml"
            ir_from(holder, concrete, xml)
            variant = Variant(network.name, "openvino", "xnnpack", "fp32", (job.entry(xml), job.entry(_bin(xml))))
        job.progress.update(task, advance=1, step="verifying")
        inputs = sample_inputs(fomm, network, job.batch or 2)
        error = max_error(run_concrete(concrete, inputs),
                          openvino_ir.run(job.tmp / variant.files[0].path, inputs, tensors=dict(variant.tensors)))
        variant = replace(variant, verified=Verified("tensorflow", "fp32", error))
        job.add(variant, Check(variant.label, error, FP32_TOLERANCE))
        job.progress.update(task, advance=1, step="done")


def _plain_generator(job: Job) -> None:
    """The plain graph's generator as IR with bf16 weights; its float32 IR is kept for the int8 target."""
    task = job.progress.add_task("generator (OpenVINO, plain graph, bf16 weights)", total=3, step="tracing")
    fomm = job.graphs.fomm("plain")
    network = next(n for n in job.graphs.networks("plain") if n.name == "generator")
    holder, concrete = network.concrete()
    fp32 = job.scratch_dir / "generator.plain.fp32.xml"
    ir_from(holder, concrete, fp32)
    job.scratch["generator.plain.fp32.xml"] = fp32
    job.progress.update(task, advance=1, step="bf16 weights")
    xml = job.tmp / DIRNAME / "generator.plain.bf16.xml"
    openvino_ir.save_with_bf16_weights(fp32, xml)
    job.progress.update(task, advance=1, step="verifying")
    inputs = sample_inputs(fomm, network, job.batch or 2)
    error = max_error(run_concrete(concrete, inputs), openvino_ir.run(xml, inputs))
    variant = Variant("generator", "openvino", "plain", "bf16", (job.entry(xml), job.entry(_bin(xml))),
                      Verified("tensorflow", "fp32", error))
    job.add(variant, Check(f"{variant.label} at fp32", error, BF16_WEIGHTS_AT_FP32_TOLERANCE))
    if cpumod.current().fast_precision() == "bf16":  # where this CPU computes bf16: the same to the bit
        want, got = (openvino_ir.run(path, inputs, precision="bf16") for path in (fp32, xml))
        job.checks.append(Check(f"{variant.label} at bf16", max_error(want, got), BF16_WEIGHTS_TOLERANCE,
                                against="float32 weights at bf16"))
    job.progress.update(task, advance=1, step="done")
    job.graphs.drop("plain")


def ir_from(holder: tf.Module, concrete, xml) -> None:
    """A float32 IR of a traced network, by way of a float32 .tflite made in passing."""
    source = xml.with_suffix(".tflite")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    xml.parent.mkdir(parents=True, exist_ok=True)
    with native_stderr_silenced():
        source.write_bytes(converter.convert())
    try:
        openvino_ir.convert(source, xml)
    finally:
        source.unlink(missing_ok=True)


def _bin(xml):
    return xml.with_suffix(".bin")
