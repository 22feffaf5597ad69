"""Timing an engine on a real input: the one routine ``auto``, ``bench`` and ``quantize`` share.

Every candidate is measured the way it will be used: the bundled portrait
(:mod:`livepuppet.runtime.probe`) animated by synthetic head motion through a
:class:`~livepuppet.runtime.pipeline.Pipeline`, after a calibration frame that
also warms the engine up. The result carries the predictions (to compare
precisions in 8-bit levels), the median time of a whole frame, and the median
of each stage the pipeline times. "The fastest within the budget" is decided
here and nowhere else.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from livepuppet.modelfolder.schema import ModelFolder
from livepuppet.runtime import probe
from livepuppet.runtime.engines import Engine, open_plan
from livepuppet.runtime.pipeline import Pipeline
from livepuppet.runtime.plan import Plan

BUDGET = {"mean": 0.3, "max": 3.0}  # 8-bit levels against float32 on the probe's frames: what auto may cost
PROBE_FRAMES = 6
STAGES = ("keypoints", "process", "generate")  # Pipeline.timings' per-frame stages, in order


@dataclass(frozen=True)
class Timing:
    """One engine animating the probe: predictions, and median milliseconds (per call of ``batch`` frames)."""

    frames: np.ndarray  # (N, H, W, 3) float32 in [0, 1]
    frame_ms: float  # a whole Pipeline.animate call
    stages_ms: dict[str, float]  # STAGES, plus 'source' (the once-per-portrait work)
    batch: int = 1
    runs: int = 0

    @property
    def per_frame_ms(self) -> float:
        return self.frame_ms / self.batch


def measure(engine: Engine, frames: int = PROBE_FRAMES, repeats: int = 1, batch: int = 1) -> Timing:
    """Animate ``frames`` probe frames (``batch`` a call) ``repeats`` times; the predictions of the first pass."""
    size = engine.frame_size
    pipeline = Pipeline(engine)
    portrait = probe.portrait(size)
    clip = probe.head_motion(size, frames + 1)
    pipeline.set_source(portrait)
    pipeline.animate(clip[:1])  # the calibration frame, and warm-up
    outputs, frame_ms, source_ms = [], [], []
    for run in range(repeats):
        for start in range(1, frames + 1 - batch + 1, batch):
            began = time.perf_counter()
            out = pipeline.animate(clip[start:start + batch])
            frame_ms.append((time.perf_counter() - began) * 1e3)
            if run == 0:
                outputs.append(out)
        began = time.perf_counter()
        pipeline.set_source(portrait)
        source_ms.append((time.perf_counter() - began) * 1e3)
    calls = len(frame_ms)
    stages = {s: statistics.median(list(pipeline.history[s])[-calls:]) for s in STAGES}
    return Timing(np.concatenate(outputs), statistics.median(frame_ms),
                  {**stages, "source": statistics.median(source_ms)}, batch, calls)


def levels(frames: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Mean and max absolute difference in 8-bit levels (frames in [0, 1])."""
    diff = np.abs(np.asarray(frames, np.float32) - np.asarray(reference, np.float32)) * 255
    return float(diff.mean()), float(diff.max())


def within_budget(mean: float, max_: float) -> bool:
    return mean <= BUDGET["mean"] and max_ <= BUDGET["max"]


@dataclass(frozen=True)
class Measured:
    """A plan timed on the probe and compared with the reference (the first plan measured with it)."""

    plan: Plan
    timing: Timing
    mean: float
    max: float

    @property
    def label(self) -> str:
        return self.plan.label

    @property
    def within_budget(self) -> bool:
        return within_budget(self.mean, self.max)


def measure_plans(folder: ModelFolder, plans: Sequence[Plan], threads: int | None = None, repeats: int = 1,
                  batch: int = 1, frames: int = PROBE_FRAMES) -> list[Measured]:
    """Each plan opened in turn (one engine at a time), timed, closed; levels against the first plan's frames."""
    results, reference = [], None
    for chosen in plans:
        engine = open_plan(folder, chosen, threads, cache=False)
        measured = measure(engine, frames, repeats, batch)
        engine.close()
        del engine
        reference = measured.frames if reference is None else reference
        results.append(Measured(chosen, measured, *levels(measured.frames, reference)))
    return results


def fastest_within_budget(results: Sequence[Measured]) -> Measured:
    """The winner: the fastest result within :data:`BUDGET` (the float32 reference always is)."""
    return min((r for r in results if r.within_budget), key=lambda r: r.timing.per_frame_ms)


class Contention:
    """How much of this machine's CPU other processes used while a measurement ran.

    Timings and fractions of the floor are only worth stating when nothing
    else competed for the cores; this reads the kernel's CPU counters
    (``/proc/stat``) around the measurement and subtracts this process's own
    time. ``others_share`` is None where that cannot be read (not Linux).
    """

    def __enter__(self) -> "Contention":
        self._start = (_busy_seconds(), _own_seconds(), time.monotonic())
        self.others_share: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        busy, own, began = self._start
        now_busy, now_own, now = _busy_seconds(), _own_seconds(), time.monotonic()
        if busy is None or now_busy is None or now <= began:
            return
        from livepuppet.runtime.cpu import usable_cores

        others = max(0.0, (now_busy - busy) - (now_own - own))
        self.others_share = others / ((now - began) * usable_cores())


def _busy_seconds() -> float | None:
    """CPU seconds all processes spent busy since boot (Linux), or None."""
    import os

    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    import os

    times = os.times()
    return times.user + times.system
