"""How steady the avatar is: jitter measured on the animated frames themselves, and how fast it follows a move.

The clip is tests/test_smoothing.py's, as a camera at the model's own
resolution (so that a pixel of shake is a pixel of the model's input, the
way a 640x480 webcam frames a face for vox-256): a real face photo, still with
sensor noise (3 levels) and 1 px of camera shake, then moved by a tenth of
the frame at once. It goes through what ``run`` does with a camera frame: the
face framing (BlazeFace), the keypoint detector, the smoother, keypoint
processing and the generator. Used by tests/test_smoothing.py (SMALL model)
and benchmarks/steadiness.py (any model folder).

* **jitter**: the avatar's temporal standard deviation on the still part, per
  pixel, averaged, in 8-bit levels, minus the same for a perfectly still input
  (the floor: what the pipeline adds by itself, 0 without a video encoder).
* **follow**: after the move, the avatar's progress towards where the
  unsmoothed avatar settles, as the projection of each frame on the move
  (every pixel counts, so the noise averages out); ``lag`` is the number of
  frames after the move until 90% of it is covered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from livepuppet.runtime.probe import portrait
from tests.test_smoothing import STILL, noisy_clip

SETTLE = 10  # frames for the filter (and the framing) to settle before the jitter counts


@dataclass(frozen=True)
class Steadiness:
    jitter: float         # levels above the floor, on the still part
    floor: float          # levels, a perfectly still input
    progress: np.ndarray  # per frame from the move on: fraction of the move covered
    before: np.ndarray    # the unsmoothed avatar's mean before the move, and after it
    after: np.ndarray

    @property
    def move(self) -> float:
        """RMS levels between the unsmoothed avatar before and after the move."""
        return float(np.sqrt(np.mean((self.after - self.before) ** 2)))

    @property
    def lag(self) -> int:
        """Frames after the move until 90% of it is covered (99: never)."""
        reached = self.progress >= 0.9
        return int(np.argmax(reached)) if reached.any() else 99


def camera_clip(size: int, noise: float = 3.0, shake: float = 1.0, seed: int = 0) -> list[np.ndarray]:
    """tests/test_smoothing.py's clip as a ``size`` x ``size`` camera: the same face and move, scaled, with the
    noise and the shake (uniform, ``shake`` px peak to peak per axis) at that size."""
    import cv2

    clean = [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in noisy_clip(noise=0.0, shake=0.0)]
    rng = np.random.default_rng(seed)
    frames = []
    for frame in clean:
        move = np.float32([[1, 0, shake * rng.uniform(-0.5, 0.5)], [0, 1, shake * rng.uniform(-0.5, 0.5)]])
        frame = cv2.warpAffine(frame, move, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frames.append(np.clip(frame + noise * rng.normal(0, 1, frame.shape), 0, 255).astype(np.uint8))
    return frames


Smoothing = float | Callable[[], object]  # a strength, as `run --smoothing` takes, or a smoother factory


def animate_clip(engine, frames: list[np.ndarray], smoothing: Smoothing, source: np.ndarray,
                 tracking: bool = True) -> np.ndarray:
    """The avatar (n, h, w, 3) in levels, the clip framed and animated as ``run`` does, one frame at a time."""
    from livepuppet.live.framing import FaceFramer
    from livepuppet.runtime.pipeline import Pipeline

    if callable(smoothing):
        pipeline = Pipeline(engine, smoothing=0.0)
        pipeline.smoother, pipeline.smooth = smoothing(), True
    else:
        pipeline = Pipeline(engine, smoothing=smoothing)
    pipeline.set_source(source)
    framer = FaceFramer(enabled=tracking)
    out = [pipeline.animate(framer.crop(frame, engine.frame_size)[0][None])[0] for frame in frames]
    return np.asarray(out, np.float64) * 255


def jitter(avatar: np.ndarray) -> float:
    return float(avatar[SETTLE:STILL].std(axis=0).mean())


def measure(engine, smoothing: Smoothing, raw: "Steadiness | None" = None) -> "Steadiness":
    """Steadiness of ``smoothing`` on ``engine``; ``raw`` (the unsmoothed measure) supplies the floor and the move.

    The jitter is measured with the face framing on, as ``run`` has it; the move
    with a fixed crop, so that it is the face moving in the picture, not the crop
    catching up with it."""
    source = portrait(engine.frame_size)  # the bundled face as the avatar
    frames = camera_clip(engine.frame_size[0])
    still = animate_clip(engine, frames[:STILL], smoothing, source)
    moved = animate_clip(engine, frames, smoothing, source, tracking=False)
    if raw is None:
        floor = jitter(animate_clip(engine, camera_clip(engine.frame_size[0], 0.0, 0.0)[:STILL], 0.0, source))
        before, after = moved[SETTLE:STILL].mean(axis=0), moved[STILL + 5:].mean(axis=0)
    else:
        floor, before, after = raw.floor, raw.before, raw.after
    move = (after - before).ravel()
    progress = np.array([float((frame - before).ravel() @ move) / float(move @ move) for frame in moved[STILL:]])
    return Steadiness(jitter(still) - floor, floor, progress, before, after)
