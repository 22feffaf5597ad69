"""Frames in, animated frames out: source set-up once, calibration, then per-frame work.

Used by ``animate`` (offline) and by the live loop; it only talks to an
:class:`~livepuppet.runtime.engines.Engine`, so it runs on any back end.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque

import numpy as np

from livepuppet.runtime.engines.base import Engine, Keypoints, SourceData
from livepuppet.runtime.smoothing import DEFAULT_STRENGTH, KeypointSmoother

HISTORY_LENGTH = 1000  # per-stage timings kept: enough for a percentile, bounded over a day-long run


class Pipeline:
    """Animates one source image with driving frames, the way the original demo does.

    The first driving frame seen (or the first after :meth:`recalibrate`) is
    the calibration frame: relative motion is measured from its keypoints.
    """

    def __init__(self, engine: Engine, relative: bool = True, adapt_scale: bool = True,
                 smoothing: float = 0.0, rate: float = 25.0):
        self.engine = engine
        self.frame_size = engine.frame_size
        self.relative = relative
        self.adapt_scale = adapt_scale
        # The driving keypoints go through the One-Euro filter while ``smooth`` is on; a toggle
        # (the live 's' key) turns a pipeline made with smoothing 0 on at the default strength.
        self.smooth = smoothing > 0
        self.smoother = KeypointSmoother(smoothing or DEFAULT_STRENGTH, rate)
        self.pose_distance: float | None = None  # last driving frame's pose distance to the source's
        self.searching = 0                       # frames left in a best-moment search (find_best)
        self._best: tuple[float, Keypoints | None] = (math.inf, None)
        self.source: SourceData | None = None
        self.initial: Keypoints | None = None
        self._last: Keypoints | None = None
        self.timings: dict[str, float] = {}
        self.notices: list[str] = []  # things the user should hear about once (commands print them)
        self.history: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=HISTORY_LENGTH))

    def _timed(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        ms = (now - start) * 1000
        self.timings[stage] = ms
        self.history[stage].append(ms)
        return now

    def set_source(self, image: np.ndarray) -> None:
        """Run the source-only work (keypoints, encoder) once for this source image."""
        start = time.perf_counter()
        self.source = self.engine.encode_source(image)
        self._timed("source", start)

    def recalibrate(self) -> None:
        """Make the next driving frame the calibration frame."""
        self.initial = None

    def calibrate(self, frame: np.ndarray) -> None:
        self.initial = self.engine.detect_keypoints(frame.reshape(1, *self.frame_size, 3))

    def detect(self, frames: np.ndarray) -> Keypoints:
        return self.engine.detect_keypoints(frames)

    def animate(self, frames: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) driving frames -> (B, H, W, 3) predictions, float32 in [0, 1]."""
        if self.source is None:
            raise RuntimeError("set_source() first")
        start = time.perf_counter()
        driving = self.engine.detect_keypoints(frames)
        if self.smooth:
            driving = self.smoother(driving)
        else:
            self.smoother.reset()  # turned on again later, it starts from the frame then
        start = self._timed("keypoints", start)
        self._watch_pose(driving)
        if self.initial is None:
            self.initial = driving[0]
            if self.adapt_scale and degenerate_hull(self.initial.value, self.source.keypoints.value):
                self.notices.append("the calibration or source keypoints all lie on one line, so the movement "
                                    "scale cannot be adapted; using scale 1")
        self._last = driving
        norm = self.engine.process_keypoints(self.source.keypoints, driving, self.initial,
                                             self.relative, self.adapt_scale)
        start = self._timed("process", start)
        out = self.engine.generate(norm, self.source)
        self._timed("generate", start)
        return out

    def keypoints(self) -> np.ndarray | None:
        return None if self._last is None else self._last.value

    def find_best(self, frames: int) -> None:
        """Watch the next ``frames`` driving frames and calibrate on the one whose pose is nearest the source's."""
        self.searching, self._best = max(1, int(frames)), (math.inf, None)

    def _watch_pose(self, driving: Keypoints) -> None:
        if self.source is None:
            return
        target = layout(self.source.keypoints.value[0])
        for j, value in enumerate(driving.value):
            self.pose_distance = pose_distance(value, target)
            if self.searching:
                if self._best[1] is None or self.pose_distance < self._best[0]:
                    self._best = (self.pose_distance, driving[j])
                self.searching -= 1
                if not self.searching and self._best[1] is not None:
                    self.initial = self._best[1]


def pose_distance(value: np.ndarray, target_layout: np.ndarray) -> float:
    """How far a keypoint layout is from a target layout (squared distance; a degenerate one is infinitely far)."""
    dist = float(((layout(value) - target_layout) ** 2).sum())
    return dist if math.isfinite(dist) else math.inf


def layout(value: np.ndarray) -> np.ndarray:
    """Keypoints (K, 2) centred and scaled to unit RMS radius: their pose, free of position and size."""
    centred = value - value.mean(axis=0)
    return centred / max(float(np.sqrt((centred**2).sum(axis=1).mean())), 1e-8)



def degenerate_hull(*keypoints: np.ndarray) -> bool:
    """Whether any (1, K, 2) or (K, 2) keypoint set has a convex hull of area 0 (or is not finite)."""
    import cv2

    for value in keypoints:
        points = np.asarray(value, np.float32).reshape(-1, 2)
        if not np.isfinite(points).all() or cv2.contourArea(cv2.convexHull(points)) <= 0:
            return True
    return False
