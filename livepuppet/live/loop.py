"""The live loop: camera -> crop -> model -> preview / virtual camera / recording.

Threads, and why:

* capture thread (capture.py): drains the camera so frames are never stale;
* main thread: crops, draws the preview, reads keys, feeds the sinks. GUI
  toolkits and signal handlers want the main thread, and it must never wait
  for the model, or the preview freezes while a slow model runs;
* worker thread: the only thread that touches the animator. It takes the
  newest cropped frames (up to ``batch``) and publishes predictions. Key
  actions that change the animator (recalibrate, switch source, toggles) are
  queued to it as commands, so the animator needs no locking.

With a live camera, frames the worker had no time for are dropped (newest
wins: low latency). With a file camera every frame is animated in order and
the stages apply backpressure instead.
"""

from __future__ import annotations

import queue
import signal
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np
from rich.console import Console
from rich.live import Live
from rich.text import Text

from livepuppet.live.capture import Capture, CaptureState
from livepuppet.live.framing import Box, FaceFramer
from livepuppet.live.keys import help_lines
from livepuppet.live.sinks import PreviewView, to_uint8


class Animator(Protocol):
    """The model side, as the live loop sees it (implemented by livepuppet.pipeline.Pipeline)."""

    frame_size: tuple[int, int]  # (h, w) the model wants
    relative: bool
    adapt_scale: bool
    timings: dict[str, float]    # last per-stage milliseconds

    def set_source(self, image: np.ndarray) -> None: ...
    def recalibrate(self) -> None: ...
    def animate(self, frames: np.ndarray) -> np.ndarray: ...
    def keypoints(self) -> np.ndarray | None: ...


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
    """What a run did; the caller prints ``summary()`` at exit."""

    frames: int = 0                 # frames sent to the sinks (pass-through frames included)
    seconds: float = 0.0            # from the first to the last output frame
    # Medians: capture (camera read incl. waiting for the next frame), crop (framing),
    # inference (one animate call), the animator's own stages, output (sinks, without
    # virtual-camera pacing) and latency (camera grab to output).
    stage_ms: dict[str, float] = field(default_factory=dict)
    batch: int = 1
    dropped: int = 0                # camera frames never animated (live camera only)
    stalls: int = 0                 # times the camera stopped delivering
    stop_reason: str = ""           # frames | quit | end of input | interrupted | terminated
    first_frame_at: float = 0.0     # time.perf_counter() when the first frame went out (0: none did)

    @property
    def fps(self) -> float:
        """Output rate; 0 when every frame came out of one batch (they leave together: no rate to tell)."""
        if self.frames <= self.batch:
            return 0.0
        return (self.frames - 1) / self.seconds if self.frames > 1 and self.seconds > 0 else 0.0

    def summary(self) -> str:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.stage_ms.items())
        rate = f"at {self.fps:.1f} fps" if self.fps > 0 else "in one batch, too few for a frame rate"
        s = f"{self.frames} frames {rate} ({self.stop_reason}); median ms: {stages}"
        if self.batch > 1:
            s += f" (inference per batch of up to {self.batch})"
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

    def _ready(self) -> bool:
        if self.stopping or self.commands or self.input_closed:
            return True
        return len(self.inbox) >= (1 if self.live else self.batch)

    def run(self) -> None:
        try:
            while True:
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
        except BaseException as e:  # re-raised in the main thread after a clean shutdown
            self.error = e
        self._put(_DONE)

    def _animate(self, take: list[tuple[np.ndarray, float]]) -> None:
        t0 = time.perf_counter()
        out = np.asarray(self.animator.animate(np.stack([c for c, _ in take])))
        timings = {"inference": (time.perf_counter() - t0) * 1000, **self.animator.timings}
        kp = self.animator.keypoints()
        self._put((out, None if kp is None else np.asarray(kp)[-1], timings, [s for _, s in take]))

    def _put(self, item: object) -> None:
        while not self.stopping:
            try:
                self.results.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


class _StageClock:
    """Per-stage millisecond samples: recent medians for display, run medians for stats."""

    FIRST, LAST = ("capture", "crop", "inference"), ("output", "latency")

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


def _prepare_source(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    if img.shape[:2] != tuple(size):
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img[..., :3], dtype=np.float32)


def run_live(animator: Animator, capture: Capture, framer: FaceFramer, sinks: Sequence[Sink | Preview], *,
             frames: int | None = None, batch: int = 1, sources: Sequence[np.ndarray] = (),
             console: Console | None = None, mirror: bool = False) -> LiveStats:
    """Run until q/Esc, end of a file camera, ``frames`` output frames, Ctrl-C or SIGTERM.

    ``sinks`` may contain one preview (anything with show/poll_key) and any
    number of output sinks (send/close). ``sources`` are the avatars that n/p
    cycle through; the loop itself sets ``sources[0]`` before the first frame.
    The camera, the sinks and the worker are always released/closed.
    """
    return _Loop(animator, capture, framer, sinks, frames, batch, sources,
                 console or Console(stderr=True), mirror).run()


class _Loop:
    def __init__(self, animator: Animator, capture: Capture, framer: FaceFramer, sinks: Sequence[Sink | Preview],
                 frames: int | None, batch: int, sources: Sequence[np.ndarray], console: Console,
                 mirror: bool) -> None:
        self.animator, self.capture, self.framer, self.console = animator, capture, framer, console
        self.preview: Preview | None = next((s for s in sinks if isinstance(s, Preview)), None)
        self.outputs: list[Sink] = [s for s in sinks if s is not self.preview]  # type: ignore[misc]
        self.limit = frames
        self.sources = [_prepare_source(s, animator.frame_size) for s in sources]
        self.source_idx = 0
        self.worker = _Worker(animator, batch, capture.live)
        self.clock = _StageClock(capture.read_ms)
        self.stats = LiveStats(batch=max(1, batch))
        self.mirror, self.passthrough, self.show_kp, self.show_info, self.show_help = mirror, False, False, True, False
        self.stop_reason: str | None = None
        self._interrupted = False  # Ctrl-C seen once
        self.camera: np.ndarray | None = None
        self.box: Box | None = None
        self.avatar: np.ndarray | None = None
        self.kp: np.ndarray | None = None
        self.pending: tuple[np.ndarray, float] | None = None  # file mode: crop waiting for room
        self.out_times: deque[float] = deque(maxlen=60)
        self.first_out = self.last_out = 0.0
        self.stalled = False

    # -- main ---------------------------------------------------------------
    def run(self) -> LiveStats:
        in_main = threading.current_thread() is threading.main_thread()
        old_term = signal.signal(signal.SIGTERM, self._on_sigterm) if in_main else None
        old_int = signal.signal(signal.SIGINT, self._on_sigint) if in_main else None
        live_line: Live | None = None
        try:
            if self.preview is not None:
                self.console.print("keys:\n  " + "\n  ".join(help_lines()))
            self.worker.start()
            if self.sources:
                src = self.sources[0]
                self.worker.command(lambda a: a.set_source(src))
            if self.preview is None and self.console.is_terminal:
                live_line = Live(Text("starting..."), console=self.console, auto_refresh=False,
                                 transient=True, redirect_stdout=False, redirect_stderr=False)
                live_line.start()
            self._loop(live_line)
        except KeyboardInterrupt:
            self.stop_reason = "interrupted"
        finally:
            try:
                self._shutdown(live_line)
            finally:
                if in_main:
                    signal.signal(signal.SIGTERM, old_term if old_term is not None else signal.SIG_DFL)
                    signal.signal(signal.SIGINT, old_int if old_int is not None else signal.default_int_handler)
        if self.worker.error is not None:
            raise self.worker.error
        return self._final_stats()

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.stop_reason = self.stop_reason or "terminated"  # the loop sees it within ~20 ms

    def _on_sigint(self, signum: int, frame: object) -> None:
        # A flag, not KeyboardInterrupt: an exception landing between a sink's write and the
        # frame count would leave a recording with one frame more than the summary reports.
        # A second Ctrl-C raises, for when the shutdown itself hangs.
        if self._interrupted:
            raise KeyboardInterrupt
        self._interrupted = True
        self.stop_reason = self.stop_reason or "interrupted"

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
            self._check_stall()
            now = time.monotonic()
            if self.preview is not None:
                if (dirty and now - last_draw > 1 / 60) or now - last_draw > 0.1:
                    self._draw()
                    last_draw = now
                self._handle_key(self.preview.poll_key())
            elif live_line is not None and now - last_status > 0.5:
                live_line.update(Text(self._status_line()), refresh=True)
                last_status = now

    def _take_camera_frame(self) -> bool:
        """Read, mirror, crop and submit a camera frame; True when there was a new one."""
        if self.pending is not None:  # file mode: retry the crop that found the inbox full
            if not self.worker.submit(*self.pending, timeout=0.02):
                return False
            self.pending = None
        if self.capture.ended:
            self.worker.close_input()
            return False
        got = self.capture.read(timeout=0.01 if self.worker.results.empty() else 0.0)
        if got is None:
            if self.capture.ended:
                self.worker.close_input()
            return False
        _, frame = got
        stamp = self.capture.last_read_stamp
        if self.mirror:
            frame = np.ascontiguousarray(frame[:, ::-1])
        t0 = time.perf_counter()
        crop, self.box = self.framer.crop(frame, self.animator.frame_size)
        self.clock.add("crop", (time.perf_counter() - t0) * 1000)
        self.camera = frame
        if self.passthrough:
            self._emit(crop, stamp)
        elif not self.worker.submit(crop, stamp, timeout=0.02):
            self.pending = (crop, stamp)
        return True

    def _drain_results(self) -> bool:
        got = False
        while self.stop_reason is None:
            try:
                item = self.worker.results.get_nowait()
            except queue.Empty:
                break
            if item is _DONE:
                break
            out, kp, timings, stamps = item
            for k, v in timings.items():
                self.clock.add(k, v)
            self.kp = kp
            got = True
            for frame, stamp in zip(out, stamps, strict=True):
                if self.passthrough:  # results still in flight when pass-through was switched on
                    break
                self._emit(frame, stamp)
                if self.stop_reason is not None:
                    break
        return got

    def _emit(self, frame: np.ndarray, stamp: float) -> None:
        img = to_uint8(frame)
        t0 = time.perf_counter()
        paced = 0.0
        for s in self.outputs:
            s.send(img)
            paced += getattr(s, "last_sleep_ms", 0.0)
        now = time.perf_counter()
        if self.outputs:
            self.clock.add("output", (now - t0) * 1000 - paced)
        self.clock.add("latency", (time.monotonic() - stamp) * 1000)
        self.avatar = img
        self.stats.frames += 1
        self.first_out = self.first_out or now
        self.last_out = now
        self.out_times.append(now)
        if self.limit is not None and self.stats.frames >= self.limit:
            self.stop_reason = "frames"

    def _check_stall(self) -> None:
        stalled = self.capture.state is CaptureState.STALLED
        if stalled and not self.stalled:
            self.stats.stalls += 1
            self.console.print(f"[yellow]camera {self.capture.name} stalled: no frames; reconnecting...[/]")
        elif self.stalled and not stalled and self.capture.state is CaptureState.RUNNING:
            self.console.print(f"[green]camera {self.capture.name} is back[/]")
        self.stalled = stalled

    # -- keys ---------------------------------------------------------------
    def _handle_key(self, key: str | None) -> None:
        if key is None:
            return
        a, say = self.animator, self.console.print
        if key in ("q", "esc"):
            self.stop_reason = "quit"
        elif key == "c":
            self.worker.command(lambda an: an.recalibrate())
            say("recalibrating: the next frame is the neutral pose")
        elif key in ("n", "p") and len(self.sources) > 1:
            self.source_idx = (self.source_idx + (1 if key == "n" else -1)) % len(self.sources)
            src = self.sources[self.source_idx]
            self.worker.command(lambda an: an.set_source(src))
            say(f"avatar {self.source_idx + 1}/{len(self.sources)}")
        elif key == "0":
            self.passthrough = not self.passthrough
        elif key == "f":
            self.mirror = not self.mirror
        elif key == "+":
            self.framer.zoom_in()
        elif key == "-":
            self.framer.zoom_out()
        elif key in ("left", "right", "up", "down"):
            dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[key]
            self.framer.pan(dx, dy)
        elif key == "k":
            self.show_kp = not self.show_kp
        elif key in ("r", "a"):
            attr = "relative" if key == "r" else "adapt_scale"
            value = not getattr(a, attr)
            self.worker.command(lambda an: setattr(an, attr, value))
            say(f"{attr.replace('_', ' ')}: {'on' if value else 'off'}")
        elif key == "i":
            self.show_info = not self.show_info
        elif key == "h":
            self.show_help = not self.show_help

    # -- display ------------------------------------------------------------
    def _recent_fps(self) -> float:
        t = self.out_times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    def _stage_text(self, per_line: int | None = None) -> list[str]:
        items = [f"{k} {v:.1f}" for k, v in self.clock.medians(recent=30).items()]
        n = per_line or max(1, len(items))
        return [" ".join(items[i:i + n]) for i in range(0, len(items), n)]

    def _status_line(self) -> str:
        state = " | camera stalled, reconnecting" if self.stalled else ""
        return f"{self._recent_fps():5.1f} fps | {self.stats.frames} frames | ms: {' '.join(self._stage_text())}{state}"

    def _draw(self) -> None:
        if self.camera is None or self.preview is None:
            return
        label = "camera pass-through" if self.passthrough else (
            f"avatar {self.source_idx + 1}/{len(self.sources)}" if self.sources else "avatar")
        info = []
        if self.show_info:
            a = self.animator
            info = [f"{self._recent_fps():.1f} fps  {self.stats.frames} frames, stage ms:",
                    *self._stage_text(per_line=3),
                    f"relative {'on' if a.relative else 'off'}  adapt {'on' if a.adapt_scale else 'off'}  "
                    f"mirror {'on' if self.mirror else 'off'}  h: keys"]
        notice = "camera stalled: reconnecting..." if self.stalled else None
        self.preview.show(PreviewView(camera=self.camera, box=self.box, avatar=self.avatar,
                                      keypoints=self.kp if self.show_kp and not self.passthrough else None,
                                      label=label, notice=notice, info=info, help=self.show_help))

    # -- shutdown -----------------------------------------------------------
    def _shutdown(self, live_line: Live | None) -> None:
        """Release everything, each step guarded so one failure cannot leak the rest."""
        steps: list[Callable[[], object]] = [self.worker.stop, self.capture.release]
        steps += [s.close for s in self.outputs]
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

    def _final_stats(self) -> LiveStats:
        st = self.stats
        st.seconds = self.last_out - self.first_out
        st.first_frame_at = self.first_out
        st.stage_ms = self.clock.medians()
        st.dropped = self.worker.dropped + getattr(self.capture, "dropped", 0)
        st.stalls = max(st.stalls, getattr(self.capture, "stalls", 0))
        st.stop_reason = self.stop_reason or "end of input"
        return st
