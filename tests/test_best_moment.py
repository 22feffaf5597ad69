"""Live calibration on the best moment, and smoothing inside the pipeline, with a scripted engine."""

from __future__ import annotations

import numpy as np

from livepuppet.runtime.engines import Keypoints, SourceData
from livepuppet.runtime.pipeline import Pipeline, layout

RNG = np.random.default_rng(0)
SOURCE_KP = RNG.uniform(-0.6, 0.6, (10, 2))


class ScriptedEngine:
    """An engine whose keypoint detector returns the keypoints written in the frame's first pixels."""

    frame_size = (8, 16)

    def __init__(self) -> None:
        self.processed: list[np.ndarray] = []

    def detect_keypoints(self, images: np.ndarray) -> Keypoints:
        value = np.stack([images[:, 0, :10, 0], images[:, 0, :10, 1]], axis=-1)
        return Keypoints(value.astype(np.float32), np.tile(np.eye(2, dtype=np.float32), (len(images), 10, 1, 1)))

    def encode_source(self, source: np.ndarray) -> SourceData:
        return SourceData(Keypoints(SOURCE_KP[None].astype(np.float32), np.tile(np.eye(2), (1, 10, 1, 1))),
                          np.zeros(1), np.zeros(1))

    def process_keypoints(self, source, driving, initial, relative, adapt_scale) -> Keypoints:
        self.processed.append(np.array(driving.value))
        return driving

    def generate(self, driving, source) -> np.ndarray:
        return np.zeros((len(driving.value), 8, 8, 3), np.float32)


def frame(kp: np.ndarray) -> np.ndarray:
    f = np.zeros((8, 16, 3), np.float32)
    f[0, :10, :2] = kp
    return f


def make_pipeline(**kw) -> tuple[Pipeline, ScriptedEngine]:
    engine = ScriptedEngine()
    p = Pipeline(engine, **kw)  # type: ignore[arg-type]
    p.set_source(np.zeros((8, 16, 3), np.float32))
    return p, engine


def test_find_best_calibrates_on_the_pose_nearest_the_avatar():
    p, _ = make_pipeline()
    poses = [RNG.uniform(-0.6, 0.6, (10, 2)) for _ in range(8)]
    poses[5] = SOURCE_KP * 0.5 + 0.2 + RNG.normal(0, 0.01, (10, 2))  # the avatar's pose, smaller and shifted
    p.animate(frame(poses[0])[None])  # calibrated on the first frame, as usual
    p.find_best(6)
    distances = []
    for pose in poses[1:7]:
        assert p.searching
        p.animate(frame(pose)[None])
        distances.append(p.pose_distance)
    assert p.searching == 0
    np.testing.assert_allclose(p.initial.value[0], poses[5], atol=1e-6)
    assert int(np.argmin(distances)) == 4 and distances[4] < 0.05  # the overlay's number is the pose distance
    target = layout(SOURCE_KP)
    assert abs(distances[0] - float(((layout(poses[1]) - target) ** 2).sum())) < 1e-5


def test_smoothing_toggle_in_the_pipeline():
    p, engine = make_pipeline(smoothing=0.5)
    assert p.smooth
    base = RNG.uniform(-0.5, 0.5, (10, 2))
    noisy = [base + RNG.normal(0, 0.01, (10, 2)) for _ in range(30)]
    for kp in noisy:
        p.animate(frame(kp)[None])
    smoothed = np.array(engine.processed)[:, 0]
    assert smoothed[5:].std(axis=0).mean() < np.array(noisy)[5:].std(axis=0).mean() / 2
    p.smooth = False  # the 's' key, as the worker applies it
    p.animate(frame(noisy[0])[None])
    np.testing.assert_allclose(engine.processed[-1][0], noisy[0], atol=1e-6)  # raw again at once
    off, _ = make_pipeline()
    assert not off.smooth  # animate's default: frame-exact
