"""The dense motion network: from sparse keypoint motions to one dense warp and an occlusion map."""

from __future__ import annotations

import tensorflow as tf

from livepuppet.fomm.config import KP_VARIANCE, ModelConfig
from livepuppet.fomm.modules import webgpu
from livepuppet.fomm.modules.blocks import AntiAliasDownsample, Conv, Hourglass, StateReader
from livepuppet.fomm.modules.ops import coordinate_grid, grid_sample, inverse2x2, kp2gaussian, matmul2x2


class DenseMotion(tf.Module):
    """Turns keypoints into a (B, h, w, 2) sampling grid and a (B, h, w, 1) occlusion map.

    It works on the source downsampled by ``down``, which depends on the source
    only, so the source encoder computes it once with the rest of the source work.
    """

    def __init__(self, cfg: ModelConfig, state: StateReader, name: str = "dense_motion_network",
                 align_corners: bool = False):
        super().__init__(name=name)
        dm = cfg.generator.dense_motion
        self.cfg = cfg
        self.align_corners = align_corners  # grid_sample's convention (livepuppet.fomm.numerics)
        self.webgpu = state.rewrites.webgpu
        self.sample = webgpu.grid_sample_op if state.rewrites.grid_sample_op else webgpu.grid_sample
        self.down = AntiAliasDownsample(state["down.weight"], dm.scale_factor) if dm.scale_factor != 1 else None
        self.hourglass = Hourglass(state.child("hourglass"), dm.num_blocks)
        split = state.rewrites.split_thin
        self.mask = Conv(state.child("mask"), split_taps=split)
        self.occlusion = (Conv(state.child("occlusion"), split_taps=split)
                          if cfg.generator.estimate_occlusion_map else None)

    def sparse_motions(self, kp_driving: tuple[tf.Tensor, tf.Tensor], kp_source: tuple[tf.Tensor, tf.Tensor],
                       size: tuple[int, int]) -> tf.Tensor:
        """(B, h, w, K+1, 2): the identity, then J_k (z - kd_k) + ks_k for every keypoint."""
        grid = tf.constant(coordinate_grid(*size)[None, :, :, None, :])  # (1, h, w, 1, 2)
        z = grid - kp_driving[0][:, None, None]  # (B, h, w, K, 2)
        if self.cfg.estimate_jacobian:
            j = matmul2x2(kp_source[1], inverse2x2(kp_driving[1]))[:, None, None]  # (B, 1, 1, K, 2, 2)
            z = tf.stack([j[..., 0, 0] * z[..., 0] + j[..., 0, 1] * z[..., 1],
                          j[..., 1, 0] * z[..., 0] + j[..., 1, 1] * z[..., 1]], -1)
        motions = z + kp_source[0][:, None, None]
        identity = grid + tf.zeros_like(motions[..., :1, :])
        return tf.concat([identity, motions], axis=3)

    def __call__(self, source_small: tf.Tensor, kp_driving: tuple[tf.Tensor, tf.Tensor],
                 kp_source: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor | None]:
        if self.webgpu:
            return self._call_webgpu(source_small, kp_driving, kp_source)
        _, h, w, c = source_small.shape
        k = self.cfg.num_kp
        heat = kp2gaussian(kp_driving[0], (h, w), KP_VARIANCE) - kp2gaussian(kp_source[0], (h, w), KP_VARIANCE)
        heat = tf.concat([tf.zeros_like(heat[..., :1]), heat], axis=-1)  # background first: (B, h, w, K+1)
        motions = self.sparse_motions(kp_driving, kp_source, (h, w))
        deformed = grid_sample(source_small, motions, self.align_corners)  # (B, h, w, K+1, C)
        features = tf.reshape(tf.concat([heat[..., None], deformed], -1), [-1, h, w, (k + 1) * (c + 1)])
        out = self.hourglass(features)
        mask = tf.nn.softmax(self.mask(out), axis=-1)
        deformation = tf.reduce_sum(motions * mask[..., None], axis=3)
        return deformation, self._occlusion(out)

    def _occlusion(self, out: tf.Tensor) -> tf.Tensor | None:
        return tf.sigmoid(self.occlusion(out)) if self.occlusion is not None else None

    def _call_webgpu(self, source_small: tf.Tensor, kp_driving: tuple[tf.Tensor, tf.Tensor],
                     kp_source: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor | None]:
        """The same computation with no tensor above rank 4 (:mod:`.webgpu`): x and y apart, (B*h, w, K+1, C) samples."""
        _, h, w, c = source_small.shape
        k = self.cfg.num_kp
        heat = (webgpu.heatmaps(kp_driving[0], (h, w), KP_VARIANCE)
                - webgpu.heatmaps(kp_source[0], (h, w), KP_VARIANCE))
        heat = tf.concat([tf.zeros_like(heat[..., :1]), heat], axis=-1)  # (B, h, w, K+1)
        mx, my = webgpu.sparse_motions(kp_driving, kp_source, (h, w), self.cfg.estimate_jacobian)
        deformed = self.sample(source_small, mx, my, self.align_corners)  # (B*h, w, K+1, C)
        features = tf.concat([tf.reshape(heat, [-1, w, k + 1, 1]), deformed], -1)
        out = self.hourglass(tf.reshape(features, [-1, h, w, (k + 1) * (c + 1)]))
        mask = tf.nn.softmax(self.mask(out), axis=-1)
        deformation = tf.concat([tf.reduce_sum(mx * mask, axis=-1, keepdims=True),
                                 tf.reduce_sum(my * mask, axis=-1, keepdims=True)], axis=-1)
        return deformation, self._occlusion(out)
