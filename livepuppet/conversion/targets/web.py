"""The ``web`` target (on request, and with ``convert --web``): the browser graph's ``.tflite`` files.

LiteRT.js runs an op on WebGPU only in the forms WebGPU takes (rank <= 4, no
scalars, 1-D gathers: :mod:`livepuppet.fomm.modules.webgpu`); the ``browser``
graph computes the same arithmetic in those forms, so every op of the four
networks runs on the GPU in the page. One frame a call (LiteRT.js runs fixed
shapes); WebGPU computes in float, so an int8 folder's browser files keep fp16
weights. Each file is run with LiteRT here and compared with its TensorFlow graph.
"""

from __future__ import annotations

from livepuppet.conversion.graphs import give_back_memory, max_error
from livepuppet.conversion.job import Check, Job
from livepuppet.conversion.targets.tflite import FP32_TOLERANCE, REDUCED_TOLERANCE, run_tflite, stored_precision
from livepuppet.conversion.targets.tflite import tensor_names, to_tflite
from livepuppet.errors import LivepuppetError
from livepuppet.modelfolder.schema import Variant, Verified

GRAPH = "browser"
DIRNAME = "web"
STORED = {"fp32": "fp32", "fp16": "fp16", "int8": "fp16"}  # the folder's precision -> the browser files'


def build(job: Job) -> None:
    if job.batch != 1:
        raise LivepuppetError("the web target needs one frame a call (LiteRT.js runs fixed shapes): convert with "
                              "--batch 1")
    for name, network in job.graphs.traced(GRAPH, job.scratch_dir).items():
        task = job.progress.add_task(f"{name} (browser, WebGPU)", total=2, step="converting")
        stored = stored_precision(name, STORED[job.precision])
        path = job.tmp / DIRNAME / f"{name}.tflite"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(to_tflite(network.saved, stored))
        give_back_memory()
        job.progress.update(task, advance=1, step="verifying")
        error = max_error(network.expected, run_tflite(path, network.inputs))
        variant = Variant(name, "litertjs", GRAPH, stored, (job.entry(path),), Verified("tensorflow", stored, error),
                          tensor_names(path))
        job.add(variant, Check(variant.short, error, FP32_TOLERANCE if stored == "fp32" else REDUCED_TOLERANCE[stored]))
        job.progress.update(task, advance=1, step="done")
