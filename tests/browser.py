"""Debian's Chromium under Playwright for the web page's tests and benchmark (benchmarks/web_fps.py).

Playwright's own browser download cannot work here, so it drives /usr/bin/chromium,
headless, on a closed network, with a fake camera that plays a .y4m clip in a loop.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import threading
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

CHROMIUM = "/usr/bin/chromium"
CLOSED_NETWORK_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                       "--disable-component-update", "--disable-sync", "--no-first-run"]


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "needs the playwright package (pip install -e '.[test]')"
    if not shutil.which(CHROMIUM):
        return "needs Debian's chromium (apt-get install -y chromium)"
    return None


def face_frames(n: int, h: int = 240, w: int = 320) -> np.ndarray:
    """(n, h, w, 3) uint8: the astronaut's head (a real photograph) drifting and nodding on a grey wall."""
    from skimage.data import astronaut

    photo = astronaut()[20:240, 120:330]
    frames = np.full((n, h, w, 3), 90, np.uint8)
    for i in range(n):
        side = int(h * (0.7 + 0.05 * np.sin(i / 4)))
        head = cv2.resize(photo, (side * 210 // 220, side), interpolation=cv2.INTER_AREA)
        x = int((w - head.shape[1]) / 2 + 20 * np.sin(i / 5))
        y = int((h - side) / 2 + 8 * np.cos(i / 3))
        frames[i, y:y + side, x:x + head.shape[1]] = head
    return frames


def write_y4m(path: Path, frames: np.ndarray, fps: int = 30) -> Path:
    """uint8 RGB frames -> a YUV4MPEG2 (4:2:0) clip, the format Chromium's fake camera plays."""
    n, h, w, _ = frames.shape
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def launch(pw, clip: Path | None = None, gpu: bool = False):
    """A headless Chromium (Playwright Browser) from the running ``pw``; ``clip`` is the fake camera's picture;
    ``gpu``: with WebGPU (where there is a GPU) instead of --disable-gpu."""
    args = [a for a in CLOSED_NETWORK_ARGS if not (gpu and a == "--disable-gpu")]
    if gpu:
        args += ["--enable-unsafe-webgpu", "--ignore-gpu-blocklist"]
    if clip is not None:
        args += ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--use-file-for-fake-video-capture={clip}"]
    return pw.chromium.launch(executable_path=CHROMIUM, args=args)


@contextlib.contextmanager
def serving(server) -> Iterator[str]:
    """Run an http.server in a thread meanwhile; yields its base URL."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def b64(frame: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(frame, np.uint8).tobytes()).decode()


def from_b64(text: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), np.uint8).reshape(shape)


class HookedPage:
    """The page opened with ?test: portrait and frames in, the avatar canvas back, no camera."""

    def __init__(self, page, url: str, timeout_ms: int = 120_000):
        self.page = page
        page.goto(url)
        page.wait_for_function("document.body.dataset.state", timeout=timeout_ms)
        if page.evaluate("document.body.dataset.state") != "ready":
            raise RuntimeError(f"page did not start: {page.inner_text('#message')}")
        self.size = tuple(page.evaluate("window.livepuppetTest.size"))

    def set_source(self, image: np.ndarray) -> None:
        self.page.evaluate("b => window.livepuppetTest.setSource(b)", b64(image))

    def drive(self, frame: np.ndarray) -> np.ndarray:
        out = self.page.evaluate("b => window.livepuppetTest.drive(b)", b64(frame))
        return from_b64(out, (*self.size, 3))
