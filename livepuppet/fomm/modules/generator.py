"""The occlusion-aware generator, split into the source-only part and the per-frame part."""

from __future__ import annotations

from functools import partial

import tensorflow as tf

from livepuppet.fomm.config import ModelConfig
from livepuppet.fomm.modules.blocks import Conv, DownBlock2d, ResBlock2d, SameBlock2d, StateReader, UpBlock2d
from livepuppet.fomm.modules import webgpu
from livepuppet.fomm.modules.dense_motion import DenseMotion
from livepuppet.fomm.modules.ops import grid_sample, resize_bilinear


class SourceEncoder(tf.Module):
    """Source image -> what every driving frame reuses: encoded features and the downsampled source.

    The generator's ``first`` and ``down_blocks`` (about a fifth of the
    per-frame cost of the original) depend on the source image only.
    """

    def __init__(self, cfg: ModelConfig, state: StateReader, dense_motion: DenseMotion, name: str = "source_encoder"):
        super().__init__(name=name)
        self.first = SameBlock2d(state.child("first"))
        self.down_blocks = [DownBlock2d(state.child(f"down_blocks.{i}"))
                            for i in range(cfg.generator.num_down_blocks)]
        self.down = dense_motion.down  # only the anti-alias kernel: keeps the rest out of its SavedModel

    def __call__(self, source: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = self.first(source)
        for block in self.down_blocks:
            x = block(x)
        return x, self.down(source) if self.down is not None else source


class FrameGenerator(tf.Module):
    """Normalised driving keypoints + cached source data -> predicted frames (B, H, W, 3)."""

    def __init__(self, cfg: ModelConfig, state: StateReader, dense_motion: DenseMotion, name: str = "generator"):
        super().__init__(name=name)
        g = cfg.generator
        self.dense_motion = dense_motion
        self.bottleneck = [ResBlock2d(state.child(f"bottleneck.r{i}")) for i in range(g.num_bottleneck_blocks)]
        self.up_blocks = [UpBlock2d(state.child(f"up_blocks.{i}")) for i in range(g.num_down_blocks)]
        self.final = Conv(state.child("final"), split_taps=state.rewrites.split_thin)
        self.warp = partial(webgpu.warp, as_op=state.rewrites.grid_sample_op) if state.rewrites.webgpu else grid_sample

    def __call__(self, kp_driving: tuple[tf.Tensor, tf.Tensor], kp_source: tuple[tf.Tensor, tf.Tensor],
                 features: tf.Tensor, source_small: tf.Tensor) -> tf.Tensor:
        deformation, occlusion = self.dense_motion(source_small, kp_driving, kp_source)
        size = tuple(features.shape[1:3])
        if tuple(deformation.shape[1:3]) != size:
            deformation = resize_bilinear(deformation, size)
        x = self.warp(features, deformation, self.dense_motion.align_corners)
        if occlusion is not None:
            if tuple(occlusion.shape[1:3]) != size:
                occlusion = resize_bilinear(occlusion, size)
            x = x * occlusion
        for block in self.bottleneck:
            x = block(x)
        for block in self.up_blocks:
            x = block(x)
        return tf.sigmoid(self.final(x))
