"""The keypoint detector: an hourglass, then soft-argmax keypoints and their local jacobians."""

from __future__ import annotations

import tensorflow as tf

from livepuppet.fomm.config import ModelConfig
from livepuppet.fomm.modules.blocks import AntiAliasDownsample, Conv, Hourglass, StateReader
from livepuppet.fomm.modules.ops import coordinate_grid, spatial_softmax


class KeypointDetector(tf.Module):
    """image (B, H, W, 3) -> keypoints (B, K, 2) as (x, y) in [-1, 1], jacobians (B, K, 2, 2)."""

    def __init__(self, cfg: ModelConfig, state: StateReader, name: str = "kp_detector"):
        super().__init__(name=name)
        kd = cfg.kp_detector
        self.cfg = cfg
        self.down = (AntiAliasDownsample(state["down.weight"], kd.scale_factor)
                     if kd.scale_factor != 1 else None)
        # Unfused upsampling here: the soft-argmax at temperature 0.1 magnifies float32 rounding ten times,
        # so the keypoints keep the original order of operations (the fused form would save ~4 ms a frame).
        self.predictor = Hourglass(state.child("predictor"), kd.num_blocks, fused=False)
        self.kp = Conv(state.child("kp"), padding=kd.pad)
        self.jacobian = Conv(state.child("jacobian"), padding=kd.pad) if cfg.estimate_jacobian else None
        self.num_maps = 1 if kd.single_jacobian_map else cfg.num_kp

    def __call__(self, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = self.down(image) if self.down is not None else image
        features = self.predictor(x)
        logits = self.kp(features)
        _, h, w, k = logits.shape
        heat = spatial_softmax(tf.reshape(logits / self.cfg.kp_detector.temperature, [-1, h * w, k]))
        grid = tf.constant(coordinate_grid(h, w).reshape(1, h * w, 1, 2))
        value = tf.reduce_sum(heat[..., None] * grid, axis=1)  # (B, K, 2)
        if self.jacobian is None:
            jac = tf.broadcast_to(tf.eye(2), tf.concat([tf.shape(value)[:2], [2, 2]], 0))
            return value, jac
        maps = tf.reshape(self.jacobian(features), [-1, h * w, self.num_maps, 4])
        jac = tf.reduce_sum(heat[..., None] * maps, axis=1)  # (B, K, 4)
        return value, tf.reshape(jac, [-1, k, 2, 2])
