"""A real input that ships with livepuppet: a portrait and synthetic head motion made from it.

Engines and precisions are compared on what they will animate, a face, not on
noise: ``--engine auto`` checks each candidate's error on it, ``bench`` prints
it, and ``--fast`` calibrates its int8 ranges on it. The portrait is a crop of
NASA's public-domain photo of Eileen Collins (scikit-image's ``astronaut``).
"""

from __future__ import annotations

from importlib import resources

import numpy as np

PORTRAIT = "portrait.png"


def portrait(size: tuple[int, int]) -> np.ndarray:
    """The bundled portrait at ``size`` (H, W), float32 RGB in [0, 1]."""
    import cv2

    raw = resources.files("livepuppet.data").joinpath(PORTRAIT).read_bytes()
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    h, w = size
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return (cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0)


def head_motion(size: tuple[int, int], frames: int, seed: int = 0) -> np.ndarray:
    """(frames, H, W, 3): the portrait turning, nodding and leaning: a rotation of up to 12 degrees,
    shifts of up to 6% of the frame and a 10% zoom, on smooth random paths."""
    import cv2

    base = portrait(size)
    h, w = size
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, 4)
    out = np.empty((frames, h, w, 3), np.float32)
    for i in range(frames):
        t = i / max(frames - 1, 1) * 2 * np.pi
        angle = 12 * np.sin(t + phases[0])
        scale = 1 + 0.1 * np.sin(t + phases[1])
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        matrix[:, 2] += (0.06 * w * np.sin(t + phases[2]), 0.06 * h * np.sin(t + phases[3]))
        out[i] = cv2.warpAffine(base, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out
