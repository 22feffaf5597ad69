"""The LiteRT back end: runs the ``.tflite`` files on XNNPACK. Never imports TensorFlow."""

from __future__ import annotations

import os

import numpy as np

from ..errors import ModelFolderError
from ..manifest import MODEL_NAMES, Manifest
from .base import Engine


def _interpreter_module():
    """LiteRT's interpreter; TensorFlow's copy only when LiteRT is not installed."""
    try:
        from ai_edge_litert import interpreter
        return interpreter
    except ImportError:
        import tensorflow as tf  # noqa: the fallback the engine is allowed

        return tf.lite


class TFLiteEngine(Engine):
    name = "tflite"

    def __init__(self, manifest: Manifest, threads: int | None = None):
        super().__init__(manifest)
        lite = _interpreter_module()
        self.threads = threads or os.cpu_count() or 1
        self._runners = {}
        for model in MODEL_NAMES:
            path = manifest.path(model, "tflite")
            if not path.is_file():
                raise ModelFolderError(f"{path} is missing; convert the checkpoint again")
            try:
                interp = lite.Interpreter(model_path=str(path), num_threads=self.threads)
            except (ValueError, RuntimeError) as exc:
                raise ModelFolderError(f"{path} is not a valid TFLite model ({exc}); convert again") from None
            self._runners[model] = interp.get_signature_runner("serving_default")

    def _run(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._runners[model](**inputs)
