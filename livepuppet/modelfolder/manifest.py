"""The model folder's ``manifest.json``: what a converted model holds and how to call it.

Read without TensorFlow, so the LiteRT engine can load a model folder in a
process where TensorFlow is not installed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livepuppet.errors import ModelFolderError

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


# Written by convert where their back end is installed (OpenVINO, ONNX: the onnx extra) or used (the page's
# WebGPU graph: batch 1); a folder without them runs on the others.
OPTIONAL_KINDS = ("openvino", "openvino_bf16", "openvino_int8", "onnx", "tflite_webgpu")
MAX_MANIFEST_BYTES = 1 << 20  # a real one is about 20 KB
MAX_SIDE = 4096  # pixels per frame side: far above any FOMM model, far below what exhausts memory
MAX_BATCH = 1024


def _is_int(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _schema_problem(data: Any, folder: Path) -> str | None:
    """What is wrong with a manifest's fields, or None: every field livepuppet reads, checked by type and range."""
    if not isinstance(data, dict):
        return "it is not a JSON object"
    checks = {
        "batch": lambda v: v is None or _is_int(v, 1, MAX_BATCH),
        "precision": lambda v: isinstance(v, str) and len(v) < 32,
        "config": lambda v: isinstance(v, dict),
        "models": lambda v: isinstance(v, dict),
    }
    for key, ok in checks.items():
        if key not in data:
            return f"it has no {key!r} entry"
        if not ok(data[key]):
            return f"its {key!r} entry is malformed"
    for name in MODEL_NAMES:
        entry = data["models"].get(name)
        if entry is None:
            return None  # reported below with the model's name
        if not isinstance(entry, dict):
            return f"its {name} entry is malformed"
        for kind in ("tflite", "savedmodel", *OPTIONAL_KINDS):
            if kind in OPTIONAL_KINDS and kind not in entry:
                continue
            problem = _path_problem(entry.get(kind), folder)
            if problem:
                return f"the {kind} path of {name} {problem}"
    return _config_problem(data)


def _path_problem(value: Any, folder: Path) -> str | None:
    """Model files must lie inside the model folder: no absolute paths, no '..', no links out of it."""
    if not isinstance(value, str) or not value or len(value) > 255 or "\0" in value:
        return "is missing or malformed"
    path = Path(value)
    if path.is_absolute() or ".." in path.parts:
        return "leads outside the model folder"
    try:
        inside = (folder / path).resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        inside = False
    return None if inside else "leads outside the model folder"


def _config_problem(data: dict[str, Any]) -> str | None:
    """The config must describe a model of sane size, and its frame size must be the models' input size."""
    from livepuppet.fomm.config import from_dict
    from livepuppet.errors import ConfigError

    try:
        cfg = from_dict(data["config"])
        cfg.validate_frame_shape()
    except (ConfigError, OverflowError, ValueError, TypeError, KeyError, ZeroDivisionError) as exc:
        return f"its config is malformed ({str(exc)[:80]})"
    h, w = cfg.frame_shape
    if not (_is_int(h, 1, MAX_SIDE) and _is_int(w, 1, MAX_SIDE) and _is_int(cfg.num_kp, 1, 1024)):
        return f"its frame size {h}x{w} or keypoint count {cfg.num_kp} is out of range"
    dataset = data["config"].get("dataset_params")
    shape = dataset.get("frame_shape") if isinstance(dataset, dict) else None
    if not (isinstance(shape, list) and len(shape) >= 2 and shape[:2] == [h, w]):
        return "its frame_shape is missing or malformed"
    inputs = data["models"].get("kp_detector", {}).get("inputs")
    try:
        declared = inputs[0]["shape"]
    except (TypeError, KeyError, IndexError):
        return None  # older folders may not describe their inputs; the engine checks the files
    batch = -1 if data["batch"] is None else data["batch"]
    if declared != [batch, h, w, 3]:
        return f"its frame size {w}x{h} and batch {data['batch']} do not match the models' input {str(declared)[:40]}"
    return None


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
        with open(path, "rb") as f:
            text = f.read(MAX_MANIFEST_BYTES + 1)
        if len(text) > MAX_MANIFEST_BYTES:
            raise ValueError("too large")
        data = json.loads(text)
        fmt = data["format"]
        version = str(data.get("livepuppet_version", "?"))[:20]
    except (OSError, ValueError, KeyError, TypeError, RecursionError, AttributeError):
        raise ModelFolderError(f"{path} is unreadable or damaged; {hint}") from None
    if fmt != FORMAT or type(fmt) is not int:
        raise ModelFolderError(
            f"{folder} was made by livepuppet {version} (model format {str(fmt)[:20]}); this livepuppet reads "
            f"format {FORMAT}: convert the checkpoint again"
        )
    problem = _schema_problem(data, folder)
    if problem:
        raise ModelFolderError(f"{path} is damaged: {problem}; convert the checkpoint into it again")
    manifest = Manifest(folder, data)
    for name in MODEL_NAMES:
        if name not in data.get("models", {}):
            raise ModelFolderError(f"{folder} lacks the {name} model; {hint}")
    return manifest
