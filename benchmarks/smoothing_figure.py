"""The README's smoothing picture: a noisy still clip's keypoints without and with the One-Euro filter.

The clip is tests/test_smoothing.py's: skimage's astronaut with per-frame
sensor noise (3 levels) and sub-pixel shake, then a sudden 24-pixel move. The
keypoints are BlazeFace's six landmarks. Top: a frame with every still
frame's keypoints drawn on it, raw (left) and smoothed (right): the smaller
the cloud, the steadier the avatar. Bottom: each keypoint's x over time,
magnified (a trace per keypoint, offset for legibility), raw in grey, smoothed
in colour; the move at the end shows how quickly the filter follows.

    python benchmarks/smoothing_figure.py [--out docs/smoothing.jpg] [--strength 0.5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from livepuppet.runtime.smoothing import DEFAULT_STRENGTH  # noqa: E402
from tests.test_smoothing import STILL, clip_keypoints, measure, noisy_clip, smooth  # noqa: E402

ZOOM = 2  # the frame is drawn at 512x512
GAIN = 20  # trace pixels per frame pixel: the jitter is a fraction of a pixel
COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


def cloud(frame: np.ndarray, track: np.ndarray, title: str) -> np.ndarray:
    img = cv2.resize(frame, None, fx=ZOOM, fy=ZOOM, interpolation=cv2.INTER_NEAREST)
    for t in range(10, STILL):
        for k, (x, y) in enumerate(track[t]):
            p = (int(round((x + 1) * 128 * ZOOM)), int(round((y + 1) * 128 * ZOOM)))
            cv2.circle(img, p, 1, COLOURS[k % len(COLOURS)], -1, cv2.LINE_AA)
    std = track[10:STILL].std(axis=0).mean() * 128
    cv2.putText(img, f"{title}: keypoint std {std:.2f} px", (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                (255, 255, 255), 2, cv2.LINE_AA)
    return img


def traces(raw: np.ndarray, out: np.ndarray, width: int, height: int = 300) -> np.ndarray:
    img = np.full((height, width, 3), 250, np.uint8)
    raw, out = raw[:STILL + 6], out[:STILL + 6]  # the still part, and the first frames after the move
    n, k = raw.shape[:2]
    xs = np.linspace(40, width - 20, n)
    band = (height - 40) / k
    for j in range(k):
        centre = 25 + band * (j + 0.5)
        base = raw[10:STILL, j, 0].mean()
        for track, colour, thick in ((raw, (170, 170, 170), 1), (out, COLOURS[j % len(COLOURS)], 2)):
            ys = centre - (track[:, j, 0] - base) * 128 * GAIN
            pts = np.stack([xs, np.clip(ys, 0, height - 1)], axis=1).round().astype(np.int32)
            cv2.polylines(img, [pts], False, colour, thick, cv2.LINE_AA)
    step_x = int(xs[STILL])
    cv2.line(img, (step_x, 15), (step_x, height - 10), (0, 0, 0), 1)
    cv2.putText(img, f"x of each keypoint over time, 1 px = {GAIN} px here (grey: raw, colour: smoothed); "
                "| = a sudden 24 px move",
                (40, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "smoothing.jpg")
    ap.add_argument("--strength", type=float, default=DEFAULT_STRENGTH)
    args = ap.parse_args()
    raw = clip_keypoints()
    out = smooth(raw, args.strength)
    frame = noisy_clip()[STILL // 2]
    top = np.hstack([cloud(frame, raw, "no smoothing"), cloud(frame, out, f"smoothing {args.strength:g}")])
    img = np.vstack([top, traces(raw, out, top.shape[1])])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.stem + ".tmp" + args.out.suffix)
    cv2.imwrite(str(tmp), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    tmp.replace(args.out)
    drop, lag = measure(args.strength)
    print(f"{args.out}: keypoint std {drop:.1f}x lower at rest, {lag} frame(s) to follow 90% of a sudden move")


if __name__ == "__main__":
    main()
