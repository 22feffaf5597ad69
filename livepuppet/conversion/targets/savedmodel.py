"""The ``savedmodel`` target (on request): each network as a TensorFlow SavedModel, for TensorFlow on a GPU.

The plain graph: a GPU's own convolution kernels (cuDNN) do what XNNPACK's
rewrites do by hand. Each SavedModel is loaded back and checked against its graph.
"""

from __future__ import annotations

import shutil

import tensorflow as tf

from livepuppet.conversion.graphs import max_error, run_concrete
from livepuppet.conversion.job import Check, Job
from livepuppet.conversion.targets.tflite import FP32_TOLERANCE
from livepuppet.modelfolder.schema import Variant, Verified
from livepuppet.quiet import native_stderr_silenced

DIRNAME = "savedmodel"
GRAPH = "plain"


def build(job: Job) -> None:
    for name, network in job.graphs.traced(GRAPH, job.scratch_dir).items():
        task = job.progress.add_task(f"{name} (SavedModel)", total=2, step="saving")
        folder = job.tmp / DIRNAME / name
        shutil.copytree(network.saved, folder)
        job.progress.update(task, advance=1, step="verifying")
        with native_stderr_silenced():
            loaded = tf.saved_model.load(str(folder)).signatures["serving_default"]
            error = max_error(network.expected, run_concrete(loaded, network.inputs))
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "saved_model.pb")
        variant = Variant(name, "savedmodel", GRAPH, "fp32",
                          tuple(job.entry(p) for p in [folder / "saved_model.pb", *files]),
                          Verified("tensorflow", "fp32", error))
        job.add(variant, Check(variant.short, error, FP32_TOLERANCE))
        job.progress.update(task, advance=1, step="done")
