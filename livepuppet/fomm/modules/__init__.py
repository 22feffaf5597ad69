"""The First Order Motion Model as TensorFlow modules, NHWC, built from a checkpoint's state dicts.

:class:`FOMM` holds the four graphs livepuppet exports:

- ``detect_keypoints(image) -> (value, jacobian)``
- ``encode_source(source) -> (features, source_small)``: once per source image
- ``process_keypoints(source, driving, initial, relative, adapt_scale)``
- ``generate(kp_norm, kp_source, features, source_small) -> prediction``
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import tensorflow as tf

from livepuppet.fomm.config import ModelConfig, validate
from livepuppet.fomm.modules.blocks import StateReader
from livepuppet.fomm.modules.dense_motion import DenseMotion
from livepuppet.fomm.modules.generator import FrameGenerator, SourceEncoder
from livepuppet.fomm.modules.keypoint_detector import KeypointDetector
from livepuppet.fomm.modules import webgpu
from livepuppet.fomm.modules.kp_processing import normalize_keypoints
from livepuppet.fomm.modules.rewrites import BROWSER, GRAPHS, PLAIN, XNNPACK, Rewrites
from livepuppet.fomm.numerics import LEGACY, align_corners

__all__ = ["FOMM", "normalize_keypoints", "Rewrites", "GRAPHS", "PLAIN", "XNNPACK", "BROWSER"]


class FOMM(tf.Module):
    """The whole model; its parts share weights (the dense motion network sits in both generator halves).

    ``rewrites`` picks a back end's graph rewrites (:mod:`.rewrites`); the
    default is the plain graph, the original's operations one for one.
    ``numerics`` picks how it samples (:mod:`livepuppet.fomm.numerics`); the
    default here is the original code's, the reference's parity target.
    """

    def __init__(self, cfg: ModelConfig, generator: Mapping[str, np.ndarray], kp_detector: Mapping[str, np.ndarray],
                 fold_batchnorm: bool = True, rewrites: Rewrites = PLAIN, numerics: str = LEGACY):
        super().__init__(name="fomm")
        validate(cfg, generator, kp_detector)
        cfg.validate_frame_shape()
        self.cfg = cfg
        self.rewrites, self.numerics = rewrites, numerics
        gen = StateReader(generator, fold=fold_batchnorm, rewrites=rewrites)
        self.kp_detector = KeypointDetector(cfg, StateReader(kp_detector, fold=fold_batchnorm, rewrites=rewrites))
        dense = DenseMotion(cfg, gen.child("dense_motion_network"), align_corners=align_corners(numerics))
        self.source_encoder = SourceEncoder(cfg, gen, dense)
        self.generator = FrameGenerator(cfg, gen, dense)

    def detect_keypoints(self, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.kp_detector(image)

    def encode_source(self, source: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.source_encoder(source)

    def process_keypoints(self, source, driving, initial, relative, adapt_scale):
        normalize = webgpu.normalize_keypoints if self.rewrites.webgpu else normalize_keypoints
        return normalize(source, driving, initial, relative, adapt_scale)

    def generate(self, kp_driving, kp_source, features, source_small) -> tf.Tensor:
        return self.generator(kp_driving, kp_source, features, source_small)

    def animate(self, source: np.ndarray, driving: np.ndarray, relative: bool = True,
                adapt_scale: bool = True) -> np.ndarray:
        """Eager convenience, the original demo: source (1, H, W, 3), driving (N, H, W, 3) -> (N, H, W, 3)."""
        kp_source = self.detect_keypoints(tf.constant(source))
        kp_driving = self.detect_keypoints(tf.constant(driving))
        initial = (kp_driving[0][:1], kp_driving[1][:1])
        norm = self.process_keypoints(kp_source, kp_driving, initial, tf.constant(float(relative)),
                                      tf.constant(float(adapt_scale)))
        features, small = self.encode_source(tf.constant(source))
        return self.generate(norm, kp_source, features, small).numpy()
