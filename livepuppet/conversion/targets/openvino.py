"""The ``openvino`` target: the XNNPACK graph as OpenVINO reads it, and the plain-graph generator at bf16.

See :mod:`livepuppet.conversion.openvino_ir` for why there are two graphs.
Every variant is run on OpenVINO here and compared with its TensorFlow graph.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from livepuppet.conversion import openvino_ir
from livepuppet.conversion.graphs import max_error
from livepuppet.conversion.job import Check, Job
from livepuppet.conversion.targets.tflite import FP32_TOLERANCE, to_tflite
from livepuppet.errors import LivepuppetError
from livepuppet.modelfolder.schema import Variant, Verified
from livepuppet.runtime import cpu as cpumod

DIRNAME = "openvino"
BF16_WEIGHTS_TOLERANCE = 1e-6  # at bf16, bf16 weights and float32 weights must agree: measured 0 (bit-identical)
# bf16 weights computed at fp32 against the float32 graph: the rounding of the weights alone (2^-9 relative),
# which the SMALL test heads (tuned sharp) magnify to 9e-2 at 256x256; loose, there to catch a broken file
BF16_WEIGHTS_AT_FP32_TOLERANCE = 0.5


def build(job: Job) -> None:
    if not openvino_ir.available():
        raise LivepuppetError("the openvino target needs OpenVINO: pip install openvino (or drop it from --targets)")
    _xnnpack_graph(job)
    _plain_generator(job)


def _xnnpack_graph(job: Job) -> None:
    """float32 .tflite files are OpenVINO's variants as they are; other precisions get float32 IR files."""
    for name, network in job.graphs.traced("xnnpack", job.scratch_dir).items():
        task = job.progress.add_task(f"{name} (OpenVINO)", total=2, step="reading")
        lite = job.find(name, "tflite")
        if lite is not None and lite.precision == "fp32" and lite.graph == "xnnpack":
            variant = replace(lite, backend="openvino", verified=Verified())
        else:
            xml = job.tmp / DIRNAME / f"{name}.xml"
            ir_from(network.saved, xml)
            variant = Variant(name, "openvino", "xnnpack", "fp32", (job.entry(xml), job.entry(_bin(xml))))
        job.progress.update(task, advance=1, step="verifying")
        got = openvino_ir.run(job.tmp / variant.files[0].path, network.inputs, tensors=dict(variant.tensors))
        error = max_error(network.expected, got)
        variant = replace(variant, verified=Verified("tensorflow", "fp32", error))
        job.add(variant, Check(variant.short, error, FP32_TOLERANCE))
        job.progress.update(task, advance=1, step="done")


def _plain_generator(job: Job) -> None:
    """The plain graph's generator as IR with bf16 weights; its float32 IR is kept for the int8 target."""
    task = job.progress.add_task("generator (OpenVINO, plain graph, bf16 weights)", total=3, step="tracing")
    network = job.graphs.traced("plain", job.scratch_dir, ["generator"])["generator"]
    fp32 = job.scratch_dir / "generator.plain.fp32.xml"
    ir_from(network.saved, fp32)
    job.scratch["generator.plain.fp32.xml"] = fp32
    job.progress.update(task, advance=1, step="bf16 weights")
    xml = job.tmp / DIRNAME / "generator.plain.bf16.xml"
    openvino_ir.save_with_bf16_weights(fp32, xml)
    job.progress.update(task, advance=1, step="verifying")
    error = max_error(network.expected, openvino_ir.run(xml, network.inputs))
    variant = Variant("generator", "openvino", "plain", "bf16", (job.entry(xml), job.entry(_bin(xml))),
                      Verified("tensorflow", "fp32", error))
    job.add(variant, Check(f"{variant.short} @fp32", error, BF16_WEIGHTS_AT_FP32_TOLERANCE))
    if cpumod.current().fast_precision() == "bf16":  # where this CPU computes bf16: the same to the bit
        want, got = (openvino_ir.run(path, network.inputs, precision="bf16") for path in (fp32, xml))
        job.checks.append(Check(f"{variant.short} @bf16", max_error(want, got), BF16_WEIGHTS_TOLERANCE,
                                against="fp32 IR"))
    job.progress.update(task, advance=1, step="done")


def ir_from(saved: Path, xml: Path) -> None:
    """A float32 IR of a traced network, by way of a float32 .tflite made in passing."""
    source = xml.with_suffix(".tflite")
    xml.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(to_tflite(saved, "fp32"))
    try:
        openvino_ir.convert(source, xml)
    finally:
        source.unlink(missing_ok=True)


def _bin(xml: Path) -> Path:
    return xml.with_suffix(".bin")
