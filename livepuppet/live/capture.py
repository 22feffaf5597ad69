"""Camera and video-file capture on a background thread.

Why a thread: ``VideoCapture.read`` blocks until the device has a frame, and a
live camera must be drained continuously or its driver buffer fills with stale
frames (seconds of lag). The thread owns the device; the consumer only sees
RGB uint8 frames.

Two delivery modes, two classes behind the one :class:`Capture` interface:

* live camera (:class:`LiveCapture`): a one-frame slot. Each grab overwrites the slot and bumps a
  sequence number; ``read`` returns the newest frame newer than the last one
  read, so a slow consumer drops stale frames instead of lagging behind.
* file camera played like a camera (:class:`PacedFileCapture`, what ``run``
  does with a video file): the live slot, filled at the file's own frame rate,
  so frames the consumer has no time for are dropped and latency means what it
  means for a webcam; end of file ends the stream.
* file camera, every frame (:class:`FileCapture`, ``run --every-frame``): a
  small bounded queue. Every frame is delivered in order and the reader thread
  blocks when the queue is full (backpressure); end of file ends the stream.

A live camera that stops delivering (unplugged, driver hiccup) is reported as
``stalled``; the thread releases it and keeps reopening it with exponential
backoff, and the stream resumes when frames return.
"""

from __future__ import annotations

import enum
import queue
import sys
import threading
import time
from collections import deque
from typing import Callable, Protocol

import numpy as np

from livepuppet.errors import CameraError
from livepuppet.limits import MAX_PIXELS
from livepuppet.live.cameras import list_cameras

_STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "udp://", "tcp://", "srt://")


class FrameSource(Protocol):
    """The part of ``cv2.VideoCapture`` we use (so tests can substitute it)."""

    def isOpened(self) -> bool: ...
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def release(self) -> None: ...
    def set(self, prop_id: int, value: float) -> bool: ...


#: Builds a fresh source for a camera spec; called again on every reopen.
OpenerFactory = Callable[[int | str], FrameSource]


class CaptureState(str, enum.Enum):
    RUNNING = "running"
    STALLED = "stalled"
    ENDED = "ended"
    CLOSED = "closed"


_END = object()


class Capture:
    """A frame source read on its own thread; see the module docstring.

    The two delivery modes are the two subclasses, :class:`LiveCapture` and
    :class:`FileCapture`; this base owns the thread, the device and the
    timings, and both present the same consumer interface.
    """

    live = False

    def __init__(self, opener: Callable[[], FrameSource], *, name: str, source: FrameSource | None = None,
                 stall_after: float = 1.0, backoff: tuple[float, float] = (0.25, 4.0), queue_size: int = 4) -> None:
        self.name = name
        self.stall_after, self.backoff = stall_after, backoff
        self._opener = opener
        self._src = source
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._state = CaptureState.RUNNING
        self._ended = False
        self.stalls = 0        # stall episodes so far
        self.dropped = 0       # live frames overwritten before being read
        self.last_read_stamp = 0.0
        self.fps = _source_fps(source)  # what the camera/file reports; None when unknown
        self.read_ms: deque[float] = deque(maxlen=10000)
        self._thread = threading.Thread(target=self._run, name=f"capture:{name}", daemon=True)

    # -- consumer side -------------------------------------------------
    def start(self) -> "Capture":
        self._thread.start()
        return self

    @property
    def state(self) -> CaptureState:
        """Running/stalled/ended/closed."""
        return self._state

    def wait_first_frame(self, timeout: float) -> bool:
        """Wait until the first frame was grabbed; False on timeout."""
        return True

    @property
    def ended(self) -> bool:
        """True once a file camera's last frame has been read."""
        return self._ended

    def read(self, timeout: float | None = None) -> tuple[int, np.ndarray] | None:
        """The next frame as ``(seq, rgb_uint8)``, or None on timeout / end of stream."""
        raise NotImplementedError

    def release(self) -> None:
        """Stop the thread and release the device; safe to call twice."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            self._close_source()
        self._state = CaptureState.CLOSED

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- thread side ---------------------------------------------------
    def _close_source(self) -> None:
        src, self._src = self._src, None
        if src is not None:
            try:
                src.release()
            except Exception:  # a vanished device may fail to release; nothing left to do
                pass

    def _run(self) -> None:
        try:
            self._pump()
        finally:
            self._close_source()  # also when release() gave up joining a blocked read

    def _pump(self) -> None:
        raise NotImplementedError

    def _grab(self) -> np.ndarray | None:
        t0 = time.perf_counter()
        try:
            ok, frame = self._src.read() if self._src is not None else (False, None)
        except Exception:  # a driver error mid-stream is a failed read like any other
            ok, frame = False, None
        if not ok or frame is None or frame.shape[0] * frame.shape[1] > MAX_PIXELS:  # grown past its declared size
            return None
        rgb = _to_rgb(frame)
        self.read_ms.append((time.perf_counter() - t0) * 1000)
        return rgb


class FileCapture(Capture):
    """A video file: every frame in order through a small bounded queue (the reader blocks when it is full)."""

    def __init__(self, opener: Callable[[], FrameSource], *, queue_size: int = 4, **kw: object) -> None:
        super().__init__(opener, **kw)  # type: ignore[arg-type]
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)

    def read(self, timeout: float | None = None) -> tuple[int, np.ndarray] | None:
        """The next frame in order."""
        if self._stop.is_set() or self._ended:
            return None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            self._ended = True
            return None
        seq, frame, self.last_read_stamp = item
        return seq, frame

    def _pump(self) -> None:
        seq = 0
        while not self._stop.is_set():
            frame = self._grab()
            item = _END if frame is None else (seq + 1, frame, time.monotonic())
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if frame is None:
                self._state = CaptureState.ENDED
                return
            seq += 1


class LiveCapture(Capture):
    """A live camera: a one-frame slot, newest frame wins; reconnects with backoff when it stalls."""

    live = True

    def __init__(self, opener: Callable[[], FrameSource], **kw: object) -> None:
        kw.pop("queue_size", None)
        super().__init__(opener, **kw)  # type: ignore[arg-type]
        self._frame: np.ndarray | None = None
        self._seq = 0          # frames grabbed
        self._read_seq = 0     # last seq handed to the consumer
        self._stamp = 0.0      # monotonic time of the newest grab

    @property
    def state(self) -> CaptureState:
        """A camera silent for ``stall_after`` counts as stalled even while its read call is still blocked."""
        with self._cond:
            if (self._state is CaptureState.RUNNING and self._seq
                    and time.monotonic() - self._stamp > self.stall_after):
                return CaptureState.STALLED
            return self._state

    def wait_first_frame(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._seq > 0, timeout)

    def read(self, timeout: float | None = None) -> tuple[int, np.ndarray] | None:
        """The newest frame not read yet (skipped seqs were dropped)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._seq > self._read_seq or self._stop.is_set(), timeout):
                return None
            if self._seq <= self._read_seq or self._stop.is_set():
                return None
            self._read_seq = self._seq
            self.last_read_stamp = self._stamp
            return self._seq, self._frame  # type: ignore[return-value]

    def _pump(self) -> None:
        delay = self.backoff[0]
        failing_since: float | None = None
        while not self._stop.is_set():
            if self._src is None and not self._reopen():
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff[1])
                failing_since = None
                continue
            frame = self._grab()
            now = time.monotonic()
            if frame is not None:
                delay, failing_since = self.backoff[0], None
                self._publish(frame, now)
                continue
            failing_since = failing_since or now
            if now - failing_since < self.stall_after:
                self._stop.wait(0.01)
                continue
            self._mark_stalled()
            self._close_source()
            self._stop.wait(delay)
            delay = min(delay * 2, self.backoff[1])
            failing_since = None

    def _reopen(self) -> bool:
        try:
            src = self._opener()
        except Exception:
            return False
        if not src.isOpened():
            src.release()
            return False
        self._src = src
        return True

    def _mark_stalled(self) -> None:
        with self._cond:
            if self._state is CaptureState.RUNNING:
                self._state = CaptureState.STALLED
                self.stalls += 1

    def _publish(self, frame: np.ndarray, now: float) -> None:
        with self._cond:
            if self._seq > self._read_seq:
                self.dropped += 1
            if self._state is CaptureState.RUNNING and self._seq and now - self._stamp > self.stall_after:
                self.stalls += 1  # a read that blocked past stall_after, seen via ``state``
            self._frame, self._stamp = frame, now
            self._seq += 1
            self._state = CaptureState.RUNNING
            self._cond.notify_all()


class PacedFileCapture(LiveCapture):
    """A video file played like a camera: each frame offered at its time on the file's clock, newest wins."""

    def __init__(self, opener: Callable[[], FrameSource], **kw: object) -> None:
        super().__init__(opener, **kw)
        self.fps = self.fps or 25.0  # a file that does not say plays at a webcam's usual rate
        self._eof = False

    @property
    def ended(self) -> bool:
        """True once the file is over and its last frame was read (or dropped)."""
        with self._cond:
            return self._eof and self._read_seq >= self._seq

    def read(self, timeout: float | None = None) -> tuple[int, np.ndarray] | None:
        if self.ended:
            return None
        return super().read(timeout)

    def _pump(self) -> None:
        period = 1.0 / self.fps  # type: ignore[operator]
        start, n = time.monotonic(), 0
        while not self._stop.is_set():
            frame = self._grab()
            if frame is None:
                break
            late = time.monotonic() - (start + n * period)
            if late > period:  # decoding fell behind: play on from now, not in a burst
                start, late = start + late, 0.0
            if late < 0:
                self._stop.wait(-late)
            self._publish(frame, time.monotonic())
            n += 1
        with self._cond:
            self._eof = True
            self._state = CaptureState.ENDED
            self._cond.notify_all()


def _source_fps(src: FrameSource | None) -> float | None:
    try:
        fps = float(src.get(5))  # type: ignore[union-attr]  # cv2.CAP_PROP_FPS
    except Exception:  # no get() (a test double) or a backend that cannot tell
        return None
    return fps if 1.0 <= fps <= 240.0 else None


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        import cv2
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        import cv2
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return np.ascontiguousarray(frame[:, :, 2::-1])


# -- opening -------------------------------------------------------------

def cv2_opener(spec: int | str) -> FrameSource:
    """The default opener: V4L2 on Linux for indices (the default backend there may be
    GStreamer, slower to open and ignoring buffer settings), any backend otherwise."""
    import cv2
    log = cv2.utils.logging
    old = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)  # a missing camera gets our CameraError, not OpenCV's warnings
    try:
        if isinstance(spec, int) and sys.platform.startswith("linux"):
            return cv2.VideoCapture(spec, cv2.CAP_V4L2)
        return cv2.VideoCapture(spec)
    finally:
        log.setLogLevel(old)


def _missing_camera(index: int, cameras: list[str]) -> CameraError:
    if not cameras:
        return CameraError(f"camera {index} not found: no cameras found; plug one in, "
                           "check that no other app holds it, or pass a video file with --camera PATH")
    return CameraError(f"camera {index} not found; cameras that exist: {', '.join(cameras)}; "
                       "pick one with --camera INDEX")


def open_camera(spec: str | int, size: tuple[int, int] | None = None, *,
                opener: OpenerFactory | None = None, live: bool | None = None, paced: bool = False,
                lister: Callable[[], list[str]] | None = None,
                first_frame_timeout: float = 5.0, **capture_kw: object) -> Capture:
    """Open a camera index (int or digit string) or a video file/URL and start its thread.

    ``size`` is the requested ``(width, height)`` of a live camera (it picks the
    nearest mode it supports); files keep their size. Stream URLs (rtsp, rtmp,
    udp, tcp, srt) are treated as live cameras, other URLs and paths as files;
    ``live`` overrides that. A file is delivered frame by frame in order, or
    with ``paced`` played at its own frame rate like a camera. Raises
    CameraError when nothing can be opened or a live camera opens but sends no
    frame within ``first_frame_timeout`` seconds.
    """
    opener = opener or cv2_opener
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec)
    is_index = isinstance(spec, int)
    if live is None:
        live = is_index or str(spec).lower().startswith(_STREAM_SCHEMES)
    if not is_index and "://" not in str(spec):
        _check_file(str(spec))

    def open_once() -> FrameSource:
        src = opener(spec)
        if live and src.isOpened():
            _configure(src, size)
        if src.isOpened():
            _check_size(src, spec)
        return src

    src = open_once()
    if not src.isOpened():
        src.release()
        if is_index:
            raise _missing_camera(int(spec), (lister or list_cameras)())
        raise CameraError(f"cannot open video {spec}: unreadable or unsupported format")
    kind = LiveCapture if live else PacedFileCapture if paced else FileCapture
    cap = kind(open_once, name=str(spec), source=src, **capture_kw).start()  # type: ignore[arg-type]
    if live and not cap.wait_first_frame(first_frame_timeout):
        cap.release()
        raise CameraError(f"camera {spec} opened but sent no frames; close other apps using it "
                          "or try another --camera index")
    return cap


def _check_file(path: str) -> None:
    """A camera file must be a regular file: OpenCV would wait forever on a FIFO, read /dev/zero without end."""
    from livepuppet.files import check_regular

    try:
        check_regular(path, "video file", CameraError)
    except OSError:
        raise CameraError(f"video file not found: {path}; pass a camera index (e.g. --camera 0) "
                          "or an existing video file") from None


def _check_size(src: FrameSource, spec: int | str) -> None:
    """Frames over the pixel limit are refused by their declared size, before one is decoded and queued."""
    from livepuppet.errors import MediaError
    from livepuppet.media import check_frame_size

    try:
        check_frame_size(src, spec, "camera" if isinstance(spec, int) else "video")
    except MediaError as exc:
        src.release()
        raise CameraError(str(exc)) from None


def _configure(src: FrameSource, size: tuple[int, int] | None) -> None:
    import cv2
    try:
        src.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver queue short: less lag
        if size is not None:
            w, h = size
            if w > 640:  # uncompressed YUYV above VGA runs at a few fps on USB 2 cameras
                src.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*"MJPG"))
            src.set(cv2.CAP_PROP_FRAME_WIDTH, w)
            src.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
    except cv2.error:
        pass  # a camera that refuses a setting keeps its default
