"""Where in the camera frame the model looks: face tracking plus manual zoom/pan.

Why: FOMM was trained on VoxCeleb crops (head and a little shoulder, centred,
filling most of the frame). A raw 16:9 webcam frame squashed to 256x256 drives
the model badly, so we follow the face with a face detector (faces.py: BlazeFace
on LiteRT, or OpenCV's Haar cascade) and cut a vox-like crop around it.

Stability matters more than precision: a crop box that jitters makes the whole
avatar shake. The detected box only moves the *target* when it leaves a small
dead zone, and the crop eases towards the target exponentially every frame.

Boxes that would leave the frame are *shifted* back inside rather than padded:
padding adds black borders the model never saw in training; shifting only
de-centres the face slightly near the edge. When the box is larger than the
frame (zoomed far out) it shrinks to the largest box that fits.
"""

from __future__ import annotations

import time
from collections import deque
from typing import NamedTuple

import cv2
import numpy as np

from livepuppet.live.faces import Face, FaceDetector, face_detector


class Box(NamedTuple):
    """A crop rectangle in frame pixels."""

    x: int
    y: int
    w: int
    h: int

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2


def face_target(face: Face, enlarge: float = 1.8) -> tuple[float, float, float]:
    """A face box -> the vox-like crop around it: (cx, cy, side), a square ``enlarge`` times the face.

    Face boxes span brows..mouth; the centre moves down a little so chin and neck fit.
    """
    side = float(face.h)
    return float(face.x + face.w / 2), float(face.y + face.h / 2 + 0.1 * side), side * enlarge


def square_box(target: tuple[float, float, float], shape: tuple[int, int], aspect: float = 1.0) -> Box:
    """The crop box for (cx, cy, side) in a frame of ``shape`` (h, w): shifted inside, never padded."""
    h, w = shape
    cx, cy, side = target
    side = float(np.clip(side, 16, min(h, w / aspect)))
    bh = int(round(side))
    bw = min(w, int(round(side * aspect)))
    x = int(round(np.clip(cx - bw / 2, 0, w - bw)))
    y = int(round(np.clip(cy - bh / 2, 0, h - bh)))
    return Box(x, y, bw, bh)


class FaceFramer:
    """Face-following crop with manual zoom/pan on top; ``enabled=False`` = centre crop.

    State is (centre x, centre y, crop height) in frame pixels; the crop width
    follows the model's aspect ratio (square for every FOMM model).
    """

    def __init__(self, enabled: bool = True, *, detect_every: int = 3, enlarge: float = 1.8,
                 smoothing: float = 0.3, dead_zone: float = 0.05,
                 zoom_step: float = 1.1, pan_step: float = 0.05, detector: FaceDetector | None = None) -> None:
        self.enabled = enabled
        self.detect_every = max(1, detect_every)
        self.enlarge, self.smoothing, self.dead_zone = enlarge, smoothing, dead_zone
        self.zoom_step, self.pan_step = zoom_step, pan_step
        self.zoom = 1.0
        self.pan_xy = [0.0, 0.0]  # in units of the crop height, so panning scales with zoom
        self.detector = detector  # None: face_detector() at the first detection
        self.detect_ms: deque[float] = deque(maxlen=10000)
        self._state: np.ndarray | None = None   # eased (cx, cy, side)
        self._target: np.ndarray | None = None  # last accepted detection
        self._shape: tuple[int, int] | None = None
        self._frame_no = 0
        self.face_found = False

    # -- manual controls -------------------------------------------------
    def zoom_in(self) -> None:
        self.zoom = min(self.zoom * self.zoom_step, 6.0)

    def zoom_out(self) -> None:
        self.zoom = max(self.zoom / self.zoom_step, 0.25)

    def pan(self, dx: int, dy: int) -> None:
        """Move the crop by ``pan_step`` crop-heights per unit (dx>0 right, dy>0 down)."""
        self.pan_xy[0] += dx * self.pan_step
        self.pan_xy[1] += dy * self.pan_step

    def reset_view(self) -> None:
        self.zoom, self.pan_xy = 1.0, [0.0, 0.0]

    # -- tracking --------------------------------------------------------
    def detect(self, frame: np.ndarray) -> tuple[float, float, float] | None:
        """The largest face (or the one nearest the tracked one) as the crop
        target (cx, cy, crop height) in frame pixels, or None."""
        if self.detector is None:
            self.detector = face_detector()
        t0 = time.perf_counter()
        faces = self.detector(frame)
        self.detect_ms.append((time.perf_counter() - t0) * 1000)
        if not faces:
            return None
        boxes = np.asarray([f[:4] for f in faces], dtype=np.float64)
        centres = boxes[:, :2] + boxes[:, 2:] / 2
        if self._target is not None:
            pick = int(np.argmin(np.hypot(*(centres - self._target[:2]).T)))
        else:
            pick = int(np.argmax(boxes[:, 2] * boxes[:, 3]))
        return face_target(faces[pick], self.enlarge)

    def _update(self, frame: np.ndarray) -> None:
        shape = frame.shape[:2]
        if shape != self._shape:  # new camera mode: old coordinates are meaningless
            self._shape, self._state, self._target = shape, None, None
            self.face_found = False
        if self._frame_no % self.detect_every == 0:
            found = self.detect(frame)
            if found is not None:
                t = np.array(found)
                if self._target is None:
                    self._state = t.copy()
                    self._target = t
                elif np.hypot(*(t[:2] - self._target[:2])) > self.dead_zone * self._target[2] \
                        or abs(t[2] - self._target[2]) > 2 * self.dead_zone * self._target[2]:
                    self._target = t
                self.face_found = True
        self._frame_no += 1
        if self._target is not None and self._state is not None:
            self._state += self.smoothing * (self._target - self._state)

    def box(self, frame: np.ndarray, aspect: float = 1.0) -> Box:
        """The crop box (width/height = ``aspect``) for this frame; advances tracking."""
        h, w = frame.shape[:2]
        max_side = min(h, w / aspect)
        if self.enabled:
            self._update(frame)
        if self.enabled and self._state is not None:
            cx, cy, side = self._state
        else:
            cx, cy, side = w / 2, h / 2, max_side
        side = float(np.clip(side / self.zoom, 16, max_side))
        return square_box((cx + self.pan_xy[0] * side, cy + self.pan_xy[1] * side, side), (h, w), aspect)

    def crop(self, frame: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Box]:
        """Cut this frame's box and resize it to the model's ``size`` (h, w).

        Returns the crop as float32 RGB in [0, 1] and the box (for drawing)."""
        th, tw = size
        box = self.box(frame, tw / th)
        region = frame[box.y:box.y + box.h, box.x:box.x + box.w]
        interp = cv2.INTER_AREA if box.h > th else cv2.INTER_LINEAR
        out = cv2.resize(region, (tw, th), interpolation=interp)
        return out.astype(np.float32) * np.float32(1 / 255), box
