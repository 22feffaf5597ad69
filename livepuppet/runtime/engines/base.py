"""The engine interface: four model calls, with static-batch padding done once here."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livepuppet.modelfolder.manifest import Manifest


@dataclass(frozen=True)
class Keypoints:
    value: np.ndarray  # (B, K, 2), (x, y) in [-1, 1]
    jacobian: np.ndarray  # (B, K, 2, 2)

    def __getitem__(self, index: slice | int) -> "Keypoints":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Keypoints(self.value[index], self.jacobian[index])


@dataclass(frozen=True)
class SourceData:
    """Everything the per-frame generator reuses for one source image."""

    keypoints: Keypoints
    features: np.ndarray
    source_small: np.ndarray


class Engine(ABC):
    """Runs a converted model folder. Back ends implement :meth:`_run` only."""

    name = "engine"

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.frame_size = manifest.frame_size
        self.num_kp = manifest.num_kp
        self.batch = manifest.batch

    @property
    def label(self) -> str:
        """What runs, as said to users: ``tflite fp32``, ``openvino bf16 on CPU``."""
        return f"{self.name} {self.manifest.precision}"

    @abstractmethod
    def _run(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one model on named float32 inputs; returns its named outputs."""

    def _batched(self, model: str, inputs: dict[str, np.ndarray], batched: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Run on any number of frames: split into the model's static batch, padding the last chunk."""
        n = len(inputs[batched[0]])
        if self.batch is None or self.batch == n:
            return self._run(model, inputs)
        parts = []
        for start in range(0, n, self.batch):
            chunk = dict(inputs)
            for key in batched:
                piece = inputs[key][start:start + self.batch]
                pad = self.batch - len(piece)
                chunk[key] = np.concatenate([piece, np.repeat(piece[-1:], pad, 0)]) if pad else piece
            out = self._run(model, chunk)
            parts.append({k: v[: min(self.batch, n - start)] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def detect_keypoints(self, images: np.ndarray) -> Keypoints:
        out = self._batched("kp_detector", {"image": _f32(images)}, ("image",))
        return Keypoints(out["value"], out["jacobian"])

    def encode_source(self, source: np.ndarray) -> SourceData:
        """Source image (H, W, 3) or (1, H, W, 3) -> its keypoints and cached generator features."""
        source = _f32(source).reshape(1, *self.frame_size, 3)
        out = self._run("source_encoder", {"source": source})
        return SourceData(self.detect_keypoints(source), out["features"], out["source_small"])

    def process_keypoints(self, source: Keypoints, driving: Keypoints, initial: Keypoints,
                          relative: bool, adapt_scale: bool) -> Keypoints:
        inputs = {
            "source_value": source.value, "source_jacobian": source.jacobian,
            "initial_value": initial.value, "initial_jacobian": initial.jacobian,
            "driving_value": driving.value, "driving_jacobian": driving.jacobian,
            "relative": np.float32(relative), "adapt_scale": np.float32(adapt_scale),
        }
        out = self._batched("kp_processing", {k: _f32(v) for k, v in inputs.items()},
                            ("driving_value", "driving_jacobian"))
        return Keypoints(out["value"], out["jacobian"])

    def generate(self, driving: Keypoints, source: SourceData) -> np.ndarray:
        inputs = {
            "driving_value": driving.value, "driving_jacobian": driving.jacobian,
            "source_value": source.keypoints.value, "source_jacobian": source.keypoints.jacobian,
            "features": source.features, "source_small": source.source_small,
        }
        out = self._batched("generator", {k: _f32(v) for k, v in inputs.items()},
                            ("driving_value", "driving_jacobian"))
        return out["prediction"]


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def writable_cache(folder: Path, name: str) -> Path | None:
    """``folder/name`` for an engine's compiled models when it can be written, else None (no cache)."""
    cache = Path(folder) / name
    with contextlib.suppress(OSError):
        cache.mkdir(exist_ok=True)
        probe = cache / ".probe"
        probe.write_bytes(b"")
        probe.unlink()
        return cache
    return None
