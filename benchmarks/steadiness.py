"""How steady the avatar is, measured on the avatar, and where its jitter comes from (issue 21).

For each model folder: tests/steadiness.py's clip (a still face, sensor noise
3 levels, 1 px camera shake, then a sudden move of a tenth of the frame, as a
camera at the model's resolution) framed and animated as ``run`` does, one
frame at a time, on LiteRT. Prints, for each variant, the avatar's jitter above
the floor (a perfectly still input), how much steadier that is than without
smoothing, and the frames it takes to cover 90% of the move:

* no smoothing; the shipped filter at 0.5 (``run``'s default) and at 1;
* the filter as it was before issue 21 (the classic One-Euro: the cutoff opened
  by the speed of the mean keypoint, shake included), at 0.5;
* where the jitter comes from, with no smoothing: the keypoint values held at
  their still-part mean (what the Jacobians alone leave), the Jacobians held
  (what the values alone leave), and how often the face crop moved during the
  still part (what the framing adds: a crop that moves moves the avatar).

``--recorded`` also writes each avatar into an .mp4 (as ``run --record``
does) and measures the recording instead, above the recording of the still
input (the encoder's own floor), the way the issue first measured it.

Usage: python benchmarks/steadiness.py [--model DIR ...] [--workdir DIR] [--recorded]
With no --model: SMALL (64x64) and vox-256, both with random weights, made in --workdir.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from livepuppet.runtime.choose import open_engine  # noqa: E402
from livepuppet.runtime.engines import Keypoints  # noqa: E402
from livepuppet.runtime.smoothing import DEFAULT_STRENGTH, KeypointSmoother  # noqa: E402
from tests import steadiness  # noqa: E402
from tests.test_smoothing import STILL  # noqa: E402


class ClassicOneEuro:
    """The filter before issue 21, for comparison: one cutoff set by the filtered *magnitude* of the mean
    keypoint's speed (d_cutoff 8 Hz, beta 6), which camera shake alone raises."""

    def __init__(self, strength: float = DEFAULT_STRENGTH, rate: float = 25.0) -> None:
        self.dt, self.min_cutoff, self.beta, self.d_cutoff = 1 / rate, 1.5 * 10 ** (-strength), 6.0, 8.0
        self.value = self.jac = None
        self.speed = 0.0

    @staticmethod
    def _alpha(cutoff: float, dt: float) -> float:
        return 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff * dt))

    def __call__(self, kp: Keypoints) -> Keypoints:
        v, j = kp.value[0].astype(np.float64), kp.jacobian[0].astype(np.float64)
        if self.value is None:
            self.value, self.jac = v, j
        else:
            speed = float(np.hypot(*((v - self.value).mean(axis=0) / self.dt)))
            self.speed += self._alpha(self.d_cutoff, self.dt) * (speed - self.speed)
            a = self._alpha(self.min_cutoff + self.beta * self.speed, self.dt)
            self.value, self.jac = self.value + a * (v - self.value), self.jac + a * (j - self.jac)
        return Keypoints(self.value[None].astype(np.float32), self.jac[None].astype(np.float32))


class Held:
    """Holds the keypoint values or the Jacobians at their still-part mean (the other passes through)."""

    def __init__(self, mean: Keypoints, part: str) -> None:
        self.mean, self.part, self.frame = mean, part, 0

    def __call__(self, kp: Keypoints) -> Keypoints:
        self.frame += 1
        if self.frame > STILL:
            return kp
        if self.part == "values":
            return Keypoints(self.mean.value, kp.jacobian)
        return Keypoints(kp.value, self.mean.jacobian)


def still_keypoints(engine) -> Keypoints:
    """The mean keypoints of the clip's still part, framed as ``run`` frames it."""
    from livepuppet.live.framing import FaceFramer

    framer = FaceFramer()
    frames = steadiness.camera_clip(engine.frame_size[0])[:STILL]
    kps = [engine.detect_keypoints(framer.crop(f, engine.frame_size)[0][None]) for f in frames]
    tail = kps[steadiness.SETTLE:]
    return Keypoints(np.mean([k.value for k in tail], axis=0), np.mean([k.jacobian for k in tail], axis=0))


def recorded_jitter(avatar: np.ndarray, workdir: Path, name: str) -> float:
    """The jitter of ``avatar`` after a round trip through an .mp4, as ``run --record`` writes it."""
    from livepuppet.media import VideoWriter, open_frames

    path = workdir / f"{name}.mp4"
    path.unlink(missing_ok=True)
    with VideoWriter(path, 25.0) as writer:
        for frame in avatar[:STILL]:
            writer.write(np.clip(frame, 0, 255).astype(np.uint8))
    with open_frames(path) as frames:
        back = np.array([np.asarray(f, np.float64) * (255 if f.dtype != np.uint8 else 1) for f in frames])
    return steadiness.jitter(back)


def variants(engine) -> dict[str, steadiness.Smoothing]:
    mean = still_keypoints(engine)
    return {
        f"smoothing {DEFAULT_STRENGTH:g} (run's default)": DEFAULT_STRENGTH,
        "smoothing 1": 1.0,
        f"before issue 21, smoothing {DEFAULT_STRENGTH:g}": ClassicOneEuro,
        "no smoothing, values held (Jacobians' share)": lambda: Held(mean, "values"),
        "no smoothing, Jacobians held (values' share)": lambda: Held(mean, "jacobians"),
    }


def report(folder: Path, workdir: Path, recorded: bool) -> None:
    from livepuppet.live.framing import FaceFramer

    engine = open_engine(folder, "tflite")
    start = time.perf_counter()
    raw = steadiness.measure(engine, 0.0)
    h, w = engine.frame_size
    print(f"\n{folder} ({w}x{h}, tflite): unsmoothed jitter {raw.jitter:.2f} levels above a floor of "
          f"{raw.floor:.3f}; the move {raw.move:.1f} levels")
    framer = FaceFramer()
    boxes = [framer.box(frame) for frame in steadiness.camera_clip(h)[:STILL]]
    moves = sum(a != b for a, b in zip(boxes[steadiness.SETTLE:], boxes[steadiness.SETTLE + 1:]))
    print(f"  {'variant':48s} {'jitter':>7s} {'steadier':>9s} {'lag':>4s}  first frames after the move")
    print(f"  {'no smoothing':48s} {raw.jitter:7.2f} {1.0:8.2f}x {raw.lag:4d}")
    print(f"  {'framing: the crop moved on still frames':48s} {moves:7d} times (face found: {framer.face_found})")
    for name, smoothing in variants(engine).items():
        m = steadiness.measure(engine, smoothing, raw)
        follow = " ".join(f"{p:.0%}" for p in m.progress[:3])
        lag = f"{m.lag:4d}  {follow}" if not name.startswith("no smoothing") else "   -"  # held: not a filter
        print(f"  {name:48s} {m.jitter:7.2f} {raw.jitter / m.jitter:8.2f}x {lag}")
    if recorded:
        source = steadiness.portrait(engine.frame_size)
        still = steadiness.camera_clip(h, 0.0, 0.0)[:STILL]
        noisy = steadiness.camera_clip(h)[:STILL]
        floor = recorded_jitter(steadiness.animate_clip(engine, still, 0.0, source), workdir, "floor")
        off = recorded_jitter(steadiness.animate_clip(engine, noisy, 0.0, source), workdir, "off") - floor
        on = recorded_jitter(steadiness.animate_clip(engine, noisy, DEFAULT_STRENGTH, source), workdir, "on") - floor
        print(f"  recorded (.mp4): encoder floor {floor:.2f}; above it {off:.2f} without smoothing, {on:.2f} with "
              f"{DEFAULT_STRENGTH:g}: {off / on:.2f}x steadier")
    print(f"  ({time.perf_counter() - start:.0f} s)")


def default_models(workdir: Path) -> list[Path]:
    """SMALL at 64x64 and vox-256, random weights (seed 0), converted once into ``workdir``."""
    from livepuppet.cli import main
    from tests.reference import SMALL_PARAMS, VOX_PARAMS, make_checkpoint

    out = []
    for name, params, size in (("small", SMALL_PARAMS, "64x64"), ("vox", VOX_PARAMS, "256x256")):
        folder = workdir / name
        if not (folder / "manifest.json").is_file():
            make_checkpoint(workdir / f"{name}.pth.tar", params, seed=0)
            assert main(["convert", str(workdir / f"{name}.pth.tar"), "--out", str(folder), "--size", size]) == 0
        out.append(folder)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, action="append", help="model folder (repeatable)")
    ap.add_argument("--workdir", type=Path, help="where the random-weight models are made (default: a temp dir)")
    ap.add_argument("--recorded", action="store_true", help="also measure through an .mp4 recording")
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="steadiness-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for folder in args.model or default_models(workdir):
        report(folder, workdir, args.recorded)


if __name__ == "__main__":
    main()
