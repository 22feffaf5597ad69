"""What the live loop itself costs per frame, with the model taken out.

The animator here returns a ready frame at once, so everything measured is the
loop's own work: camera decode (a 640x480 MJPG clip read at 25 fps, as a live
camera), face detection, cropping, paste-back, the preview (composed, not
shown: no display needed), virtual-camera pacing (a fake device at 30 fps) and
recording (ffmpeg, real time). Printed: the median milliseconds of each stage,
the CPU milliseconds the whole process spends per output frame (ffmpeg's
included), and the main thread's poll intervals (how long keys and the preview
wait). Stage names the older loop did not time are measured here from outside
by wrapping the sinks, so both versions are measured the same way:

    python benchmarks/loop_overhead.py                      # this checkout
    PYTHONPATH=/path/to/old/checkout python benchmarks/loop_overhead.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("DISPLAY", ":bench")  # PreviewWindow only checks that one is set; nothing is shown

from livepuppet.live import FaceFramer, RecordingSink, VirtualCameraSink, open_camera, run_live  # noqa: E402
from livepuppet.live.sinks import PreviewWindow  # noqa: E402


class InstantAnimator:
    """The model side at no cost: the source, returned as the prediction."""

    def __init__(self, size: tuple[int, int] = (256, 256)) -> None:
        self.frame_size, self.relative, self.adapt_scale, self.smooth = size, True, True, True
        self.timings: dict[str, float] = {}
        self.source = np.zeros((*size, 3), np.float32)
        self.pose_distance = None

    def set_source(self, image: np.ndarray) -> None:
        self.source = image

    def recalibrate(self) -> None:
        pass

    def find_best(self, frames: int) -> None:
        pass

    def animate(self, frames: np.ndarray) -> np.ndarray:
        return np.repeat(self.source[None], len(frames), axis=0)

    def keypoints(self) -> np.ndarray:
        return np.zeros((1, 10, 2), np.float32)


class PacedClip:
    """A cv2.VideoCapture of a clip, looping, that hands out frames at ``fps`` like a camera."""

    def __init__(self, path: str, fps: float) -> None:
        self.path, self.period = path, 1.0 / fps
        self.cap = cv2.VideoCapture(path)
        self.next = time.monotonic()
        self.decode_ms: list[float] = []

    def isOpened(self) -> bool:
        return self.cap.isOpened()

    def read(self):
        self.next += self.period
        time.sleep(max(0.0, self.next - time.monotonic()))
        t0 = time.perf_counter()
        ok, frame = self.cap.read()
        self.decode_ms.append((time.perf_counter() - t0) * 1000)
        if not ok:
            self.cap.release()
            self.cap = cv2.VideoCapture(self.path)
            ok, frame = self.cap.read()
        return ok, frame

    def release(self) -> None:
        self.cap.release()

    def set(self, prop: int, value: float) -> bool:
        return True


class FakeDevice:
    """A virtual camera device that paces like pyvirtualcam's: sleeps to the next frame tick."""

    def __init__(self, width: int, height: int, fps: float) -> None:
        self.period, self.next = 1.0 / fps, time.monotonic()

    def send(self, frame: np.ndarray) -> None:
        pass

    def sleep_until_next_frame(self) -> None:
        self.next = max(self.next + self.period, time.monotonic())
        time.sleep(max(0.0, self.next - time.monotonic()))

    def close(self) -> None:
        pass


class HeadlessPreview(PreviewWindow):
    """Composes the preview image (the work) and stands in for the keyboard; records poll times."""

    def __init__(self) -> None:
        super().__init__("bench")
        self.polls: list[float] = []
        self.compose_ms: list[float] = []

    def show(self, view) -> None:
        t0 = time.perf_counter()
        self.last_image = self.compose(view)
        self.compose_ms.append((time.perf_counter() - t0) * 1000)

    def poll_key(self):
        self.polls.append(time.monotonic())
        return None

    def close(self) -> None:
        pass


class Timed:
    """A sink wrapper timing ``send`` wherever it runs (main thread before, a sink thread now)."""

    def __init__(self, sink: object) -> None:
        self.sink, self.ms = sink, []
        for attr in ("newest_wins", "stage"):
            if hasattr(sink, attr):
                setattr(self, attr, getattr(sink, attr))

    @property
    def last_sleep_ms(self) -> float:
        return getattr(self.sink, "last_sleep_ms", 0.0)

    def send(self, frame: np.ndarray) -> None:
        t0 = time.perf_counter()
        self.sink.send(frame)
        self.ms.append((time.perf_counter() - t0) * 1000 - self.last_sleep_ms)

    def close(self) -> None:
        self.sink.close()


def make_clip(path: Path, frames: int = 100) -> None:
    from skimage.data import astronaut
    head = astronaut()[20:240, 120:330, ::-1]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (640, 480))
    rng = np.random.default_rng(0)
    for i in range(frames):
        f = np.full((480, 640, 3), 90, np.uint8)
        x, y = 200 + int(40 * np.sin(i / 10)), 120 + int(20 * np.cos(i / 13))
        f[y:y + 220, x:x + 210] = head
        out.write(np.clip(f + rng.normal(0, 3, f.shape), 0, 255).astype(np.uint8))
    out.release()


def measure(seconds: float, work: Path) -> dict:
    from skimage.data import astronaut
    clip = work / "cam.avi"
    make_clip(clip)
    preview = HeadlessPreview()
    vcam = Timed(VirtualCameraSink(512, 512, 30, camera_factory=lambda **kw: FakeDevice(**kw)))
    record = Timed(RecordingSink(work / "rec.mp4", 25, realtime=True))
    cameras: list[PacedClip] = []
    cap = open_camera(0, opener=lambda spec: cameras.append(PacedClip(str(clip), 25)) or cameras[-1], live=True)
    frames = int(seconds * 25)
    from rich.console import Console
    cpu0, kids0 = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    stats = run_live(InstantAnimator(), cap, FaceFramer(), [preview, vcam, record], frames=frames,
                     sources=[astronaut().astype(np.float32) / 255], console=Console(file=open(os.devnull, "w")))
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - cpu0 + (kids.ru_utime - kids0.ru_utime) + (kids.ru_stime - kids0.ru_stime)
    gaps = np.diff(preview.polls) * 1000
    med = statistics.median
    return {
        "frames": stats.frames, "fps": round(stats.fps, 1),
        "stage_ms": {k: round(v, 2) for k, v in stats.stage_ms.items()},
        "decode_ms": round(med(cameras[0].decode_ms), 2),  # 'capture' also holds the wait for the next frame
        "preview_compose_ms": round(med(preview.compose_ms), 2),
        "vcam_send_ms": round(med(vcam.ms), 2), "record_send_ms": round(med(record.ms), 2),
        "cpu_ms_per_frame": round(cpu * 1000 / max(1, stats.frames), 2),
        "poll_interval_ms": {"median": round(float(np.median(gaps)), 1), "p99": round(float(np.percentile(gaps, 99)), 1),
                             "max": round(float(gaps.max()), 1)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(measure(args.seconds, Path(tmp)), indent=1))


if __name__ == "__main__":
    sys.exit(main())
