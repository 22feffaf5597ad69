"""The ``savedmodel`` target (on request): each network as a TensorFlow SavedModel, for TensorFlow on a GPU.

The plain graph: a GPU's own convolution kernels (cuDNN) do what XNNPACK's
rewrites do by hand. Each SavedModel is loaded back and checked against its graph.
"""

from __future__ import annotations

import tensorflow as tf

from livepuppet.conversion.graphs import max_error, run_concrete, sample_inputs
from livepuppet.conversion.job import Check, Job
from livepuppet.conversion.targets.tflite import FP32_TOLERANCE
from livepuppet.modelfolder.schema import Variant, Verified
from livepuppet.quiet import native_stderr_silenced

DIRNAME = "savedmodel"
GRAPH = "plain"


def build(job: Job) -> None:
    fomm = job.graphs.fomm(GRAPH)
    for network in job.graphs.networks(GRAPH):
        task = job.progress.add_task(f"{network.name} (SavedModel)", total=2, step="saving")
        holder, concrete = network.concrete()
        folder = job.tmp / DIRNAME / network.name
        with native_stderr_silenced():
            tf.saved_model.save(holder, str(folder), signatures={"serving_default": concrete})
        job.progress.update(task, advance=1, step="verifying")
        inputs = sample_inputs(fomm, network, job.batch or 2)
        loaded = tf.saved_model.load(str(folder)).signatures["serving_default"]
        error = max_error(run_concrete(concrete, inputs), run_concrete(loaded, inputs))
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "saved_model.pb")
        variant = Variant(network.name, "savedmodel", GRAPH, "fp32",
                          tuple(job.entry(p) for p in [folder / "saved_model.pb", *files]),
                          Verified("tensorflow", "fp32", error))
        job.add(variant, Check(variant.label, error, FP32_TOLERANCE))
        job.progress.update(task, advance=1, step="done")
