"""The ``onnx`` target (on request): the four networks as ONNX models, for ``--engine onnx``.

From the ``onnx`` graph (the browser graph's portable ops, each warp one op that
becomes ONNX's own GridSample: :mod:`livepuppet.conversion.onnx_export`), float32:
the precision is the provider's to choose (TensorRT fp16, CUDA tf32). Each model
is run on ONNX Runtime's CPU provider and compared with its TensorFlow graph.
"""

from __future__ import annotations

from livepuppet.conversion import onnx_export
from livepuppet.conversion.graphs import max_error, run_concrete, sample_inputs, signature
from livepuppet.conversion.job import Check, Job
from livepuppet.conversion.targets.tflite import FP32_TOLERANCE
from livepuppet.errors import LivepuppetError
from livepuppet.modelfolder.schema import Variant, Verified

GRAPH = "onnx"


def build(job: Job) -> None:
    if not onnx_export.available():
        raise LivepuppetError("the onnx target needs tf2onnx and ONNX Runtime: pip install 'livepuppet[onnx]'")
    fomm = job.graphs.fomm(GRAPH)  # traced live: its warps are marked ops that a SavedModel cannot hold
    for network in job.graphs.networks(GRAPH):
        task = job.progress.add_task(f"{network.name} (ONNX)", total=2, step="converting")
        holder, concrete = network.concrete()
        path = job.tmp / onnx_export.DIRNAME / f"{network.name}.onnx"
        onnx_export.convert(holder.serve, network.inputs, path)
        job.progress.update(task, advance=1, step="verifying")
        inputs = sample_inputs(fomm, network, job.batch or 2)
        error = max_error(run_concrete(concrete, inputs), onnx_export.run(path, inputs))
        job.signatures.setdefault(network.name, signature(network, concrete))
        variant = Variant(network.name, "onnx", GRAPH, "fp32", (job.entry(path),), Verified("tensorflow", "fp32", error))
        job.add(variant, Check(variant.short, error, FP32_TOLERANCE))
        job.progress.update(task, advance=1, step="done")
    job.graphs.drop(GRAPH)
