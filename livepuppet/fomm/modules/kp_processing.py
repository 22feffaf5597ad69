"""Keypoint normalisation (relative motion, adapt movement scale), in-graph.

The original did this in Python with qhull; here it is part of the exported
graph, with the two switches as inputs so one model serves every mode.
"""

from __future__ import annotations

import tensorflow as tf

from livepuppet.fomm.modules.ops import hull_area, inverse2x2, matmul2x2

Keypoints = tuple[tf.Tensor, tf.Tensor]  # value (B, K, 2), jacobian (B, K, 2, 2)


def movement_scale(kp_source: tf.Tensor, kp_initial: tf.Tensor) -> tf.Tensor:
    """sqrt(hull area of the source keypoints / hull area of the initial driving keypoints).

    A degenerate hull (area 0: keypoints on one line or one point) gives scale 1, where the original
    divided by zero; :func:`livepuppet.runtime.pipeline.degenerate_hull` lets the caller say so.
    """
    source, initial = hull_area(kp_source[0]), hull_area(kp_initial[0])
    ok = tf.logical_and(source > 0, initial > 0)
    ratio = tf.sqrt(tf.maximum(source, 1e-30)) / tf.sqrt(tf.maximum(initial, 1e-30))
    return tf.where(tf.logical_and(ok, tf.math.is_finite(ratio)), ratio, tf.ones([]))


def normalize_keypoints(source: Keypoints, driving: Keypoints, initial: Keypoints,
                        relative: tf.Tensor, adapt_scale: tf.Tensor) -> Keypoints:
    """Driving keypoints as the source should follow them (reference, section 7).

    ``relative`` and ``adapt_scale`` are float scalars, on when > 0.5. With
    relative movement the jacobians are made relative too, as the original demo does.
    """
    relative = tf.reshape(relative, []) > 0.5
    adapt = tf.reshape(adapt_scale, []) > 0.5
    scale = tf.where(adapt, movement_scale(source[0], initial[0]), tf.ones([]))
    value_rel = (driving[0] - initial[0]) * scale + source[0]
    jac_rel = matmul2x2(matmul2x2(driving[1], inverse2x2(initial[1])), source[1])
    return tf.where(relative, value_rel, driving[0]), tf.where(relative, jac_rel, driving[1])
