"""Tensor operations with PyTorch's exact semantics, in NHWC, built from TFLite builtin ops only.

Each op here is one of the few places where PyTorch and TensorFlow disagree by
default (grid sampling, interpolation, inverse), or something the original
computed outside the graph (the convex hull area, done with qhull).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def grid_sample(image: tf.Tensor, grid: tf.Tensor, align_corners: bool = False) -> tf.Tensor:
    """PyTorch's ``grid_sample``: bilinear, zero padding; ``align_corners`` False (today's default) or True
    (PyTorch 1.0's behaviour, see :mod:`livepuppet.fomm.numerics`).

    image: (N, H, W, C) with static H, W, C. grid: (G, ..., 2), last axis (x, y)
    in [-1, 1] (points outside sample zeros). N must equal G, or be 1 to sample
    one image (a cached source) at a whole batch of grids. Returns (G, ..., C).

    The image is padded with one ring of zeros and the corner indices are
    clamped into that ring, so out-of-range corners read zeros without any
    masking: four gathers and the blend are all the work.

    A NaN or infinite coordinate (a singular Jacobian gives one) samples NaN, as
    in PyTorch, instead of failing: its corners are read from the zero ring, since
    casting NaN to an index would make GATHER read out of bounds.
    """
    n, h, w, c = image.shape
    padded = tf.reshape(tf.pad(image, [[0, 0], [1, 1], [1, 1], [0, 0]]), [-1, c])
    if align_corners:  # -1 and 1 are the centres of the corner pixels
        ix = (grid[..., 0] + 1.0) * ((w - 1) / 2.0)
        iy = (grid[..., 1] + 1.0) * ((h - 1) / 2.0)
    else:  # -1 and 1 are the outer edges of the corner pixels
        ix = ((grid[..., 0] + 1.0) * w - 1.0) / 2.0
        iy = ((grid[..., 1] + 1.0) * h - 1.0) / 2.0
    x0, y0 = tf.floor(_finite_or(ix, -2.0)), tf.floor(_finite_or(iy, -2.0))
    x1, y1 = x0 + 1.0, y0 + 1.0
    # Clamp into [-1, size] (the zero ring), then shift by one for the padding.
    cx0 = tf.cast(tf.clip_by_value(x0, -1.0, float(w)), tf.int32) + 1
    cx1 = tf.cast(tf.clip_by_value(x1, -1.0, float(w)), tf.int32) + 1
    cy0 = tf.cast(tf.clip_by_value(y0, -1.0, float(h)), tf.int32) + 1
    cy1 = tf.cast(tf.clip_by_value(y1, -1.0, float(h)), tf.int32) + 1
    row = w + 2
    base = 0
    if n != 1:
        rank = len(grid.shape) - 1
        batch = tf.range(tf.shape(grid)[0], dtype=tf.int32) * ((h + 2) * row)
        base = tf.reshape(batch, [-1] + [1] * (rank - 1))

    def corner(cy: tf.Tensor, cx: tf.Tensor) -> tf.Tensor:
        return tf.gather(padded, base + cy * row + cx)

    w_nw = ((x1 - ix) * (y1 - iy))[..., None]
    w_ne = ((ix - x0) * (y1 - iy))[..., None]
    w_sw = ((x1 - ix) * (iy - y0))[..., None]
    w_se = ((ix - x0) * (iy - y0))[..., None]
    return (corner(cy0, cx0) * w_nw + corner(cy0, cx1) * w_ne
            + corner(cy1, cx0) * w_sw + corner(cy1, cx1) * w_se)


def _finite_or(x: tf.Tensor, value: float) -> tf.Tensor:
    """``x`` where it is finite, else ``value`` (NaN compares false)."""
    return tf.where(tf.abs(x) < np.inf, x, value)


def upsample_nearest2x(x: tf.Tensor) -> tf.Tensor:
    """``F.interpolate(scale_factor=2)``: every pixel becomes a 2x2 block."""
    _, h, w, _ = x.shape
    return tf.image.resize(x, [2 * h, 2 * w], method="nearest")


def resize_bilinear(x: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """``F.interpolate(mode='bilinear', align_corners=False)``: half-pixel, no anti-aliasing."""
    return tf.image.resize(x, size, method="bilinear", antialias=False)


def inverse2x2(m: tf.Tensor) -> tf.Tensor:
    """Inverse of (..., 2, 2) matrices by the closed form."""
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    return tf.stack([tf.stack([d, -b], -1), tf.stack([-c, a], -1)], -2) / det[..., None, None]


def matmul2x2(p: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
    """(..., 2, 2) @ (..., 2, 2), broadcasting leading axes, as elementwise products."""
    rows = []
    for i in range(2):
        rows.append(tf.stack([p[..., i, 0] * q[..., 0, j] + p[..., i, 1] * q[..., 1, j] for j in range(2)], -1))
    return tf.stack(rows, -2)


def hull_area(points: tf.Tensor, eps: float = 1e-7) -> tf.Tensor:
    """Area of the convex hull of (K, 2) points, with no control flow on tensor values.

    The hull's counter-clockwise edges are the pairs (i, j) with every point on
    the left of i -> j or on the closed segment between them; summing the
    shoelace terms of those edges gives the area. Only the first copy of a
    repeated point may start or end an edge, and a collinear point inside a
    longer edge disqualifies the shorter ones, so no edge is counted twice.
    Degenerate sets (all points collinear or equal) give 0.
    """
    k = points.shape[0]
    p = points
    d = p[None, :, :] - p[:, None, :]  # d[i, j] = p_j - p_i
    # cross[i, j, m] = (p_j - p_i) x (p_m - p_i)
    cross = d[:, :, None, 0] * d[:, None, :, 1] - d[:, :, None, 1] * d[:, None, :, 0]
    dot = d[:, :, None, 0] * d[:, None, :, 0] + d[:, :, None, 1] * d[:, None, :, 1]
    length2 = tf.reduce_sum(d * d, -1)  # |p_j - p_i|^2
    scale = tf.maximum(tf.reduce_max(length2), 1e-30)
    tol = eps * scale
    on_line = tf.abs(cross) <= tol
    within = tf.logical_and(dot >= -tol, dot <= length2[:, :, None] + tol)
    ok = tf.logical_or(cross > tol, tf.logical_and(on_line, within))
    edge_ok = tf.reduce_min(tf.cast(ok, tf.float32), axis=2)  # every m is fine
    same = tf.cast(tf.reduce_sum(d * d, -1) <= tol, tf.float32)
    earlier = tf.constant(np.tril(np.ones((k, k), np.float32), -1))  # earlier[i, j] = 1 if j < i
    first_copy = 1.0 - tf.minimum(tf.reduce_sum(same * earlier, axis=1), 1.0)
    distinct = 1.0 - same
    edge = edge_ok * distinct * first_copy[:, None] * first_copy[None, :]
    shoelace = p[:, None, 0] * p[None, :, 1] - p[None, :, 0] * p[:, None, 1]
    return 0.5 * tf.reduce_sum(edge * shoelace)


def coordinate_grid(h: int, w: int) -> np.ndarray:
    """``make_coordinate_grid``: (h, w, 2) of (x, y) in [-1, 1], computed as the original does."""
    x = 2 * (np.arange(w, dtype=np.float32) / np.float32(w - 1)) - 1
    y = 2 * (np.arange(h, dtype=np.float32) / np.float32(h - 1)) - 1
    xx, yy = np.meshgrid(x, y)
    return np.stack([xx, yy], -1).astype(np.float32)


def kp2gaussian(value: tf.Tensor, size: tuple[int, int], variance: float) -> tf.Tensor:
    """Gaussian heatmaps (B, h, w, K) around keypoints (B, K, 2)."""
    grid = tf.constant(coordinate_grid(*size)[None, :, :, None, :])  # (1, h, w, 1, 2)
    diff = grid - value[:, None, None, :, :]
    return tf.exp(-0.5 * tf.reduce_sum(diff * diff, -1) / variance)


def spatial_softmax(logits: tf.Tensor) -> tf.Tensor:
    """Softmax over all positions of (B, P, K) per channel, from builtin ops (TFLite's SOFTMAX is last-axis)."""
    shifted = logits - tf.reduce_max(logits, axis=1, keepdims=True)
    e = tf.exp(shifted)
    return e / tf.reduce_sum(e, axis=1, keepdims=True)
