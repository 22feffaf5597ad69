"""``livepuppet run``: wire sources, model, camera, framing and sinks into the live loop.

Source images and the preview / virtual-camera sinks are checked before the
model loads, so those mistakes fail in a second, not after a conversion. The
camera opens only once the model is ready, so a live camera does not run (and
drop frames) during a first-run download or conversion.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console

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


def vcam_size(args: argparse.Namespace, images: list[np.ndarray]) -> tuple[int, int]:
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


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True, soft_wrap=True)  # log lines stay whole when stderr is a pipe or file
    started = time.perf_counter()
    source_paths = load_sources(args.source)
    from livepuppet import outputs
    from livepuppet.commands.default_model import model_folder
    from livepuppet.media import read_image
    from livepuppet.live.portrait import cap_size

    outputs.check(args.record, [args.camera, *args.source, *source_paths, model_folder(args.model)])

    images = [cap_size(read_image(path)) for path in source_paths]  # unreadable sources fail now, before the model loads
    from livepuppet.commands.default_model import resolve_model
    from livepuppet.runtime.choose import open_engine
    from livepuppet.runtime.pipeline import Pipeline
    from livepuppet.live.capture import open_camera
    from livepuppet.live.framing import FaceFramer
    from livepuppet.live.loop import run_live
    from livepuppet.live.sinks import PreviewWindow, RecordingSink, VirtualCameraSink

    with ExitStack() as stack:
        sinks: list = []
        if not args.no_preview:
            preview = PreviewWindow()
            stack.callback(preview.close)
            sinks.append(preview)
        if args.vcam:
            w, h = vcam_size(args, images)
            vcam = VirtualCameraSink(w, h, args.vcam_fps)
            stack.callback(vcam.close)
            sinks.append(vcam)
            console.print(f"virtual camera: {vcam.device or 'on'} ({w}x{h})")
        model = resolve_model(args.model, download_ok=True, yes=args.yes)
        engine = open_engine(model, args.engine, args.threads, exact=args.exact, fast=args.fast, device=args.device)
        sources = read_sources(images, engine.frame_size, args.paste_back, console.print)
        capture = open_camera(args.camera, args.camera_size, paced=not getattr(args, "every_frame", False))
        stack.callback(capture.release)
        pipeline = Pipeline(engine, relative=args.relative, adapt_scale=args.adapt_scale,
                            smoothing=args.smoothing, rate=getattr(capture, "fps", None) or DEFAULT_RECORD_FPS)
        if args.record:
            fps = getattr(capture, "fps", None) or DEFAULT_RECORD_FPS
            record = RecordingSink(args.record, fps, realtime=capture.live)  # live: plays at real speed
            stack.callback(record.close)
            sinks.append(record)
            for notice in record.notices:
                console.print(f"note: {notice}", markup=False, highlight=False)
        if not sinks:
            console.print("note: no preview, virtual camera or recording: frames are computed and dropped")
        console.print(f"model {model} on {engine.label}; ready in {time.perf_counter() - started:.1f} s")
        stats = run_live(pipeline, capture, FaceFramer(enabled=not args.no_face_tracking), sinks,
                         frames=args.frames, batch=args.batch, sources=sources, console=console)
    console.print(stats.summary())
    if line := startup_and_memory(stats.first_frame_at):
        console.print(line)
    if args.record:
        if not record.saved:
            console.print(f"recording: nothing was recorded; {args.record} was left as it was")
        else:
            counted = "" if record.frames_saved is None else f"{record.frames_saved} frames on disk in "
            console.print(f"recording: {counted}{args.record}")
    return 0
