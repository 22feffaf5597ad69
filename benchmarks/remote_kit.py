"""What the remote-rendering benchmarks share: a `livepuppet serve` subprocess and a paced live camera."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def spawn_server(model: Path, engine: str = "auto", port: int = 0, extra: tuple[str, ...] = ()
                 ) -> tuple[subprocess.Popen, int]:
    """`livepuppet serve` in its own process (its own cores' worth of GIL); returns it and its port."""
    proc = subprocess.Popen([sys.executable, "-m", "livepuppet.cli", "serve", "--model", str(model), "--engine",
                             engine, "--port", str(port), *extra], stderr=subprocess.PIPE, text=True)
    lines = []
    while True:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError("the server did not start:\n" + "".join(lines))
        lines.append(line)
        found = re.search(r"ws://[\d.]+:(\d+)", line)
        if found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, int(found.group(1))


class PacedClip:
    """A cv2.VideoCapture look-alike for open_camera(..., live=True): the frames of a clip, in a loop, at ``fps``."""

    def __init__(self, frames: np.ndarray, fps: float) -> None:
        self.frames, self.interval, self.i = frames, 1.0 / fps, 0
        self.next = time.perf_counter()

    def __call__(self, spec) -> "PacedClip":
        return self

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return True

    def read(self):
        self.next += self.interval
        time.sleep(max(0.0, self.next - time.perf_counter()))
        frame = self.frames[self.i % len(self.frames)]
        self.i += 1
        return True, frame

    def set(self, prop: int, value: float) -> bool:
        return True

    def release(self) -> None:
        pass


def clip_frames(n: int = 120, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """BGR frames of a face that drifts and zooms (benchmarks/run_live.py's clip), in memory."""
    import cv2
    from skimage import data

    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    w, h = size
    out = []
    for i in range(n):
        t = i / n * 2 * np.pi
        scale = 0.9 + 0.1 * np.sin(t)
        matrix = np.float32([[scale, 0, 60 + 40 * np.sin(t)], [0, scale, -20 + 25 * np.cos(t)]])
        out.append(cv2.warpAffine(face, matrix, (w, h), borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])
