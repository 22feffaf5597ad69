"""The engine interface: four model calls, with static-batch padding done once here.

An engine runs one :class:`~livepuppet.runtime.plan.Plan` of one model folder;
back ends implement :meth:`Engine._run` and open the plan's files. Every back
end checks each file's inputs against the folder's signature as it opens it, so
a file of another network (or size) is a one-line error, not a crash mid-run.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livepuppet.errors import ModelFolderError
from livepuppet.modelfolder.schema import ModelFolder, Signature
from livepuppet.runtime.plan import Plan


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

    def __init__(self, folder: ModelFolder, plan: Plan):
        self.folder = folder
        self.plan = plan
        self.frame_size = folder.frame_size
        self.num_kp = folder.num_kp
        self.batch = folder.batch

    @property
    def label(self) -> str:
        """What runs, as said to users: ``tflite fp32``, ``openvino bf16 (keypoints fp32)``."""
        return self.plan.label

    def close(self) -> None:
        """Let go of the runtime's models (auto measures candidates one at a time)."""

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

    def generate_async(self, driving: Keypoints, source: SourceData,
                       done: Callable[[np.ndarray, dict[str, float]], None]) -> None:
        """Generate, then ``done(prediction, timings)``. Here at once; a remote engine returns as soon as the
        keypoints are sent and calls ``done`` from another thread when the frame is back (or never, for a frame
        lost with the connection: live use only, where the newest frame wins)."""
        done(self.generate(driving, source), {})

    def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) for every ``generate_async`` to be done."""

    def wait_ready(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until ``generate_async`` would start at once (a remote engine's frames in
        flight); whether it would. A local engine always would."""
        return True


def check_inputs(folder: ModelFolder, network: str, actual: dict[str, tuple[int, ...]], path: object) -> None:
    """A model file must take the inputs the folder's signature declares (-1 or None: any size)."""
    signature: Signature = folder.signatures[network]
    want = {t.name: t.shape for t in signature.inputs}
    same = set(actual) == set(want) and all(_fits(actual[k], want[k]) for k in want)
    if not same:
        got = ", ".join(f"{k}{list(v)}" for k, v in sorted(actual.items()))[:120]
        raise ModelFolderError(f"{path} is not this folder's {network} (it takes {got or 'nothing'}); "
                               "convert the checkpoint again")


def _fits(actual: tuple[int, ...], declared: tuple[int, ...]) -> bool:
    if declared == () and actual == (1,):  # a switch as one number: the portable graphs take no scalars
        return True
    return len(actual) == len(declared) and all(a == d or a in (-1, None) for a, d in zip(actual, declared))


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
