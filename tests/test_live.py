"""Live mode: capture, framing, sinks and the loop, without a webcam, GPU or model.

The model is a FakeAnimator whose output depends on the source avatar and on
each driving frame, so frames can be told apart. Cameras are fake openers
(cv2.VideoCapture look-alikes) or generated clips. The preview test needs Xvfb
and xdotool (apt packages xvfb, xdotool; x11-apps for the xwd screenshot).
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from rich.console import Console

from livepuppet.errors import CameraError, VirtualCameraError
from livepuppet.live import FaceFramer, RecordingSink, VirtualCameraSink, open_camera, run_live
from livepuppet.live.capture import CaptureState, list_cameras
from livepuppet.live.keys import key_name

ROOT = Path(__file__).resolve().parent.parent


# -- fakes -------------------------------------------------------------------

class FakeAnimator:
    """Output = the source shifted and tinted by the driving frame's mean."""

    def __init__(self, size: tuple[int, int] = (64, 64), delay: float = 0.0) -> None:
        self.frame_size = size
        self.relative, self.adapt_scale, self.smooth = True, False, True
        self.timings: dict[str, float] = {}
        self.calls: list[tuple] = []
        self.threads: set[int] = set()
        self.source = np.zeros((*size, 3), np.float32)
        self.delay = delay
        self._kp: np.ndarray | None = None

    def set_source(self, image: np.ndarray) -> None:
        assert image.dtype == np.float32 and image.shape == (*self.frame_size, 3)
        self.source = image
        self.calls.append(("set_source", int(image.mean(axis=(0, 1)).argmax())))  # 2 blue, 1 green

    def recalibrate(self) -> None:
        self.calls.append(("recalibrate",))

    def find_best(self, frames: int) -> None:
        self.calls.append(("find_best", frames))

    def animate(self, frames: np.ndarray) -> np.ndarray:
        assert frames.dtype == np.float32 and frames.shape[1:] == (*self.frame_size, 3)
        self.threads.add(threading.get_ident())
        self.calls.append(("animate", len(frames)))
        time.sleep(self.delay)
        m = frames.mean(axis=(1, 2, 3))
        out = np.stack([np.roll(self.source, int(v * 200), axis=1) * 0.7 + 0.3 * v for v in m])
        self._kp = np.tile(m[:, None, None], (1, 10, 2)) * 2 - 1
        self.timings = {"keypoints": 1.0, "process": 0.5, "generate": 2.0}
        return out.astype(np.float32)

    def keypoints(self) -> np.ndarray | None:
        return self._kp


class FakeDevice:
    """A cv2.VideoCapture look-alike: BGR frames whose value encodes a counter."""

    def __init__(self, clock: "FakeCamera") -> None:
        self.clock, self.released = clock, False

    def isOpened(self) -> bool:
        return self.clock.available()

    def read(self):
        time.sleep(self.clock.interval)
        if self.released or not self.clock.available():
            return False, None
        self.clock.count += 1
        frame = np.empty((48, 64, 3), np.uint8)
        frame[:, :, 0] = 7  # blue channel marker: must end up in RGB channel 2
        frame[:, :, 1] = self.clock.count // 256 % 256  # green, red: the frame counter
        frame[:, :, 2] = self.clock.count % 256
        return True, frame

    def release(self) -> None:
        self.released = True

    def set(self, prop: int, value: float) -> bool:
        return True


class FakeCamera:
    """Opener for FakeDevice; ``gap`` = (start, end) seconds after creation with no camera."""

    def __init__(self, interval: float = 0.002, gap: tuple[float, float] | None = None) -> None:
        self.interval, self.gap, self.count, self.opens = interval, gap, 0, 0
        self.devices: list[FakeDevice] = []
        self.t0 = time.monotonic()

    def available(self) -> bool:
        if self.gap is None:
            return True
        t = time.monotonic() - self.t0
        return not (self.gap[0] <= t < self.gap[1])

    def __call__(self, spec) -> FakeDevice:
        self.opens += 1
        self.devices.append(FakeDevice(self))
        return self.devices[-1]


class FakeVCam:
    """Test double of pyvirtualcam.Camera."""

    def __init__(self, width: int, height: int, fps: float) -> None:
        self.size, self.fps = (height, width), fps
        self.frames: list[np.ndarray] = []
        self.sleeps, self.closed = 0, False

    def send(self, frame: np.ndarray) -> None:
        assert frame.shape == (*self.size, 3) and frame.dtype == np.uint8 and frame.flags.c_contiguous
        self.frames.append(frame.copy())

    def sleep_until_next_frame(self) -> None:
        self.sleeps += 1

    def close(self) -> None:
        self.closed = True


class Collect:
    """An output sink that keeps what it is sent."""

    def __init__(self) -> None:
        self.got: list[np.ndarray] = []

    def send(self, frame: np.ndarray) -> None:
        self.got.append(frame)

    def close(self) -> None:
        pass


def make_clip(path: Path, n: int, size: tuple[int, int] = (96, 128)) -> list[float]:
    """An MJPG clip whose frames get brighter and have a moving square; returns RGB means."""
    h, w = size
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (w, h))
    assert out.isOpened()
    means = []
    for i in range(n):
        f = np.full((h, w, 3), 20 + int(200 * i / max(1, n - 1)), np.uint8)
        x = (i * 7) % (w - 20)
        f[30:50, x:x + 20] = (0, 0, 255)
        out.write(f)
        means.append(float(f.mean()))
    out.release()
    return means


def quiet() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=200), buf


def read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


def sources(size=(64, 64)) -> list[np.ndarray]:
    stripes = (np.arange(size[1]) // 8 % 2 * 0.3).astype(np.float32)  # so shifts show
    a = np.zeros((*size, 3), np.float32)
    a[..., 2] = 0.9  # blue avatar
    b = np.zeros((*size, 3), np.float32)
    b[..., 1] = 0.9  # green avatar
    a[..., 0] = b[..., 0] = stripes
    return [a, b]


# -- capture -----------------------------------------------------------------

def test_file_camera_delivers_every_frame_in_order(tmp_path):
    means = make_clip(tmp_path / "clip.avi", 20)
    cap = open_camera(str(tmp_path / "clip.avi"))
    assert not cap.live and cap.fps == 30
    got = []
    while (item := cap.read(timeout=2.0)) is not None:
        seq, frame = item
        assert frame.dtype == np.uint8 and frame.shape == (96, 128, 3)
        assert (frame[..., 0].astype(int) - frame[..., 2] > 100).any()  # red square: RGB order
        got.append((seq, float(frame.mean())))
        time.sleep(0.005)  # a slow consumer must still get every frame
    cap.release()
    assert cap.ended
    assert [s for s, _ in got] == list(range(1, 21))
    assert np.allclose([m for _, m in got], means, atol=4)


def test_paced_file_plays_at_its_own_rate_and_drops_what_the_model_has_no_time_for(tmp_path):
    """What `run` does with a video file: a camera's pace (30 fps here), so a model slower than that sees the
    newest frame, the rest are dropped, and the latency stays a frame or two, as with a webcam."""
    make_clip(tmp_path / "clip.avi", 30)
    cap = open_camera(str(tmp_path / "clip.avi"), paced=True)
    assert cap.live and cap.fps == 30
    stats = run_live(FakeAnimator(delay=0.08), cap, FaceFramer(enabled=False), [], sources=sources(),
                     console=quiet()[0])
    print(f"\npaced file: {stats.summary()}")
    assert stats.stop_reason == "end of input" and cap.ended
    assert 5 <= stats.frames <= 16 and stats.dropped >= 10 and stats.frames + stats.dropped == 30
    assert stats.seconds > 0.8  # a second of video takes about a second
    assert stats.fps <= 13  # the model's pace (80 ms a frame), never the file's 30
    assert stats.latency_ms is not None and 80 <= stats.latency_ms <= 250  # not a backlog of queued frames
    assert f"{stats.frames} avatar frames at {stats.fps:.1f} fps, latency {stats.latency_ms:.0f} ms" in stats.summary()


def test_pass_through_frames_are_not_avatar_frames():
    """The summary counts what the model made: camera frames passed through ('t') are said apart."""
    from livepuppet.live.loop import LiveStats

    stats = LiveStats(frames=10, seconds=1.0, latency_ms=95.0, passed=40, stop_reason="quit")
    assert stats.summary().startswith("10 avatar frames at 9.0 fps, latency 95 ms (camera grab to avatar out) (quit)")
    assert "40 camera frames passed through" in stats.summary()


def test_live_camera_hands_out_only_the_newest_frame():
    cam = FakeCamera(interval=0.001)
    cap = open_camera(0, opener=cam)
    seqs = []
    try:
        for _ in range(8):
            time.sleep(0.03)  # consumer far slower than the camera
            newest = cam.count  # the device may have counted one frame it has not published yet
            seq, frame = cap.read(timeout=1.0)
            assert frame[0, 0, 2] == 7  # BGR -> RGB
            assert int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1]) >= newest - 1  # no stale frame
            seqs.append(seq)
    finally:
        cap.release()
    assert min(np.diff(seqs)) >= 3  # stale frames were skipped
    assert cap.dropped > 20
    assert cap.read(timeout=0.01) is None  # released: nothing new
    assert all(d.released for d in cam.devices)


def test_stalled_camera_recovers_and_loop_resumes():
    cam = FakeCamera(interval=0.005, gap=(0.4, 1.1))
    cap = open_camera(0, opener=cam, stall_after=0.15, backoff=(0.05, 0.2))
    animator, (console, buf) = FakeAnimator(), quiet()
    stamps: list[float] = []

    class Clock:
        def send(self, frame):
            stamps.append(time.monotonic())

        def close(self):
            pass

    stats = run_live(animator, cap, FaceFramer(enabled=False), [Clock()], frames=150, sources=sources(),
                     console=console)
    assert stats.frames == 150 and stats.stop_reason == "frames"
    assert stats.stalls >= 1 and cap.stalls >= 1
    log = buf.getvalue()
    assert "stalled" in log and "is back" in log
    assert cam.opens >= 2  # the device was released and reopened
    gaps = np.diff(stamps)
    assert gaps.max() > 0.4  # the outage ...
    assert int(np.argmax(gaps)) < len(stamps) - 10  # ... and frames kept coming after it
    assert cap.state is CaptureState.CLOSED and all(d.released for d in cam.devices)


def test_missing_camera_names_the_cameras_that_exist():
    class Closed:
        def isOpened(self):
            return False

        def release(self):
            pass

    with pytest.raises(CameraError) as e:
        open_camera(3, opener=lambda s: Closed(), lister=lambda: ["0 (Fake Cam)", "2 (livepuppet)"])
    msg = str(e.value)
    assert "\n" not in msg and "camera 3" in msg and "0 (Fake Cam), 2 (livepuppet)" in msg and "--camera" in msg
    with pytest.raises(CameraError, match="no cameras found"):
        open_camera("5", opener=lambda s: Closed(), lister=lambda: [])
    with pytest.raises(CameraError, match="not found"):
        open_camera("/no/such/video.mp4")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="lists /dev/video* nodes (Linux)")
def test_list_cameras_reads_v4l2_nodes(tmp_path):
    dev, sysfs = tmp_path / "dev", tmp_path / "sys"
    dev.mkdir()
    for num, index, name in [(0, "0", "Integrated Camera"), (1, "1", "Integrated Camera"), (2, "0", "livepuppet"),
                             (10, None, None)]:
        (dev / f"video{num}").touch()
        if index is not None:
            (sysfs / f"video{num}").mkdir(parents=True)
            (sysfs / f"video{num}" / "index").write_text(index + "\n")
            (sysfs / f"video{num}" / "name").write_text(name + "\n")
    (dev / "video-extra").touch()
    assert list_cameras(dev=str(dev), sysfs=str(sysfs)) == ["0 (Integrated Camera)", "2 (livepuppet)", "10"]


@pytest.mark.skipif(not sys.platform.startswith("linux") or bool(list(Path("/dev").glob("video*"))),
                    reason="needs a Linux machine without cameras")
def test_missing_camera_real_probe():
    with pytest.raises(CameraError, match="no cameras found"):
        open_camera(7)


# -- framing -----------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _astronaut_head() -> np.ndarray:
    from skimage.data import astronaut
    return astronaut()[20:240, 120:330]  # head and shoulders; face box ~ (57..150, 47..140)


def _face_scene(offset: tuple[int, int], rng: np.random.Generator, noise: int = 0):
    """A 640x480 frame with the astronaut's head pasted at ``offset``; returns frame, face centre."""
    patch = _astronaut_head()
    frame = np.full((480, 640, 3), 90, np.uint8)
    x, y = offset
    frame[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
    if noise:
        jitter = rng.integers(-noise, noise + 1, frame.shape, dtype=np.int16)
        frame = np.clip(frame + jitter, 0, 255).astype(np.uint8)
    return frame, (x + 103.0, y + 93.0)


def test_framer_follows_a_moving_face():
    rng = np.random.default_rng(0)
    framer = FaceFramer(detect_every=1)
    errors = []
    for i in range(40):
        frame, (fx, fy) = _face_scene((60 + 8 * i, 100 + 2 * i), rng, noise=3)
        crop, box = framer.crop(frame, (64, 64))
        assert crop.shape == (64, 64, 3) and crop.dtype == np.float32 and 0 <= crop.min() <= crop.max() <= 1
        assert box.w == box.h and 0 <= box.x <= 640 - box.w and 0 <= box.y <= 480 - box.h
        cx, cy = box.center
        errors.append(np.hypot(cx - fx, cy - fy) / box.w)
    assert framer.face_found
    assert 120 < box.w < 260  # ~1.8x the face box: head and shoulders
    assert max(errors[3:]) < 0.2, errors  # box centre stays on the face while it moves


def test_framer_is_stable_on_a_still_face():
    rng = np.random.default_rng(1)
    framer = FaceFramer(detect_every=1)
    boxes = []
    for _ in range(30):
        frame, _ = _face_scene((200, 120), rng, noise=8)  # sensor noise makes detections jitter
        boxes.append(framer.crop(frame, (64, 64))[1])
    b = np.array(boxes[5:], dtype=float)
    assert np.ptp(b, axis=0).max() <= 3, b


def test_framer_centre_crop_without_face_and_manual_zoom_pan():
    frame = np.random.default_rng(2).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    framer = FaceFramer()
    _, box = framer.crop(frame, (64, 64))
    assert tuple(box) == (80, 0, 480, 480) and not framer.face_found
    off = FaceFramer(enabled=False)
    off.zoom_in()
    _, box = off.crop(frame, (64, 64))
    assert box.w == round(480 / 1.1) and abs(box.center[0] - 320) <= 1
    for _ in range(30):
        off.pan(1, 0)
    _, box = off.crop(frame, (64, 64))
    assert box.x + box.w == 640  # shifted back inside, not padded


def test_key_codes_across_backends():
    assert key_name(ord("c")) == "c" and key_name(ord("Q")) == "q" and key_name(27) == "esc"
    assert key_name(-1) is None and key_name(ord("z")) is None
    assert [key_name(c) for c in (0xFF51, 0x1000013, 0x270000, 0xF701)] == ["left", "up", "right", "down"]
    assert key_name(ord("=")) == "+" and key_name(0xFFAD) == "-"


# -- sinks -------------------------------------------------------------------

def test_virtual_camera_sink_sends_rgb_uint8_and_paces():
    made: list[FakeVCam] = []

    def factory(**kw):
        made.append(FakeVCam(**kw))
        return made[-1]

    sink = VirtualCameraSink(320, 240, 30, camera_factory=factory)
    red = np.zeros((64, 64, 3), np.float32)
    red[..., 0] = 1.0
    for _ in range(3):
        sink.send(red)
    sink.close()
    cam = made[0]
    assert len(cam.frames) == 3 and cam.sleeps == 3 and cam.closed
    f = cam.frames[0]
    assert f.shape == (240, 320, 3) and (f[..., 0] == 255).all() and (f[..., 1:] == 0).all()


def test_virtual_camera_errors_say_how_to_set_one_up(monkeypatch):
    def no_device(**kw):
        raise RuntimeError("'v4l2loopback' backend: No v4l2 loopback device found at /dev/video[0-99]. "
                           "Did you run 'modprobe v4l2loopback'?")

    with pytest.raises(VirtualCameraError) as e:
        VirtualCameraSink(640, 480, 30, camera_factory=no_device)
    msg = str(e.value)
    assert msg.splitlines()[0].startswith("no virtual camera available")
    assert ("modprobe v4l2loopback" in msg) if sys.platform.startswith("linux") else ("OBS" in msg)
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # import now fails
    with pytest.raises(VirtualCameraError, match="pip install pyvirtualcam"):
        VirtualCameraSink(640, 480, 30)


def test_virtual_camera_real_backend_without_device():
    pytest.importorskip("pyvirtualcam")
    if sys.platform.startswith("linux") and list(Path("/dev").glob("video*")):
        pytest.skip("this machine has video devices; a loopback device may exist")
    with pytest.raises(VirtualCameraError, match="no virtual camera available"):
        VirtualCameraSink(640, 480, 30).close()


# -- loop --------------------------------------------------------------------

def test_headless_recording_of_twelve_frames(tmp_path):
    make_clip(tmp_path / "clip.avi", 30)
    animator, (console, _) = FakeAnimator(), quiet()
    rec = RecordingSink(tmp_path / "rec.mp4", 30)
    made: list[FakeVCam] = []
    vcam = VirtualCameraSink(128, 96, 30, camera_factory=lambda **kw: made.append(FakeVCam(**kw)) or made[-1])
    cap = open_camera(str(tmp_path / "clip.avi"))
    stats = run_live(animator, cap, FaceFramer(), [rec, vcam], frames=12, batch=2, sources=sources(),
                     console=console)
    assert stats.frames == 12 and stats.stop_reason == "frames"
    assert {"capture", "crop", "inference", "generate", "output"} <= set(stats.stage_ms)
    assert animator.calls[0][0] == "set_source"
    assert threading.get_ident() not in animator.threads  # the model ran on the worker
    assert max(n for c, *n in animator.calls if c == "animate" for n in n) == 2  # batches of 2
    frames = read_video(tmp_path / "rec.mp4")
    assert len(frames) == 12 == rec.frames_written
    diffs = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, frames[1:])]
    assert min(diffs) > 1.0
    assert len(made[0].frames) == 12 and made[0].closed
    assert "12 avatar frames" in stats.summary()


def test_realtime_recording_plays_at_wall_clock_speed(tmp_path):
    rec = RecordingSink(tmp_path / "rt.mp4", 20, realtime=True)
    frame = np.zeros((32, 32, 3), np.uint8)
    for i in range(6):  # 6 frames over ~0.5 s at 20 fps -> about 11 video frames
        rec.send(frame + 40 * i)
        time.sleep(0.1)
    rec.close()
    assert 9 <= rec.frames_written <= 13 and rec.saved
    assert len(read_video(tmp_path / "rt.mp4")) == rec.frames_written
    empty = RecordingSink(tmp_path / "empty.mp4", 20)
    empty.close()  # nothing was written: no file, no error
    assert not empty.saved and not (tmp_path / "empty.mp4").exists()


def test_file_camera_end_stops_the_loop(tmp_path):
    make_clip(tmp_path / "clip.avi", 9)
    animator, buf = FakeAnimator(), io.StringIO()
    console = Console(file=buf, force_terminal=True, width=200)  # a terminal gets the status line
    sink = Collect()
    stats = run_live(animator, open_camera(str(tmp_path / "clip.avi")), FaceFramer(enabled=False), [sink],
                     frames=None, batch=4, sources=sources(), console=console)
    assert stats.stop_reason == "end of input" and stats.frames == 9 == len(sink.got)
    assert "fps" in buf.getvalue() and "keys:" not in buf.getvalue()  # status line; no key list without preview


def test_worker_error_is_raised_after_cleanup(tmp_path):
    make_clip(tmp_path / "clip.avi", 5)

    class Broken(FakeAnimator):
        def animate(self, frames):
            raise ValueError("model exploded")

    closed = []

    class Sink:
        def send(self, frame):
            pass

        def close(self):
            closed.append(True)

    cap = open_camera(str(tmp_path / "clip.avi"))
    with pytest.raises(ValueError, match="exploded"):
        run_live(Broken(), cap, FaceFramer(), [Sink()], frames=None, batch=1, sources=sources(),
                 console=quiet()[0])
    assert closed == [True] and cap.state is CaptureState.CLOSED


_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from tests.test_live import FakeAnimator, FakeCamera, sources, quiet
from livepuppet.live import FaceFramer, RecordingSink, open_camera, run_live
from livepuppet.live.sinks import PreviewWindow
mode, out = sys.argv[1], sys.argv[2]
animator = FakeAnimator(delay=0.01)
cap = open_camera(0, opener=FakeCamera(interval=0.02))
sinks = [RecordingSink(out + "/rec.mp4", 30)] if mode == "record" else [PreviewWindow("livepuppet-test")]
stats = run_live(animator, cap, FaceFramer(enabled=False), sinks, frames=None, batch=1,
                 sources=sources(), console=quiet()[0])
if mode == "preview":
    import cv2
    cv2.imwrite(out + "/last.png", sinks[0].last_image[:, :, ::-1])
print(json.dumps({{"frames": stats.frames, "reason": stats.stop_reason, "calls": animator.calls}}))
"""


def _child(mode: str, tmp_path: Path, env: dict | None = None) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD.format(root=str(ROOT))))
    return subprocess.Popen([sys.executable, str(script), mode, str(tmp_path)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


@pytest.mark.parametrize("sig, reason", [(signal.SIGTERM, "terminated"), (signal.SIGINT, "interrupted")])
def test_signal_stops_cleanly_and_keeps_the_recording(tmp_path, sig, reason):
    proc = _child("record", tmp_path)
    rec = tmp_path / "rec.mp4"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not rec.exists() or rec.stat().st_size < 5000):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["reason"] == reason and result["frames"] > 5
    assert len(read_video(rec)) == result["frames"]


# -- preview under Xvfb ------------------------------------------------------

# the xdisplay fixture (a private Xvfb) lives in conftest.py


def _xwd_screenshot(env: dict) -> np.ndarray | None:
    """The root window as RGB, read from xwd's dump (ZPixmap, 24 or 32 bits per pixel)."""
    if not shutil.which("xwd"):
        return None
    data = subprocess.run(["xwd", "-root", "-silent"], env=env, capture_output=True, check=True).stdout
    hdr = np.frombuffer(data[:100], ">u4").astype(int)
    header_size, width, height, lsb_first, bpp, bpl, ncolors = (hdr[i] for i in (0, 4, 5, 7, 11, 12, 19))
    assert bpp in (24, 32) and hdr[14] == 0xFF0000, hdr
    start = header_size + ncolors * 12
    rows = np.frombuffer(data[start:start + bpl * height], np.uint8).reshape(height, bpl)
    px = rows[:, :width * (bpp // 8)].reshape(height, width, bpp // 8)
    return px[..., [2, 1, 0]] if lsb_first == 0 else px[..., -3:]  # LSB first: B, G, R(, pad)


def _shows_green_avatar(img: np.ndarray) -> bool:
    g = img.astype(int)
    greenish = (g[..., 1] > g[..., 0] + 60) & (g[..., 1] > g[..., 2] + 60)
    return bool(greenish.sum() > 0.3 * 384 * 384)  # most of the 384x384 avatar view


def _wait_for_avatar(env: dict, seconds: float) -> np.ndarray | None:
    """Screenshots until the green avatar shows (a loaded machine may be slow to redraw)."""
    deadline = time.monotonic() + seconds
    while (shot := _xwd_screenshot(env)) is not None and not _shows_green_avatar(shot) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    return shot


def test_preview_keys_and_avatar_view(tmp_path, xdisplay):
    env = {**os.environ, "DISPLAY": xdisplay, "QT_QPA_PLATFORM": "xcb"}
    proc = _child("preview", tmp_path, env)
    try:
        found = subprocess.run(["xdotool", "search", "--sync", "--name", "livepuppet-test"], env=env,
                               capture_output=True, text=True, timeout=30)
        win = found.stdout.split()[0]
        time.sleep(0.5)
        for key in ("c", "n"):
            subprocess.run(["xdotool", "windowfocus", "--sync", win], env=env, check=True, timeout=10)
            subprocess.run(["xdotool", "key", key], env=env, check=True, timeout=10)
            time.sleep(0.4)
        shot = _wait_for_avatar(env, 4.0)
        if shot is not None and not _shows_green_avatar(shot):
            # opencv-python's bundled Qt sometimes never paints a window on an X server without a
            # window manager (opencv-python#362); re-mapping the window makes it expose and paint.
            for cmd in ("windowunmap", "windowmap"):
                subprocess.run(["xdotool", cmd, "--sync", win], env=env, timeout=10)
            shot = _wait_for_avatar(env, 10.0)
        subprocess.run(["xdotool", "windowfocus", "--sync", win], env=env, check=True, timeout=10)
        subprocess.run(["xdotool", "key", "q"], env=env, check=True, timeout=10)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["reason"] == "quit" and result["frames"] > 0
    calls = [c[0] for c in result["calls"]]
    assert "recalibrate" in calls
    set_sources = [c for c in result["calls"] if c[0] == "set_source"]
    assert set_sources == [["set_source", 2], ["set_source", 1]]  # first avatar, then the next (green)
    last = cv2.imread(str(tmp_path / "last.png"))[:, :, ::-1]
    assert _shows_green_avatar(last), "the composed preview lacks the avatar view"
    assert shot is None or _shows_green_avatar(shot), "the avatar view (green source) is not on screen"


# -- the main thread never waits ----------------------------------------------

class ToggleLog(FakeAnimator):
    """Records every assignment of a toggle, on whichever thread it happens."""

    TOGGLES = ("relative", "adapt_scale", "smooth")

    def __setattr__(self, name, value):
        if name in self.TOGGLES and name in self.__dict__:
            self.__dict__.setdefault("flips", []).append((name, value, threading.get_ident()))
        super().__setattr__(name, value)


class ScriptedPreview:
    """A preview that presses ``keys`` one per poll, then 'q' once ``frames`` frames were shown."""

    def __init__(self, keys: str, frames: int) -> None:
        self.keys, self.frames = list(keys), frames
        self.polls: list[float] = []
        self.shown = 0

    def show(self, view) -> None:
        self.shown += view.avatar is not None

    def poll_key(self):
        self.polls.append(time.monotonic())
        if self.keys:
            return self.keys.pop(0)
        return "q" if self.shown >= self.frames else None

    def close(self) -> None:
        pass


class SlowVCam(FakeVCam):
    def sleep_until_next_frame(self) -> None:
        time.sleep(0.06)  # pacing to a slow virtual camera: more than a poll interval


class SlowSink:
    def __init__(self) -> None:
        self.frames = 0

    def send(self, frame) -> None:
        time.sleep(0.06)  # an encoder that takes longer than a poll interval
        self.frames += 1

    def close(self) -> None:
        pass


def test_keys_at_a_high_rate_each_take_effect_once_and_polls_stay_fast():
    animator = ToggleLog(delay=0.02)
    keys = "rarsrrsaraar" + "rsrrb"  # r x9, a x4, s x3, then b, on consecutive polls (about 10 ms apart)
    preview = ScriptedPreview(keys, frames=15)
    vcam = VirtualCameraSink(64, 64, 30, camera_factory=lambda **kw: SlowVCam(**kw))
    slow = SlowSink()
    cap = open_camera(0, opener=FakeCamera(interval=0.01))
    stats = run_live(animator, cap, FaceFramer(enabled=False), [preview, vcam, slow], sources=sources(),
                     console=quiet()[0])
    assert stats.stop_reason == "quit"
    flips = animator.__dict__.get("flips", [])
    counts = {t: sum(1 for name, *_ in flips if name == t) for t in ToggleLog.TOGGLES}
    assert counts == {"relative": keys.count("r"), "adapt_scale": keys.count("a"), "smooth": keys.count("s")}
    assert (animator.relative, animator.adapt_scale, animator.smooth) == (False, False, False)  # odd, even, odd
    assert {tid for *_, tid in flips} <= animator.threads  # flipped on the worker, by commands
    assert ("find_best", 75) in animator.calls  # 'b': 3 s at the camera's 25 fps (unknown rate: 25)
    gaps = np.diff(preview.polls)
    print(f"poll interval: median {np.median(gaps) * 1000:.1f} ms, max {gaps.max() * 1000:.1f} ms")
    assert gaps.max() < 0.05, gaps.max()
    assert slow.frames == stats.frames  # the recording-like sink lost nothing
    assert {"vcam", "sink", "output"} <= set(stats.stage_ms)


def test_paste_back_portrait_goes_out_at_the_pictures_size(tmp_path):
    from livepuppet.live.portrait import frame_portrait
    from tests.test_portrait import wide_scene

    make_clip(tmp_path / "clip.avi", 6)
    portrait, notice = frame_portrait(wide_scene(), (64, 64))
    assert notice is None and portrait.pasted
    animator, sink = FakeAnimator(), Collect()
    stats = run_live(animator, open_camera(str(tmp_path / "clip.avi")), FaceFramer(enabled=False), [sink],
                     sources=[portrait], console=quiet()[0])
    got = sink.got
    assert stats.frames == 6 == len(got) and "paste" in stats.stage_ms
    b = portrait.box
    for frame in got:
        assert frame.shape == (600, 900, 3)
        assert np.array_equal(frame[:, :b.x], portrait.picture[:, :b.x])  # the room around the crop is untouched
    np.testing.assert_allclose(animator.source, portrait.crop)  # the model animated the head crop


def test_framing_keys_mean_what_they_mean_on_the_page():
    """'+' '+' then '0' resets the zoom, 'f' turns face tracking off, 't' passes the camera through: the page's
    meanings of 0 and f (livepuppet.live.keys.KEYS is the one table), and t's frames are not avatar frames."""
    framer = FaceFramer(enabled=True, detector=lambda frame: [])
    preview = ScriptedPreview("++0ft", frames=1)
    cap = open_camera(0, opener=FakeCamera(interval=0.01))
    stats = run_live(FakeAnimator(), cap, framer, [preview, SlowSink()], sources=sources(), console=quiet()[0])
    assert stats.stop_reason == "quit"
    assert framer.zoom == 1.0 and not framer.enabled
    assert stats.passed > 0 and "camera frames passed through" in stats.summary()


def test_one_key_table_for_the_desktop_and_the_page():
    from livepuppet.live.keys import ACTIONS, KEYS, page_table
    from livepuppet.live.loop import KEY_ACTIONS

    assert set(ACTIONS.values()) == set(KEY_ACTIONS)  # every desktop key does something, and nothing is unbound
    page = page_table()
    assert page["actions"]["0"] == ACTIONS["0"] == "reset_view" and page["actions"]["f"] == ACTIONS["f"] == "face_tracking"
    assert all(ACTIONS[key] == action for key, action in page["actions"].items())  # a page key means the same here
    assert [label for label, _ in page["help"]] == [b.label for b in KEYS if b.page]
    assert all(key_name(ord(k)) == k for k in ACTIONS if len(k) == 1)  # each letter key reaches the loop
