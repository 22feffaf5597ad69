"""Clips built from real face photos (skimage's sample images) for measuring face detectors.

Each clip moves a photo across a 640x480 frame: rotated up to +-30 degrees,
scaled 0.5-1.5x, its face travelling near the frame's edges, with sensor noise
(3 levels per pixel). The true face centre and size of every frame follow from
the transform and a hand-checked face box in the photo. Used by
tests/test_faces.py and benchmarks/face_detectors.py.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Callable, NamedTuple

import cv2
import numpy as np

W, H = 640, 480


class Photo(NamedTuple):
    name: str
    load: Callable[[], np.ndarray]  # RGB uint8
    centre: tuple[float, float]     # face centre in the photo, pixels
    size: float                     # face box side, pixels


def _astronaut() -> np.ndarray:
    from skimage.data import astronaut
    return astronaut()


def _camera() -> np.ndarray:
    from skimage.data import camera
    return np.repeat(camera()[..., None], 3, axis=2)


def _lfw(i: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage.data import lfw_subset
        face = cv2.resize((np.clip(lfw_subset()[i], 0, 1) * 255).astype(np.uint8), (120, 120),
                          interpolation=cv2.INTER_CUBIC)  # a 25x25 face, enlarged
        face = cv2.copyMakeBorder(face, 60, 60, 60, 60, cv2.BORDER_REPLICATE)
        return np.repeat(face[..., None], 3, axis=2)
    return load


PHOTOS = (
    Photo("astronaut", _astronaut, (225.0, 118.0), 96.0),
    Photo("cameraman", _camera, (225.0, 163.0), 84.0),
    *(Photo(f"lfw{i}", _lfw(i), (120.0, 118.0), 105.0) for i in range(4)),
)


class Clip(NamedTuple):
    name: str
    frames: list[np.ndarray]
    truth: np.ndarray  # (n, 3): face centre x, y and size per frame


@functools.lru_cache(maxsize=None)
def _photo(i: int) -> np.ndarray:
    return PHOTOS[i].load()


def make_clip(i: int, seed: int, n: int = 30) -> Clip:
    """Photo ``i`` moving for ``n`` frames; ``seed`` picks the path, turn and zoom phases."""
    photo, info = _photo(i), PHOTOS[i]
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * math.pi, 4)
    yy, xx = np.mgrid[0:H, 0:W]
    background = (70 + 50 * np.sin(xx / 90.0 + phase[0]) * np.cos(yy / 70.0)).astype(np.float32)
    frames, truth = [], []
    for t in range(n):
        u = 2 * math.pi * t / n
        angle = 30 * math.sin(u + phase[1])
        scale = 1.0 + 0.5 * math.sin(u + phase[2])
        cx = W / 2 + 0.4 * W * math.sin(u + phase[3])   # to within 0.1 W of the edges
        cy = H / 2 + 0.3 * H * math.sin(2 * u + phase[0])
        m = cv2.getRotationMatrix2D(info.centre, angle, scale)
        m[:, 2] += (cx - info.centre[0], cy - info.centre[1])
        canvas = np.repeat(background[..., None], 3, axis=2)
        warped = cv2.warpAffine(photo, m, (W, H), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        inside = cv2.warpAffine(np.ones(photo.shape[:2], np.uint8), m, (W, H)) > 0
        canvas[inside] = warped[inside]
        noisy = canvas + rng.normal(0, 3, canvas.shape)
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
        truth.append((cx, cy, info.size * scale))
    return Clip(f"{info.name}/{seed}", frames, np.array(truth))


def _errors(detect: Callable[[np.ndarray], list], clip: Clip) -> list[np.ndarray | None]:
    """Per frame: the found box's error (centre offset x, y and size, in face sizes), None when missed.

    A box counts as found when its centre is within half a face of the truth."""
    out: list[np.ndarray | None] = []
    for frame, (tx, ty, ts) in zip(clip.frames, clip.truth):
        best = None
        for f in detect(frame):
            fx, fy, fs = f.x + f.w / 2, f.y + f.h / 2, (f.w + f.h) / 2
            d = math.hypot(fx - tx, fy - ty)
            if d < 0.5 * ts and (best is None or d < best[0]):
                best = (d, np.array([(fx - tx) / ts, (fy - ty) / ts, fs / ts - 1]))
        out.append(None if best is None else best[1])
    return out


def score(detectors: dict[str, Callable[[np.ndarray], list]], clips: list[Clip]) -> dict[str, dict[str, float]]:
    """Detection rate and box jitter of each detector.

    Jitter: RMS frame-to-frame change of the box's error over consecutive frames
    that *every* detector found (so a detector is not rewarded for finding only
    the easy frames); a box that follows the face smoothly has none, whatever
    its constant offset. ``ms``: time per call.
    """
    errors: dict[str, list] = {name: [] for name in detectors}
    ms: dict[str, float] = {}
    for name, detect in detectors.items():
        t0 = time.perf_counter()
        errors[name] = [_errors(detect, clip) for clip in clips]
        ms[name] = (time.perf_counter() - t0) * 1000 / sum(len(c.frames) for c in clips)
    steps: dict[str, list[float]] = {name: [] for name in detectors}
    for k, clip in enumerate(clips):
        for t in range(1, len(clip.frames)):
            pairs = {name: (e[k][t - 1], e[k][t]) for name, e in errors.items()}
            if all(a is not None and b is not None for a, b in pairs.values()):
                for name, (a, b) in pairs.items():
                    steps[name].append(float(np.sum((b - a) ** 2)))
    return {name: {"rate": sum(x is not None for e in errors[name] for x in e) / sum(len(c.frames) for c in clips),
                   "jitter": math.sqrt(np.mean(steps[name])) if steps[name] else math.inf,
                   "pairs": float(len(steps[name])), "ms": ms[name]} for name in detectors}


def all_clips(seeds: int = 2, n: int = 30) -> list[Clip]:
    return [make_clip(i, s, n) for i in range(len(PHOTOS)) for s in range(seeds)]
