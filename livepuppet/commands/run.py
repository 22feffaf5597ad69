"""``livepuppet run``: wire sources, model, camera, framing and sinks into the live loop.

Source images and the preview / virtual-camera sinks are checked before the
model loads, so those mistakes fail in a second, not after a conversion. The
camera opens only once the model is ready, so a live camera does not run (and
drop frames) during a first-run download or conversion.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console

from livepuppet.commands.options import RunOptions
from livepuppet.errors import MediaError

DEFAULT_RECORD_FPS = 25.0


def load_sources(paths: list[Path]) -> list[Path]:
    """Every portrait named: files as given, folders expanded to their images in name order."""
    from livepuppet.media import IMAGE_EXTENSIONS

    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not images:
                raise MediaError(f"no images in {path}; put .png or .jpg portraits there")
            found += images
        elif path.exists():
            found.append(path)
        else:
            raise MediaError(f"source image {path} not found")
    return found


def read_sources(images: list[np.ndarray], size: tuple[int, int], paste_back: bool | None = None,
                 say: Callable[[str], object] | None = None) -> list:
    """The portraits to animate, each framed for a model of frame ``size``; notices go to ``say``."""
    from livepuppet.live.portrait import frame_portrait

    portraits = []
    for image in images:
        portrait, notice = frame_portrait(image, size, paste_back)
        if notice and say is not None:
            say(notice)
        portraits.append(portrait)
    return portraits


def vcam_size(args: RunOptions, images: list[np.ndarray]) -> tuple[int, int]:
    """--vcam-size, else the first portrait's picture size with paste-back (capped at 1280x720), else 512x512."""
    if args.vcam_size:
        return args.vcam_size
    portrait = read_sources(images[:1], (256, 256), args.paste_back)[0]
    if portrait.picture is None:
        return (512, 512)
    h, w = portrait.picture.shape[:2]
    return (w - w % 2, h - h % 2)  # even sizes: what video formats and loopback devices accept


def process_age() -> float | None:
    """Seconds since this process started (Linux), or None where that is not known."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def peak_memory_mb() -> float | None:
    """This process's peak resident memory (its high-water mark) in MB, where the OS reports it.

    Linux: VmHWM, this program's own. (``ru_maxrss`` would also count the
    memory of the process that started it, as it was at the fork.)
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


def startup_and_memory(first_frame_at: float) -> str:
    """'first avatar frame 2.1 s after start; peak memory 640 MB' (parts that are unknown are left out)."""
    parts = []
    age = process_age()
    if first_frame_at and age is not None:
        parts.append(f"first avatar frame {age - (time.monotonic() - first_frame_at):.1f} s after start")
    peak = peak_memory_mb()
    if peak is not None:
        parts.append(f"peak memory {peak:.0f} MB")
    return "; ".join(parts)


def _open_engine(options: RunOptions, console: Console, stack: ExitStack):
    """The local engine, or with --remote the remote one (closed with ``stack``)."""
    if options.remote:
        from livepuppet.remote.connect import open_remote

        engine = open_remote(options, lambda text: console.print(text, markup=False, highlight=False))
        stack.callback(engine.close)
        return engine
    from livepuppet.commands.default_model import resolve_model
    from livepuppet.runtime.choose import open_engine

    model = resolve_model(options.model, download_ok=True, yes=options.yes)
    return open_engine(model, options.engine, options.threads, exact=options.exact, fast=options.fast,
                       device=options.device)


def _screen_sinks(options: RunOptions, images: list[np.ndarray], console: Console, stack: ExitStack) -> list:
    """The preview window and the virtual camera, opened before the model loads so their mistakes fail fast."""
    from livepuppet.live.sinks import PreviewWindow, VirtualCameraSink

    sinks: list = []
    if not options.no_preview:
        preview = PreviewWindow()
        stack.callback(preview.close)
        sinks.append(preview)
    if options.vcam:
        w, h = vcam_size(options, images)
        vcam = VirtualCameraSink(w, h, options.vcam_fps)
        stack.callback(vcam.close)
        sinks.append(vcam)
        console.print(f"virtual camera: {vcam.device or 'on'} ({w}x{h})")
    return sinks


def _recording(options: RunOptions, fps: float, live: bool, console: Console, stack: ExitStack):
    """The --record sink, or None."""
    if not options.record:
        return None
    from livepuppet.live.sinks import RecordingSink

    record = RecordingSink(options.record, fps, realtime=live)  # live: plays at real speed
    stack.callback(record.close)
    for notice in record.notices:
        console.print(f"note: {notice}", markup=False, highlight=False)
    return record


def run(options: RunOptions) -> int:
    console = Console(stderr=True, soft_wrap=True)  # log lines stay whole when stderr is a pipe or file
    started = time.perf_counter()
    source_paths = load_sources(list(options.source))
    from livepuppet import outputs
    from livepuppet.commands.default_model import model_folder
    from livepuppet.media import read_image
    from livepuppet.live.portrait import cap_size

    outputs.check(options.record, [options.camera, *options.source, *source_paths, model_folder(options.model)])
    images = [cap_size(read_image(path)) for path in source_paths]  # unreadable sources fail now, before the model loads
    from livepuppet.runtime.pipeline import Pipeline
    from livepuppet.live.capture import open_camera
    from livepuppet.live.framing import FaceFramer
    from livepuppet.live.loop import run_live

    with ExitStack() as stack:
        sinks = _screen_sinks(options, images, console, stack)
        engine = _open_engine(options, console, stack)
        sources = read_sources(images, engine.frame_size, options.paste_back, console.print)
        capture = open_camera(options.camera, options.camera_size, paced=not options.every_frame)
        stack.callback(capture.release)
        fps = getattr(capture, "fps", None) or DEFAULT_RECORD_FPS
        pipeline = Pipeline(engine, relative=options.relative, adapt_scale=options.adapt_scale,
                            smoothing=options.smoothing, rate=fps)
        record = _recording(options, fps, capture.live, console, stack)
        sinks += [record] if record is not None else []
        if not sinks:
            console.print("note: no preview, virtual camera or recording: frames are computed and dropped")
        console.print(f"model {engine.folder.path} on {engine.label}; ready in "
                      f"{time.perf_counter() - started:.1f} s")
        stats = run_live(pipeline, capture, FaceFramer(enabled=not options.no_face_tracking), sinks,
                         frames=options.frames, batch=options.batch, sources=sources, console=console)
    _report(options, console, stats, engine, record)
    return 0


def _report(options: RunOptions, console: Console, stats, engine, record) -> None:
    """The run's last lines: speed, remote traffic, start-up and memory, what was recorded."""
    console.print(stats.summary())
    if hasattr(engine, "summary"):  # a remote engine: frames rendered there and here, bytes up and down
        console.print(engine.summary())
    if line := startup_and_memory(stats.first_frame_at):
        console.print(line)
    if record is None:
        return
    if not record.saved:
        console.print(f"recording: nothing was recorded; {options.record} was left as it was")
    else:
        counted = "" if record.frames_saved is None else f"{record.frames_saved} frames on disk in "
        console.print(f"recording: {counted}{options.record}")
