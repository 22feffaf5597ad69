"""Where in the camera frame the model looks: face tracking plus manual zoom/pan.

Why: FOMM was trained on VoxCeleb crops (head and a little shoulder, centred,
filling most of the frame). A raw 16:9 webcam frame squashed to 256x256 drives
the model badly, so we follow the face with OpenCV's bundled Haar cascade (no
extra download) and cut a vox-like crop around it.

Stability matters more than precision: a crop box that jitters makes the whole
avatar shake. The detected box only moves the *target* when it leaves a small
dead zone, and the crop eases towards the target exponentially every frame.

Boxes that would leave the frame are *shifted* back inside rather than padded:
padding adds black borders the model never saw in training; shifting only
de-centres the face slightly near the edge. When the box is larger than the
frame (zoomed far out) it shrinks to the largest box that fits.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np


class Box(NamedTuple):
    """A crop rectangle in frame pixels."""

    x: int
    y: int
    w: int
    h: int

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2


class FaceFramer:
    """Face-following crop with manual zoom/pan on top; ``enabled=False`` = centre crop.

    State is (centre x, centre y, crop height) in frame pixels; the crop width
    follows the model's aspect ratio (square for every FOMM model).
    """

    def __init__(self, enabled: bool = True, *, detect_every: int = 3, enlarge: float = 1.8,
                 smoothing: float = 0.3, dead_zone: float = 0.05, detect_short_side: int = 240,
                 zoom_step: float = 1.1, pan_step: float = 0.05) -> None:
        self.enabled = enabled
        self.detect_every = max(1, detect_every)
        self.enlarge, self.smoothing, self.dead_zone = enlarge, smoothing, dead_zone
        self.detect_short_side = detect_short_side
        self.zoom_step, self.pan_step = zoom_step, pan_step
        self.zoom = 1.0
        self.pan_xy = [0.0, 0.0]  # in units of the crop height, so panning scales with zoom
        self._cascade = cv2.CascadeClassifier(
            cv2.data.haarcascades + "haarcascade_frontalface_default.xml")  # type: ignore[attr-defined]
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
        h, w = frame.shape[:2]
        scale = min(1.0, self.detect_short_side / min(h, w))
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        # No histogram equalisation: Haar windows are variance-normalised already, and
        # equalising a frame dominated by a plain wall loses the face.
        side = max(20, int(0.1 * min(gray.shape)))
        faces = self._cascade.detectMultiScale(gray, scaleFactor=1.15, minNeighbors=5, minSize=(side, side))
        if len(faces) == 0:
            return None
        boxes = np.asarray(faces, dtype=np.float64) / scale
        centres = boxes[:, :2] + boxes[:, 2:] / 2
        if self._target is not None:
            pick = int(np.argmin(np.hypot(*(centres - self._target[:2]).T)))
        else:
            pick = int(np.argmax(boxes[:, 2] * boxes[:, 3]))
        fx, fy = centres[pick]
        fside = float(boxes[pick, 3])
        # Haar boxes span brows..mouth; shift down a little so chin and neck fit.
        return float(fx), float(fy + 0.1 * fside), fside * self.enlarge

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
        cx += self.pan_xy[0] * side
        cy += self.pan_xy[1] * side
        bh = int(round(side))
        bw = min(w, int(round(side * aspect)))
        x = int(round(np.clip(cx - bw / 2, 0, w - bw)))
        y = int(round(np.clip(cy - bh / 2, 0, h - bh)))
        return Box(x, y, bw, bh)

    def crop(self, frame: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Box]:
        """Cut this frame's box and resize it to the model's ``size`` (h, w).

        Returns the crop as float32 RGB in [0, 1] and the box (for drawing)."""
        th, tw = size
        box = self.box(frame, tw / th)
        region = frame[box.y:box.y + box.h, box.x:box.x + box.w]
        interp = cv2.INTER_AREA if box.h > th else cv2.INTER_LINEAR
        out = cv2.resize(region, (tw, th), interpolation=interp)
        return out.astype(np.float32) * np.float32(1 / 255), box
