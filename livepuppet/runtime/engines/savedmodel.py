"""The TensorFlow back end: runs the SavedModels (on a GPU where TensorFlow sees one)."""

from __future__ import annotations

import numpy as np

from livepuppet.errors import ModelFolderError
from livepuppet.modelfolder.manifest import MODEL_NAMES, Manifest
from livepuppet.runtime.engines.base import Engine


class SavedModelEngine(Engine):
    name = "savedmodel"

    def __init__(self, manifest: Manifest):
        super().__init__(manifest)
        from livepuppet.quiet import import_tensorflow

        tf = self._tf = import_tensorflow()
        self._fns = {}
        for model in MODEL_NAMES:
            path = manifest.path(model, "savedmodel")
            try:
                self._fns[model] = tf.saved_model.load(str(path)).signatures["serving_default"]
            except (OSError, ValueError, KeyError, IndexError, tf.errors.OpError) as exc:  # truncated files too
                raise ModelFolderError(f"cannot load the SavedModel {path} ({type(exc).__name__}); convert again") from None

    def _run(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self._fns[model](**{k: self._tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out.items()}
