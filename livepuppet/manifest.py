"""The model folder's ``manifest.json``: what a converted model holds and how to call it.

Read without TensorFlow, so the LiteRT engine can load a model folder in a
process where TensorFlow is not installed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelFolderError

FORMAT = 1  # bump when a model folder made by an older livepuppet can no longer be read
MANIFEST = "manifest.json"
MODEL_NAMES = ("kp_detector", "source_encoder", "kp_processing", "generator")


@dataclass(frozen=True)
class Manifest:
    folder: Path
    data: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.data["config"]

    @property
    def frame_size(self) -> tuple[int, int]:
        h, w = self.config["dataset_params"]["frame_shape"][:2]
        return int(h), int(w)

    @property
    def num_kp(self) -> int:
        return int(self.config["model_params"]["common_params"]["num_kp"])

    @property
    def batch(self) -> int | None:
        """Driving frames per call: an int for a static batch, None for a dynamic one."""
        return self.data["batch"]

    @property
    def precision(self) -> str:
        return self.data["precision"]

    def model(self, name: str) -> dict[str, Any]:
        return self.data["models"][name]

    def path(self, name: str, kind: str) -> Path:
        return self.folder / self.model(name)[kind]


def read_manifest(folder: str | Path) -> Manifest:
    """Load and check a model folder's manifest; every problem is a one-line ModelFolderError."""
    folder = Path(folder)
    hint = f"convert a checkpoint into it with `livepuppet convert CHECKPOINT --out {folder}`"
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} not found; {hint}")
    path = folder / MANIFEST
    if not path.is_file():
        raise ModelFolderError(f"{folder} is not a livepuppet model (no {MANIFEST}); {hint}")
    try:
        data = json.loads(path.read_text())
        fmt = data["format"]
        version = data.get("livepuppet_version", "?")
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelFolderError(f"{path} is unreadable or damaged; {hint}") from None
    if fmt != FORMAT:
        raise ModelFolderError(
            f"{folder} was made by livepuppet {version} (model format {fmt}); this livepuppet reads "
            f"format {FORMAT}: convert the checkpoint again"
        )
    manifest = Manifest(folder, data)
    for name in MODEL_NAMES:
        if name not in data.get("models", {}):
            raise ModelFolderError(f"{folder} lacks the {name} model; {hint}")
    return manifest
