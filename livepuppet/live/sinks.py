"""Where live frames go: the preview window, a virtual camera, a recording.

Every output sink has ``send(frame)`` (RGB, uint8 or float32 in [0, 1]) and
``close()``. The preview is different: it shows the whole situation (camera,
crop box, avatar, overlays) and is the keyboard, so it takes a
:class:`PreviewView` through ``show`` and has ``poll_key``.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from livepuppet.errors import LivepuppetError, VirtualCameraError
from livepuppet.live.framing import Box
from livepuppet.live.keys import KEYS, key_name


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """RGB float in [0, 1] or uint8 -> contiguous uint8, by the one rule of :func:`livepuppet.media.to_uint8`
    (round half to even, NaN -> 0), so a live recording and ``animate`` write the same pixels."""
    if frame.dtype != np.uint8:
        from livepuppet.media import to_uint8 as rounded

        frame = rounded(frame)
    return np.ascontiguousarray(frame)


# -- preview ---------------------------------------------------------------

@dataclass
class PreviewView:
    """Everything the preview draws for one refresh."""

    camera: np.ndarray                     # full camera frame, RGB uint8
    box: Box | None = None                 # crop box in camera pixels
    avatar: np.ndarray | None = None       # output frame, RGB; None while the model warms up
    keypoints: np.ndarray | None = None    # (K, 2) in [-1, 1] (x, y), drawn on the avatar
    label: str = ""                        # e.g. "avatar 2/3" or "camera pass-through"
    notice: str | None = None              # e.g. "camera stalled: reconnecting"
    info: list[str] = field(default_factory=list)  # info overlay lines; empty = hidden
    help: bool = False


_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GREEN, _YELLOW, _WHITE = (60, 220, 60), (255, 210, 40), (255, 255, 255)


def _text(img: np.ndarray, s: str, org: tuple[int, int], color=_WHITE, scale: float = 0.45) -> None:
    # dark outline first so text stays readable over any background
    cv2.putText(img, s, org, _FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, s, org, _FONT, scale, color, 1, cv2.LINE_AA)


@functools.lru_cache(maxsize=8)
def _info_panel(lines: tuple[str, ...], width: int) -> np.ndarray:
    """The info overlay as a dark panel, drawn once per distinct text: outlined text costs about 0.6 ms a line."""
    panel = np.full((18 * len(lines) + 10, max(1, width), 3), 24, np.uint8)
    for i, line in enumerate(reversed(lines)):
        _text(panel, line, (10, panel.shape[0] - 8 - 18 * i), _WHITE, 0.45)
    return panel


class PreviewWindow:
    """An OpenCV window: camera view with the crop box | avatar view, plus overlays."""

    def __init__(self, title: str = "livepuppet", height: int = 384) -> None:
        if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
            # Qt aborts the whole process when it finds no display; fail politely first.
            raise LivepuppetError("no display for the preview window (DISPLAY is not set); "
                                  "run with --no-preview, or from a desktop session")
        self.title, self.height = title, height
        self.last_image: np.ndarray | None = None  # last composed RGB image (tests, snapshots)
        self._shown = False

    def compose(self, v: PreviewView) -> np.ndarray:
        """Draw the view into one RGB image."""
        H = self.height
        ch, cw = v.camera.shape[:2]
        s = H / ch
        # Linear is 5x cheaper than area for the mild shrink of a VGA camera; area where aliasing would show.
        cam = cv2.resize(v.camera, (max(1, round(cw * s)), H),
                         interpolation=cv2.INTER_LINEAR if s >= 0.6 else cv2.INTER_AREA)
        if v.box is not None:
            x, y, w, h = (round(c * s) for c in v.box)
            cv2.rectangle(cam, (x, y), (x + w, y + h), _GREEN, 2)
        if v.notice:
            _text(cam, v.notice, (10, H - 14), _YELLOW, 0.6)
        if v.avatar is not None:
            av = to_uint8(v.avatar)
            aw = max(1, round(av.shape[1] * H / av.shape[0]))
            av = cv2.resize(av, (aw, H), interpolation=cv2.INTER_LINEAR)
            if v.keypoints is not None:
                for i, (kx, ky) in enumerate(np.asarray(v.keypoints, dtype=np.float32).reshape(-1, 2)):
                    hue = np.uint8(int(180 * i / max(1, len(v.keypoints))))
                    color = cv2.cvtColor(np.array([[[hue, 255, 255]]], np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
                    cv2.circle(av, (round((kx + 1) / 2 * aw), round((ky + 1) / 2 * H)), 4,
                               tuple(int(c) for c in color), -1, cv2.LINE_AA)
        else:
            av = np.full((H, H, 3), 32, np.uint8)
            _text(av, "waiting for the model...", (10, H // 2), _WHITE, 0.55)
        if v.label:
            _text(av, v.label, (10, 22), _WHITE, 0.55)
        img = np.ascontiguousarray(np.hstack([cam, av]))
        if v.info:
            panel = _info_panel(tuple(v.info), img.shape[1] - cam.shape[1])
            ph = min(panel.shape[0], H)
            img[H - ph:, cam.shape[1]:] = panel[-ph:]
        if v.help:
            img = (img * 0.35).astype(np.uint8)
            _text(img, "keys:", (20, 30), _WHITE, 0.5)
            for i, binding in enumerate(KEYS, start=1):
                _text(img, binding.label, (20, 30 + 21 * i), _YELLOW, 0.5)
                _text(img, binding.help, (110, 30 + 21 * i), _WHITE, 0.5)
        return img

    def show(self, v: PreviewView) -> None:
        self.last_image = self.compose(v)
        if not self._shown:
            # Created with the first image, so it maps at its final size instead of as an
            # empty window resized later (which bare X servers sometimes leave unpainted).
            cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        cv2.imshow(self.title, cv2.cvtColor(self.last_image, cv2.COLOR_RGB2BGR))
        self._shown = True

    def poll_key(self) -> str | None:
        """The pressed key's name (see keys.py), 'q' when the window was closed, else None.

        Also pumps the GUI event loop, so call it every iteration."""
        name = key_name(cv2.waitKeyEx(1))
        if name is None and self._shown:
            try:
                if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                    return "q"
            except cv2.error:
                return "q"
        return name

    def close(self) -> None:
        if not self._shown:  # never created, or already closed
            return
        self._shown = False
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)  # let the backend actually tear the window down
        except cv2.error:
            pass


# -- virtual camera --------------------------------------------------------

def _vcam_steps(missing_package: bool) -> str:
    steps = ["  pip install pyvirtualcam"] if missing_package else []
    if sys.platform.startswith("linux"):
        steps += ["  sudo apt install v4l2loopback-dkms",
                  '  sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label="livepuppet"']
    else:
        steps += ["  install OBS Studio (https://obsproject.com) and click 'Start Virtual Camera' "
                  "once, then stop it and close OBS"]
    return "to set one up:\n" + "\n".join(steps)


class VirtualCameraSink:
    """Frames to a pyvirtualcam device, paced to its fps.

    ``camera_factory(width=, height=, fps=)`` must return a pyvirtualcam.Camera-like
    object (send, sleep_until_next_frame, close); the default opens an RGB
    pyvirtualcam camera on ``device`` (None = the first free one).
    """

    newest_wins = True  # on its own thread (outlet.py), a late frame is replaced by a newer one
    stage = "vcam"

    def __init__(self, width: int, height: int, fps: float,
                 camera_factory: Callable[..., Any] | None = None, device: str | None = None) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.last_sleep_ms = 0.0  # pacing wait of the last send, so the loop can report work only
        if camera_factory is None:
            try:
                import pyvirtualcam
            except ImportError as e:
                raise VirtualCameraError("the virtual camera needs pyvirtualcam, which is not installed; "
                                         + _vcam_steps(missing_package=True)) from e

            def camera_factory(**kw: Any) -> Any:
                return pyvirtualcam.Camera(fmt=pyvirtualcam.PixelFormat.RGB, device=device, **kw)
        try:
            self._cam = camera_factory(width=width, height=height, fps=fps)
        except (RuntimeError, OSError) as e:  # pyvirtualcam's "no device/backend" errors
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise VirtualCameraError(f"no virtual camera available ({reason}); "
                                     + _vcam_steps(missing_package=False)) from e
        self.device = str(getattr(self._cam, "device", "") or "")
        self._closed = False

    def send(self, frame: np.ndarray) -> None:
        img = to_uint8(frame)
        if img.shape[:2] != (self.height, self.width):
            img = cv2.resize(img, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        self._cam.send(np.ascontiguousarray(img))
        t0 = time.perf_counter()
        self._cam.sleep_until_next_frame()
        self.last_sleep_ms = (time.perf_counter() - t0) * 1000

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cam.close()


# -- recording -------------------------------------------------------------

class RecordingSink:
    """Frames to a video file, written fragmented so a killed run still leaves a playable file.

    By default every frame is written once (right for a file camera, and what
    the frame counts report). ``realtime=True`` instead repeats or skips frames
    so the video plays at wall-clock speed even when the model runs slower or
    faster than ``fps``. A run that ends before the first frame leaves no file
    (there is nothing to play) instead of failing at exit; ``saved`` tells.
    """

    stage = "record"

    def __init__(self, path: str | Path, fps: float, realtime: bool = False) -> None:
        from livepuppet.media import VideoWriter  # heavy (ffmpeg); only when recording
        self.path, self.fps, self.realtime = Path(path), fps, realtime
        self._t0: float | None = None
        self._writer = VideoWriter(self.path, fps, fragmented=True)
        self._closed = self.saved = False

    @property
    def frames_written(self) -> int:
        return int(self._writer.frames_written)

    @property
    def frames_saved(self) -> int | None:
        """Frames in the file on disk once it is closed (or cut short), counted there; None before."""
        return self._writer.frames_saved

    @property
    def notices(self) -> list[str]:
        """What opening the file found (a killed run's recording, kept under another name)."""
        return list(self._writer.notices)

    def send(self, frame: np.ndarray) -> None:
        copies = 1
        if self.realtime:
            now = time.monotonic()
            self._t0 = self._t0 if self._t0 is not None else now
            due = int((now - self._t0) * self.fps) + 1  # frames the video should hold by now
            copies = due - self._writer.frames_written
        for _ in range(copies):
            self._writer.write(frame)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer.frames_written:
            self._writer.close()
            self.saved = True
        else:
            self._writer.abort()

    def __enter__(self) -> "RecordingSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
