"""The live loop: camera -> crop -> model -> preview / virtual camera / recording.

Threads, and why:

* capture thread (capture.py): drains the camera so frames are never stale;
* main thread: crops, draws the preview, reads keys, feeds the sinks. GUI
  toolkits and signal handlers want the main thread, and it must never wait
  for the model, or the preview freezes while a slow model runs;
* worker thread: the only thread that touches the animator. It takes the
  newest cropped frames (up to ``batch``) and publishes predictions. Key
  actions that change the animator (recalibrate, switch source, best moment,
  toggles) are queued to it as commands; a toggle flips its state there, so
  two quick presses are two flips and the animator needs no locking;
* one thread per output sink (outlet.py): virtual-camera pacing and video
  encoding never hold up the keys or the preview.

Keys are one table (livepuppet.live.keys.KEYS, shared with the browser page),
their actions another, ``KEY_ACTIONS``. With paste-back portraits the
model's output for the face crop is pasted into the whole picture before it
goes out.

With a live camera, frames the worker had no time for are dropped (newest
wins: low latency). With a file camera every frame is animated in order and
the stages apply backpressure instead.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np
from rich.console import Console
from rich.live import Live
from rich.text import Text

from livepuppet.live.capture import Capture, CaptureState
from livepuppet.live.framing import Box, FaceFramer
from livepuppet.live.keys import ACTIONS, help_lines
from livepuppet.live.outlet import Outlet
from livepuppet.live.sinks import PreviewView, to_uint8
from livepuppet.live.portrait import Portrait
from livepuppet.runtime.meter import AvatarMeter


class Animator(Protocol):
    """The model side, as the live loop sees it (implemented by livepuppet.runtime.pipeline.Pipeline)."""

    frame_size: tuple[int, int]  # (h, w) the model wants
    relative: bool
    adapt_scale: bool
    smooth: bool                 # keypoint smoothing on/off (the strength is the animator's)
    timings: dict[str, float]    # last per-stage milliseconds

    def set_source(self, image: np.ndarray) -> None: ...
    def recalibrate(self) -> None: ...
    def animate(self, frames: np.ndarray) -> np.ndarray: ...
    def keypoints(self) -> np.ndarray | None: ...
    def find_best(self, frames: int) -> None: ...  # calibrate on the nearest pose of the next ``frames``


class Sink(Protocol):
    def send(self, frame: np.ndarray) -> None: ...
    def close(self) -> None: ...


@runtime_checkable
class Preview(Protocol):
    def show(self, view: PreviewView) -> None: ...
    def poll_key(self) -> str | None: ...
    def close(self) -> None: ...


@dataclass
class LiveStats:
    """What a run did; the caller prints ``summary()`` at exit. Frames and latency as livepuppet.runtime.meter
    defines them, the same as the live overlay's."""

    frames: int = 0                 # avatar frames sent to the sinks (camera frames passed through: ``passed``)
    seconds: float = 0.0            # from the first to the last avatar frame out
    latency_ms: float | None = None  # median camera grab to avatar out
    passed: int = 0                 # camera frames sent out as they were (pass-through, key 't')
    # Medians: capture (camera read incl. waiting for the next frame), crop (framing),
    # inference (one animate call), the animator's own stages, output (sinks, without
    # virtual-camera pacing).
    stage_ms: dict[str, float] = field(default_factory=dict)
    batch: int = 1
    dropped: int = 0                # camera frames never animated (live camera only)
    stalls: int = 0                 # times the camera stopped delivering
    stop_reason: str = ""           # frames | quit | end of input | interrupted | terminated
    first_frame_at: float = 0.0     # time.monotonic() when the first avatar frame went out (0: none did)

    @property
    def fps(self) -> float:
        """Avatar frames out per second; 0 when every frame came out of one batch (they leave together)."""
        if self.frames <= self.batch:
            return 0.0
        return (self.frames - 1) / self.seconds if self.frames > 1 and self.seconds > 0 else 0.0

    def summary(self) -> str:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.stage_ms.items())
        rate = f"at {self.fps:.1f} fps" if self.fps > 0 else "in one batch, too few for a frame rate"
        latency = "" if self.latency_ms is None else f", latency {self.latency_ms:.0f} ms (camera grab to avatar out)"
        s = f"{self.frames} avatar frames {rate}{latency} ({self.stop_reason}); median ms: {stages}"
        if self.batch > 1:
            s += f" (inference per batch of up to {self.batch})"
        if self.passed:
            s += f"; {self.passed} camera frames passed through"
        if self.dropped:
            s += f"; {self.dropped} camera frames skipped to stay real-time"
        if self.stalls:
            s += f"; camera stalled {self.stalls}x"
        return s


_DONE = object()


class _Worker(threading.Thread):
    """Runs the animator; see the module docstring."""

    def __init__(self, animator: Animator, batch: int, live: bool) -> None:
        super().__init__(name="animator", daemon=True)
        self.animator, self.batch, self.live = animator, max(1, batch), live
        self.cond = threading.Condition()
        self.inbox: deque[tuple[np.ndarray, float]] = deque()
        self.commands: list[Callable[[Animator], None]] = []
        self.results: queue.Queue = queue.Queue(maxsize=2)
        self.input_closed = self.stopping = False
        self.error: BaseException | None = None
        self.dropped = 0
        self.tag: int | None = None  # which source the results belong to (set by its command)

    def submit(self, crop: np.ndarray, stamp: float, timeout: float) -> bool:
        """Queue a crop; live: drops the oldest beyond ``batch``; file: False if still full."""
        with self.cond:
            if not self.live and not self.cond.wait_for(
                    lambda: len(self.inbox) < 2 * self.batch or self.stopping, timeout):
                return False
            self.inbox.append((crop, stamp))
            while self.live and len(self.inbox) > self.batch:
                self.inbox.popleft()
                self.dropped += 1
            self.cond.notify_all()
            return True

    def command(self, fn: Callable[[Animator], None]) -> None:
        with self.cond:
            self.commands.append(fn)
            self.cond.notify_all()

    def close_input(self) -> None:
        with self.cond:
            self.input_closed = True
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def _ready_anyway(self) -> bool:
        """Something for the worker besides a frame: a command, the end of input, a stop."""
        return bool(self.commands) or self.stopping or self.input_closed

    def _ready(self) -> bool:
        if self._ready_anyway():
            return True
        return len(self.inbox) >= (1 if self.live else self.batch)

    def run(self) -> None:
        wait_ready = getattr(self.animator, "wait_ready", None)  # a remote generator with its frames in flight
        try:
            while True:
                while wait_ready is not None and not wait_ready(0.05) and not self._ready_anyway():
                    pass  # the crop taken next is then the newest, not one that waits for a slot
                with self.cond:
                    self.cond.wait_for(self._ready)
                    if self.stopping:
                        return
                    cmds, self.commands = self.commands, []
                    take = [self.inbox.popleft() for _ in range(min(self.batch, len(self.inbox)))]
                    done = not take and not cmds and self.input_closed
                    self.cond.notify_all()
                if done:
                    break
                for fn in cmds:
                    fn(self.animator)
                if take:
                    self._animate(take)
            drain = getattr(self.animator, "drain", None)
            if drain is not None:
                drain()  # frames still out at a remote generator
        except BaseException as e:  # re-raised in the main thread after a clean shutdown
            self.error = e
        self._put(_DONE)

    def _animate(self, take: list[tuple[np.ndarray, float]]) -> None:
        t0 = time.perf_counter()
        frames, stamps, tag = np.stack([c for c, _ in take]), [s for _, s in take], self.tag
        start = getattr(self.animator, "animate_async", None)  # a remote generator answers later, elsewhere
        if start is None:
            out = self.animator.animate(frames)
            self._publish(out, self.animator.timings, t0, stamps, tag)
        else:
            start(frames, lambda out, timings: self._publish(out, timings, t0, stamps, tag))

    def _publish(self, out: np.ndarray, timings: dict[str, float], t0: float, stamps: list[float],
                 tag: int | None) -> None:
        timings = {"inference": (time.perf_counter() - t0) * 1000, **timings}
        kp = self.animator.keypoints()
        self._put((np.asarray(out), None if kp is None else np.asarray(kp)[-1], timings, stamps, tag))

    def _put(self, item: object) -> None:
        while not self.stopping:
            try:
                self.results.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


class _StageClock:
    """Per-stage millisecond samples: recent medians for display, run medians for stats."""

    FIRST, LAST = ("capture", "detect", "crop", "inference"), ("paste", "output", "preview", "vcam", "record")

    def __init__(self, capture_ms: deque[float]) -> None:
        self.samples: dict[str, deque[float]] = {"capture": capture_ms}

    def add(self, stage: str, ms: float) -> None:
        self.samples.setdefault(stage, deque(maxlen=10000)).append(ms)

    def medians(self, recent: int | None = None) -> dict[str, float]:
        """Medians in pipeline order: capture, crop, inference, model stages, output, latency."""
        meds = {}
        for k, v in self.samples.items():
            vals = list(v)[-recent:] if recent else list(v)
            if vals:
                meds[k] = statistics.median(vals)
        keys = [k for k in self.FIRST if k in meds]
        keys += [k for k in meds if k not in self.FIRST + self.LAST]
        keys += [k for k in self.LAST if k in meds]
        return {k: meds[k] for k in keys}


def _portrait(src: "np.ndarray | Portrait", size: tuple[int, int]) -> Portrait:
    """A plain image is animated whole (no paste-back), as before portraits existed."""
    if isinstance(src, Portrait):
        return src
    img = src.astype(np.float32) / 255.0 if src.dtype == np.uint8 else src
    if img.shape[:2] != tuple(size):
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return Portrait(crop=np.ascontiguousarray(img[..., :3], dtype=np.float32))


def run_live(animator: Animator, capture: Capture, framer: FaceFramer, sinks: Sequence[Sink | Preview], *,
             frames: int | None = None, batch: int = 1, sources: Sequence[np.ndarray | Portrait] = (),
             console: Console | None = None, mirror: bool = False, best_seconds: float = 3.0) -> LiveStats:
    """Run until q/Esc, end of a file camera, ``frames`` output frames, Ctrl-C or SIGTERM.

    ``sinks`` may contain one preview (anything with show/poll_key) and any
    number of output sinks (send/close), each fed from its own thread. ``sources``
    are the avatars that n/p cycle through (images, or portraits with
    paste-back); the loop itself sets ``sources[0]`` before the first frame.
    The camera, the sinks and the worker are always released/closed.
    """
    return _Loop(animator, capture, framer, sinks, frames, batch, sources,
                 console or Console(stderr=True), mirror, best_seconds).run()


# -- key actions: one function per action of livepuppet.live.keys.KEYS, looked up in KEY_ACTIONS ------

def _quit(loop: "_Loop") -> None:
    loop.stop_reason = "quit"


def _recalibrate(loop: "_Loop") -> None:
    loop.worker.command(lambda an: an.recalibrate())
    loop.say("recalibrating: the next frame is the neutral pose")


def _switch_source(step: int) -> Callable[["_Loop"], None]:
    def act(loop: "_Loop") -> None:
        if len(loop.sources) > 1:
            loop.source_idx = (loop.source_idx + step) % len(loop.sources)
            loop.set_source(loop.source_idx)
            loop.say(f"avatar {loop.source_idx + 1}/{len(loop.sources)}")
    return act


def _find_best(loop: "_Loop") -> None:
    n = max(1, round(loop.best_seconds * (loop.capture.fps or 25.0)))
    loop.worker.command(lambda an: an.find_best(n))
    loop.say(f"best moment: watching {n} frames for the pose nearest the avatar's, then calibrating on it")


def _pan(dx: int, dy: int) -> Callable[["_Loop"], None]:
    return lambda loop: loop.framer.pan(dx, dy)


def _flip(attr: str, part: Callable[["_Loop"], object] = lambda loop: loop,
          label: str | None = None) -> Callable[["_Loop"], None]:
    """A toggle of the loop's own state (the view, the framing): flipped on the main thread at once."""
    def act(loop: "_Loop") -> None:
        owner = part(loop)
        setattr(owner, attr, not getattr(owner, attr))
        if label:
            loop.say(f"{label}: {'on' if getattr(owner, attr) else 'off'}")
    return act


def _flip_model(attr: str, label: str) -> Callable[["_Loop"], None]:
    """A toggle of the animator's state: a command that flips it on the worker, so no press is lost."""
    def act(loop: "_Loop") -> None:
        def flip(an: Animator) -> None:
            value = not getattr(an, attr)
            setattr(an, attr, value)
            loop.say(f"{label}: {'on' if value else 'off'}")
        loop.worker.command(flip)
    return act


KEY_ACTIONS: dict[str, Callable[["_Loop"], None]] = {
    "quit": _quit, "calibrate": _recalibrate, "best_moment": _find_best,
    "next_avatar": _switch_source(1), "previous_avatar": _switch_source(-1),
    "zoom_in": lambda loop: loop.framer.zoom_in(), "zoom_out": lambda loop: loop.framer.zoom_out(),
    "pan_left": _pan(-1, 0), "pan_right": _pan(1, 0), "pan_up": _pan(0, -1), "pan_down": _pan(0, 1),
    "reset_view": lambda loop: loop.framer.reset_view(),
    "face_tracking": _flip("enabled", lambda loop: loop.framer, "face tracking"),
    "mirror": _flip("mirror", lambda loop: loop.intake), "pass_through": _flip("passthrough"),
    "keypoints": _flip("show_kp"), "info": _flip("show_info"), "help": _flip("show_help"),
    "relative": _flip_model("relative", "relative"), "adapt_scale": _flip_model("adapt_scale", "adapt scale"),
    "smoothing": _flip_model("smooth", "smoothing"),
}
@contextlib.contextmanager
def _stop_signals(loop: "_Loop") -> Iterator[None]:
    """SIGTERM and Ctrl-C set the loop's stop reason (it sees it within ~20 ms) while the loop runs.

    A flag, not KeyboardInterrupt: an exception landing between a sink's write
    and the frame count would leave a recording with one frame more than the
    summary reports. A second Ctrl-C raises, for when the shutdown itself hangs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupted = []

    def on_term(signum: int, frame: object) -> None:
        loop.stop_reason = loop.stop_reason or "terminated"

    def on_int(signum: int, frame: object) -> None:
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(True)
        loop.stop_reason = loop.stop_reason or "interrupted"

    old_term, old_int = signal.signal(signal.SIGTERM, on_term), signal.signal(signal.SIGINT, on_int)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term if old_term is not None else signal.SIG_DFL)
        signal.signal(signal.SIGINT, old_int if old_int is not None else signal.default_int_handler)


class _Output:
    """Frames out: to every sink's outlet at one size; avatar frames counted and timed (``meter``)."""

    def __init__(self, outlets: list[Outlet], clock: _StageClock, limit: int | None) -> None:
        self.outlets, self.clock, self.limit = outlets, clock, limit
        self.size: tuple[int, int] | None = None  # (w, h) of the first frame out; a recording keeps one size
        self.avatar: np.ndarray | None = None
        self.meter = AvatarMeter()
        self.passed = 0  # camera frames sent out as they were

    def emit(self, frame: np.ndarray, stamp: float, avatar: bool = True) -> bool:
        """Send one frame (an avatar's, or the camera's own in pass-through); True once ``limit`` avatar frames
        went out. ``stamp``: the camera grab's time.monotonic()."""
        t0 = time.perf_counter()
        img = to_uint8(frame)
        self.size = self.size or (img.shape[1], img.shape[0])
        if (img.shape[1], img.shape[0]) != self.size:  # another avatar's picture size
            img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
        for o in self.outlets:
            o.send(img)
        self.clock.add("output", (time.perf_counter() - t0) * 1000)
        self.avatar = img
        if not avatar:
            self.passed += 1
            return False
        self.meter.out(stamp)
        return self.limit is not None and self.meter.frames >= self.limit


class _Intake:
    """Camera frames in: read, mirrored, cropped around the face, submitted to the worker."""

    def __init__(self, capture: Capture, framer: FaceFramer, worker: _Worker, clock: _StageClock,
                 size: tuple[int, int], mirror: bool) -> None:
        self.capture, self.framer, self.worker, self.clock, self.size = capture, framer, worker, clock, size
        self.mirror = mirror
        self.camera: np.ndarray | None = None
        self.box: Box | None = None
        self.pending: tuple[np.ndarray, float] | None = None  # file mode: crop waiting for room
        self.new_frame = False
        self.stalled = False
        self.stalls = 0

    def take(self, submit: bool) -> tuple[np.ndarray, float] | None:
        """Read and crop the next frame and submit it, or (``submit`` False) return it with its stamp."""
        self.new_frame = False
        if self.pending is not None:  # file mode: retry the crop that found the inbox full
            if not self.worker.submit(*self.pending, timeout=0.02):
                return None
            self.pending = None
        if self.capture.ended:
            self.worker.close_input()
            return None
        got = self.capture.read(timeout=0.01 if self.worker.results.empty() else 0.0)
        if got is None:
            if self.capture.ended:
                self.worker.close_input()
            return None
        _, frame = got
        stamp = self.capture.last_read_stamp
        if self.mirror:
            frame = np.ascontiguousarray(frame[:, ::-1])
        t0 = time.perf_counter()
        crop, self.box = self.framer.crop(frame, self.size)
        self.clock.add("crop", (time.perf_counter() - t0) * 1000)
        self.camera, self.new_frame = frame, True
        if not submit:
            return crop, stamp
        if not self.worker.submit(crop, stamp, timeout=0.02):
            self.pending = (crop, stamp)
        return None

    def check_stall(self, say: Callable[[str], None]) -> None:
        stalled = self.capture.state is CaptureState.STALLED
        if stalled and not self.stalled:
            self.stalls += 1
            say(f"[yellow]camera {self.capture.name} stalled: no frames; reconnecting...[/]")
        elif self.stalled and not stalled and self.capture.state is CaptureState.RUNNING:
            say(f"[green]camera {self.capture.name} is back[/]")
        self.stalled = stalled


class _Loop:
    def __init__(self, animator: Animator, capture: Capture, framer: FaceFramer, sinks: Sequence[Sink | Preview],
                 frames: int | None, batch: int, sources: Sequence[np.ndarray | Portrait], console: Console,
                 mirror: bool, best_seconds: float) -> None:
        self.animator, self.capture, self.framer, self.console = animator, capture, framer, console
        self.preview: Preview | None = next((s for s in sinks if isinstance(s, Preview)), None)
        self.outlets = [Outlet(s, live=capture.live) for s in sinks if s is not self.preview]
        self.best_seconds = best_seconds
        self.sources = [_portrait(s, animator.frame_size) for s in sources]
        self.source_idx = 0
        self.worker = _Worker(animator, batch, capture.live)
        self.clock = _StageClock(capture.read_ms)
        self.clock.samples["detect"] = framer.detect_ms
        for o in self.outlets:
            self.clock.samples[o.stage] = o.ms
        self.output = _Output(self.outlets, self.clock, frames)
        self.display = _Display(self)
        self.stats = LiveStats(batch=max(1, batch))
        self.intake = _Intake(capture, framer, self.worker, self.clock, animator.frame_size, mirror)
        self.passthrough, self.show_kp, self.show_info, self.show_help = False, False, True, False
        self.stop_reason: str | None = None
        self.kp: np.ndarray | None = None

    def say(self, text: str) -> None:
        self.console.print(text)

    def set_source(self, idx: int) -> None:
        src, worker = self.sources[idx], self.worker

        def apply(an: Animator) -> None:
            an.set_source(src.crop)
            worker.tag = idx  # results from now on belong to this portrait
        worker.command(apply)

    # -- main ---------------------------------------------------------------
    def run(self) -> LiveStats:
        with _stop_signals(self):
            self._run()
        if self.worker.error is not None:
            raise self.worker.error
        return _final_stats(self)

    def _run(self) -> None:
        live_line: Live | None = None
        try:
            if self.preview is not None:
                self.console.print("keys:\n  " + "\n  ".join(help_lines()))
            self.worker.start()
            for o in self.outlets:
                o.start()
            if self.sources:
                self.set_source(0)
            if self.preview is None and self.console.is_terminal:
                live_line = Live(Text("starting..."), console=self.console, auto_refresh=False,
                                 transient=True, redirect_stdout=False, redirect_stderr=False)
                live_line.start()
            self._loop(live_line)
        except KeyboardInterrupt:
            self.stop_reason = "interrupted"
        finally:
            self._shutdown(live_line)

    def _loop(self, live_line: Live | None) -> None:
        last_draw = last_status = 0.0
        while self.stop_reason is None:
            dirty = self._take_camera_frame()
            dirty |= self._drain_results()
            if self.stop_reason is not None:
                break
            if self.worker.error is not None or not self.worker.is_alive() and self.worker.results.empty():
                self.stop_reason = self.stop_reason or "end of input"
                break
            self.intake.check_stall(self.say)
            now = time.monotonic()
            if self.preview is not None:
                if (dirty and now - last_draw > 1 / 30) or now - last_draw > 0.1:
                    t0 = time.perf_counter()
                    self.display.draw()
                    self.clock.add("preview", (time.perf_counter() - t0) * 1000)
                    last_draw = now
                key = self.preview.poll_key()
                if key in ACTIONS:
                    KEY_ACTIONS[ACTIONS[key]](self)
            elif live_line is not None and now - last_status > 0.5:
                live_line.update(Text(self.display.status_line()), refresh=True)
                last_status = now

    def _take_camera_frame(self) -> bool:
        """Take a camera frame, if one came: to the worker, or straight out in pass-through; True when one came."""
        got = self.intake.take(submit=not self.passthrough)
        if got is not None:
            self._emit(*got, avatar=False)
        return self.intake.new_frame

    def _drain_results(self) -> bool:
        got = False
        while self.stop_reason is None:
            try:
                item = self.worker.results.get_nowait()
            except queue.Empty:
                break
            if item is _DONE:
                break
            out, kp, timings, stamps, tag = item
            for k, v in timings.items():
                self.clock.add(k, v)
            portrait = self.sources[tag] if tag is not None and tag < len(self.sources) else None
            self.kp = kp if portrait is None or kp is None else portrait.keypoints(kp)
            got = True
            for frame, stamp in zip(out, stamps, strict=True):
                if self.passthrough:  # results still in flight when pass-through was switched on
                    break
                if portrait is not None and portrait.pasted:
                    t0 = time.perf_counter()
                    frame = portrait.paste(frame)
                    self.clock.add("paste", (time.perf_counter() - t0) * 1000)
                self._emit(frame, stamp)
                if self.stop_reason is not None:
                    break
        return got

    def _emit(self, frame: np.ndarray, stamp: float, avatar: bool = True) -> None:
        if self.output.emit(frame, stamp, avatar):
            self.stop_reason = "frames"

    # -- shutdown -----------------------------------------------------------
    def _shutdown(self, live_line: Live | None) -> None:
        """Release everything, each step guarded so one failure cannot leak the rest."""
        steps: list[Callable[[], object]] = [self.worker.stop, self.capture.release]
        steps += [o.close for o in self.outlets]
        if self.preview is not None:
            steps.append(self.preview.close)
        if live_line is not None:
            steps.append(live_line.stop)
        first_error: BaseException | None = None
        for step in steps:
            try:
                step()
            except Exception as e:
                first_error = first_error or e
        self.worker.join(timeout=5.0)
        if first_error is not None and self.worker.error is None:
            raise first_error


def _final_stats(loop: _Loop) -> LiveStats:
    """What the run did, for its summary line: frames, speed, latency, stages, drops and why it stopped."""
    st, meter = loop.stats, loop.output.meter
    st.frames, st.passed = meter.frames, loop.output.passed
    st.seconds = meter.last - meter.first
    st.latency_ms = meter.latency()
    st.first_frame_at = meter.first
    st.stage_ms = loop.clock.medians()
    st.dropped = loop.worker.dropped + getattr(loop.capture, "dropped", 0)
    st.stalls = max(loop.intake.stalls, getattr(loop.capture, "stalls", 0))
    st.stop_reason = loop.stop_reason or "end of input"
    return st


class _Display:
    """The preview picture and the status line: what the user sees of the loop's state."""

    INFO_EVERY = 0.5  # s: the info numbers change no faster, so their (cached) panel is redrawn no more often

    def __init__(self, loop: _Loop) -> None:
        self.loop = loop
        self._info: tuple[float, list[str]] = (-1.0, [])

    def stage_text(self, per_line: int | None = None) -> list[str]:
        items = [f"{k} {v:.1f}" for k, v in self.loop.clock.medians(recent=30).items()]
        n = per_line or max(1, len(items))
        return [" ".join(items[i:i + n]) for i in range(0, len(items), n)]

    def status_line(self) -> str:
        notice = getattr(self.loop.animator, "notice", None)
        state = " | camera stalled, reconnecting" if self.loop.intake.stalled else f" | {notice}" if notice else ""
        meter = self.loop.output.meter
        return f"{meter.text(recent=True)} | {meter.frames} avatar frames | ms: {' '.join(self.stage_text())}{state}"

    def info(self) -> list[str]:
        now = time.monotonic()
        if now - self._info[0] >= self.INFO_EVERY:
            self._info = (now, self._info_lines())
        return self._info[1]

    def _info_lines(self) -> list[str]:
        lp, a = self.loop, self.loop.animator
        on = {True: "on", False: "off"}
        lines = [f"{lp.output.meter.text(recent=True)}, {lp.output.meter.frames} frames", "stage ms:",
                 *self.stage_text(per_line=3),
                 f"relative {on[bool(a.relative)]}  adapt {on[bool(a.adapt_scale)]}  "
                 f"smooth {on[bool(getattr(a, 'smooth', False))]}  mirror {on[lp.intake.mirror]}  h: keys"]
        dist = getattr(a, "pose_distance", None)
        if dist is not None:
            lines.append(f"pose distance to the avatar {dist:.3f}" + (" (searching)" if getattr(a, "searching", 0)
                                                                       else ""))
        return lines

    def draw(self) -> None:
        lp, cam = self.loop, self.loop.intake
        if cam.camera is None or lp.preview is None:
            return
        label = "camera pass-through" if lp.passthrough else (
            f"avatar {lp.source_idx + 1}/{len(lp.sources)}" if lp.sources else "avatar")
        notice = "camera stalled: reconnecting..." if cam.stalled else getattr(lp.animator, "notice", None)
        lp.preview.show(PreviewView(camera=cam.camera, box=cam.box, avatar=lp.output.avatar,
                                    keypoints=lp.kp if lp.show_kp and not lp.passthrough else None,
                                    label=label, notice=notice, info=self.info() if lp.show_info else [],
                                    help=lp.show_help))
