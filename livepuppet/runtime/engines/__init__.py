"""Runtime back ends behind one interface, each running a :class:`~livepuppet.runtime.plan.Plan`.

``tflite`` runs the ``.tflite`` files with LiteRT and never imports
TensorFlow; ``openvino`` runs OpenVINO (bf16 where the CPU has it);
``savedmodel`` runs TensorFlow (its GPU path, where TensorFlow sees one);
``onnx`` runs ONNX Runtime on the best execution provider installed (TensorRT,
CUDA, DirectML, CoreML... or the CPU).
Commands open one through :func:`livepuppet.runtime.choose.open_engine`, which
also runs ``--engine auto``. A new back end is one module here, a row in
:data:`OPENERS`, and a planner in :mod:`livepuppet.runtime.plan`.
"""

from __future__ import annotations

from importlib import import_module
from livepuppet.modelfolder.schema import ModelFolder
from livepuppet.runtime.engines.base import Engine, Keypoints, SourceData
from livepuppet.runtime.plan import Plan

# back end -> (module, class); imported only when used, so LiteRT never loads TensorFlow
OPENERS = {
    "tflite": ("livepuppet.runtime.engines.tflite", "TFLiteEngine"),
    "openvino": ("livepuppet.runtime.engines.openvino", "OpenVINOEngine"),
    "savedmodel": ("livepuppet.runtime.engines.savedmodel", "SavedModelEngine"),
    "onnx": ("livepuppet.runtime.engines.onnx", "ONNXEngine"),
}


def open_plan(folder: ModelFolder, chosen: Plan, threads: int | None = None, *, cache: bool = True) -> Engine:
    """The engine for ``chosen``. ``cache``: keep compiled models in the user cache (for the one that runs)."""
    module, name = OPENERS[chosen.engine]
    cls = getattr(import_module(module), name)
    return cls(folder, chosen, threads, cache=cache)


__all__ = ["Engine", "Keypoints", "SourceData", "open_plan", "OPENERS"]
