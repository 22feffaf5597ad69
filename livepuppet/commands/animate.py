"""The ``animate`` subcommand: a portrait + a driving video -> an animated video or PNG frames.

Frames stream through in batches of ``--batch``: only one batch of driving
frames is ever held in memory, so a long video costs no more memory than a
short one, and since the calibration (initial) keypoints are fixed before the
first batch, the result does not depend on the batch size.

With ``--best-frame`` a first streaming pass computes the keypoints of every
driving frame (no generation) and picks the frame whose normalised keypoint
layout is nearest the source's; the second pass then generates every frame
normalised against that frame's keypoints, which is the original demo's
"animate forwards and backwards from the best frame", in one pass and in order.

Nothing here imports TensorFlow: on the tflite engine it is never loaded.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from typing import Callable, Iterable, Iterator

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from livepuppet.commands.options import AnimateOptions
from livepuppet.runtime.engines import Keypoints
from livepuppet.errors import MediaError
from livepuppet.media import FrameFolderWriter, fit_frame, open_frames, open_writer, read_image
from livepuppet.runtime.pipeline import Pipeline, layout, pose_distance
from livepuppet.live.portrait import frame_portrait

__all__ = ["run", "animate", "choose_best_frame"]


class _FpsColumn(ProgressColumn):
    """Frames per second, from rich's running speed estimate."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("  -- fps" if speed is None else f"{speed:5.1f} fps", style="progress.data.speed")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        _FpsColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
    )


def _fitted(frames: Iterable[np.ndarray], size: tuple[int, int], limit: int | None) -> Iterator[np.ndarray]:
    """Driving frames at the model's size (untouched when already at it), at most ``limit`` of them."""
    for frame in itertools.islice(frames, limit):
        yield fit_frame(frame, size)


def _batches(frames: Iterable[np.ndarray], batch: int) -> Iterator[np.ndarray]:
    """Group (H, W, 3) frames into (B, H, W, 3) arrays of at most ``batch``; the last may be shorter."""
    it = iter(frames)
    while chunk := list(itertools.islice(it, batch)):
        yield np.stack(chunk)


def choose_best_frame(pipeline: Pipeline, frames: Iterable[np.ndarray], batch: int = 4,
                      on_batch: Callable[[int], object] | None = None) -> int:
    """Find the driving frame whose keypoint layout is nearest the source's, and calibrate on it.

    ``frames`` are driving frames already at the model's size; they are read
    once, ``batch`` at a time, and only keypoints are computed (memory stays
    flat). The layout is :func:`livepuppet.runtime.pipeline.layout` (keypoints centred
    and scaled to unit RMS radius, so position and size do not count); the
    first of equally near frames wins. The pipeline (whose source must be set)
    is left calibrated on that frame: ``pipeline.initial`` holds its keypoints.
    Returns its index, counting from 0. ``on_batch(n)`` is called after each
    batch of ``n`` frames (for a progress bar).
    """
    if pipeline.source is None:
        raise RuntimeError("set_source() first")
    target = layout(pipeline.source.keypoints.value[0])
    best_index, best_dist, best_kp = -1, math.inf, None
    seen = 0
    for chunk in _batches(frames, batch):
        kp = pipeline.detect(chunk)
        for j, value in enumerate(kp.value):
            dist = pose_distance(value, target)  # a degenerate layout (inf) never wins over a real one
            if best_kp is None or dist < best_dist:
                best_index, best_dist, best_kp = seen + j, dist, kp[j]
        seen += len(chunk)
        if on_batch is not None:
            on_batch(len(chunk))
    if best_kp is None:
        raise MediaError("the driving video has no frames")
    pipeline.initial = Keypoints(np.array(best_kp.value), np.array(best_kp.jacobian))
    return best_index


def animate(pipeline: Pipeline, frames: Iterable[np.ndarray],
            batch: int = 4) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (driving frame, prediction) pairs, float32 (H, W, 3) in [0, 1], ``batch`` frames per model call.

    ``frames`` are at the model's size. The calibration frame is the first one
    unless the pipeline is already calibrated (see :func:`choose_best_frame`).
    """
    for chunk in _batches(frames, batch):
        yield from zip(chunk, pipeline.animate(chunk))


def _prepare(args: AnimateOptions, console: Console):
    """Everything before the first frame: the inputs checked and opened, the engine (here or remote), the
    portrait framed, the writer made; (driving, engine or None, folder, size, portrait, writer)."""
    from livepuppet import outputs
    from livepuppet.commands.default_model import model_folder, resolve_model
    from livepuppet.modelfolder.read import read_folder

    # Cheap checks first, so a typo never waits for a model to load (or be converted).
    outputs.check(args.output, [args.driving, args.source, model_folder(args.model)])
    source_image = read_image(args.source)
    driving = open_frames(args.driving)
    engine = None
    try:
        if args.remote:  # the frame size is the server's model's
            from livepuppet.remote.connect import open_remote

            engine = open_remote(args, lambda text: console.print(text, markup=False, highlight=False))
            folder, size = engine.folder.path, engine.frame_size
        else:
            folder = resolve_model(args.model)
            size = read_folder(folder).frame_size
        portrait, notice = frame_portrait(source_image, size, args.paste_back)
        if notice:
            console.print(notice, markup=False, highlight=False)
        writer = open_writer(args.output, driving.fps, driving.audio_source)
    except BaseException:
        driving.close()
        if engine is not None:
            engine.close()
        raise
    return driving, engine, folder, size, portrait, writer


def _best_frame(args: AnimateOptions, pipeline: Pipeline, driving, size, total, progress: Progress):
    """``--best-frame``: calibrate on the frame nearest the portrait's pose; (the driving video reopened, total)."""
    scan = progress.add_task("keypoints", total=total)
    with driving:
        best = choose_best_frame(pipeline, _fitted(driving, size, args.frames), args.batch,
                                 on_batch=lambda n: progress.advance(scan, n))
    total = int(progress.tasks[scan].completed)  # exact now
    progress.update(scan, total=total)
    progress.console.print(f"best frame: calibrated on frame {best} (counting from 0) of {total}",
                           markup=False, highlight=False)
    return open_frames(args.driving), total


def run(args: AnimateOptions) -> int:
    from livepuppet.runtime.choose import open_engine

    console = Console(stderr=True)
    driving, engine, folder, size, portrait, writer = _prepare(args, console)
    total = driving.frame_count
    if args.frames is not None:
        total = args.frames if total is None else min(total, args.frames)
    try:
        with writer, _progress(console) as progress:
            engine = engine or open_engine(folder, args.engine, args.threads, exact=args.exact, fast=args.fast,
                                           device=args.device)
            pipeline = Pipeline(engine, relative=args.relative, adapt_scale=args.adapt_scale,
                                smoothing=args.smoothing, rate=driving.fps or 25.0)
            pipeline.set_source(portrait.crop)
            if args.best_frame:
                driving, total = _best_frame(args, pipeline, driving, size, total, progress)
            task = progress.add_task("animating", total=total)
            start, count = time.perf_counter(), 0
            with driving:
                for frame, pred in animate(pipeline, _fitted(driving, size, args.frames), args.batch):
                    writer.write(np.concatenate([portrait.crop, frame, pred], axis=1) if args.side_by_side
                                 else portrait.paste(pred))
                    count += 1
                    progress.advance(task)
            elapsed = time.perf_counter() - start
            progress.update(task, total=count)
    finally:
        driving.close()
        if hasattr(engine, "close"):
            engine.close()
    _report(console, pipeline.notices + getattr(driving, "notices", []), writer, count, elapsed, engine)
    return 0


def _report(console: Console, notices: list[str], writer, count: int, elapsed: float, engine) -> None:
    """What was written, said once the writer has renamed it into place (only now does the output exist)."""
    for notice in dict.fromkeys(notices):
        console.print(f"note: {notice}", markup=False, highlight=False, soft_wrap=True)
    fps = count / elapsed if elapsed > 0 else 0.0
    audio = " (with the driving video's audio)" if getattr(writer, "audio_muxed", False) else ""
    shown = f"{writer.path}{os.sep}" if isinstance(writer, FrameFolderWriter) else str(writer.path)
    console.print(f"animated {count} frames in {elapsed:.1f} s ({fps:.1f} fps) -> {shown}{audio}",
                  markup=False, highlight=False, soft_wrap=True)
    if hasattr(engine, "summary"):
        console.print(engine.summary(), markup=False, highlight=False, soft_wrap=True)
