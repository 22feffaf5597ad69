"""The TensorFlow back end: runs the SavedModels (``convert --targets savedmodel``), on a GPU where TensorFlow sees one."""

from __future__ import annotations

import numpy as np

from livepuppet.errors import ModelFolderError
from livepuppet.modelfolder.schema import ModelFolder
from livepuppet.runtime.engines.base import Engine, check_inputs
from livepuppet.runtime.plan import Plan


class SavedModelEngine(Engine):
    name = "savedmodel"

    def __init__(self, folder: ModelFolder, plan: Plan, threads: int | None = None,  # noqa: ARG002 - TF's pools
                 cache: bool = True):  # noqa: ARG002 - nothing to cache
        super().__init__(folder, plan)
        from livepuppet.quiet import import_tensorflow

        tf = self._tf = import_tensorflow()
        self._fns = {}
        for network, step in plan.steps.items():
            path = folder.file(step.variant).parent  # files[0] is the folder's saved_model.pb
            try:
                fn = tf.saved_model.load(str(path)).signatures["serving_default"]
            except (OSError, ValueError, KeyError, IndexError, tf.errors.OpError) as exc:  # truncated files too
                raise ModelFolderError(f"cannot load the SavedModel {path} ({type(exc).__name__}); convert again") from None
            specs = fn.structured_input_signature[1]
            check_inputs(folder, network, {k: tuple(-1 if d is None else d for d in v.shape) for k, v in specs.items()},
                         path)
            self._fns[network] = fn

    def _run(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self._fns[model](**{k: self._tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out.items()}

    def close(self) -> None:
        self._fns.clear()
