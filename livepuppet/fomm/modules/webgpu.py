"""The graph's tensor work in the forms LiteRT.js's WebGPU back end takes: the ``browser`` graph.

LiteRT.js runs on WebGPU only ops whose tensors have at most four dimensions,
none with zero (scalars), slices that keep every axis, GATHER with 1-D indices,
and the first versions of STRIDED_SLICE and SUB (a version a rank-5 tensor
raises); any other op sends its part of the graph to WebAssembly, one thread.
The plain graph's keypoint processing, dense motion and warp break each rule
(SMALL: 146 of keypoint processing's 203 ops and 276 of the generator's 310
ran on WebAssembly). Here the same arithmetic is laid out differently:

- points and 2x2 matrices become channel slices, ``(B, 1, K, 2)`` and ``(B, 1, K, 4)``;
- the sparse motions ``(B, h, w, K+1, 2)`` become two ``(B, h, w, K+1)`` tensors, x and y;
- grid sampling gathers with one flat index vector, computed in float32 (exact
  below 2**24 pixels) and cast once;
- the hull's (i, j, m) point triples live on the axes of one ``(1, K, K, K)`` tensor;
- scalars are ``(1, 1, 1, 1)`` tensors, and finiteness is ``|x| < inf`` (TensorFlow's
  ``is_finite`` lowers to ``x - x``, an op with one input twice).

Every product and sum is the plain graph's, in the same order, so the two
agree to float32 rounding (tests/test_webgpu_graph.py).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from livepuppet.fomm.modules.ops import coordinate_grid

Matrix = tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]  # the entries a, b, c, d of [[a, b], [c, d]]


def finite_or(x: tf.Tensor, value: float) -> tf.Tensor:
    """``x`` where it is finite, else ``value``."""
    return tf.where(tf.abs(x) < np.inf, x, value)


def entries(jacobian: tf.Tensor, shape: list[int]) -> Matrix:
    """(B, K, 2, 2) matrices -> their four entries, each reshaped to ``shape``, sliced without dropping an axis."""
    k = jacobian.shape[1]
    flat = tf.reshape(jacobian, [-1, 1, k, 4])
    return tuple(tf.reshape(flat[..., i:i + 1], shape) for i in range(4))


def coordinates(value: tf.Tensor, shape: list[int]) -> tuple[tf.Tensor, tf.Tensor]:
    """(B, K, 2) points -> their x and y, each reshaped to ``shape``."""
    return tf.reshape(value[..., 0:1], shape), tf.reshape(value[..., 1:2], shape)


def inverse(m: Matrix) -> Matrix:
    a, b, c, d = m
    det = a * d - b * c
    return d / det, -b / det, -c / det, a / det


def matmul(p: Matrix, q: Matrix) -> Matrix:
    return (p[0] * q[0] + p[1] * q[2], p[0] * q[1] + p[1] * q[3],
            p[2] * q[0] + p[3] * q[2], p[2] * q[1] + p[3] * q[3])


def grid(h: int, w: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The coordinate grid's x and y, each (1, h, w, 1)."""
    xy = coordinate_grid(h, w)
    return tf.constant(xy[None, :, :, 0:1]), tf.constant(xy[None, :, :, 1:2])


def heatmaps(value: tf.Tensor, size: tuple[int, int], variance: float) -> tf.Tensor:
    """Gaussians around keypoints (B, K, 2) -> (B, h, w, K), as ``ops.kp2gaussian``."""
    k = value.shape[1]
    gx, gy = grid(*size)
    kx, ky = coordinates(value, [-1, 1, 1, k])
    dx, dy = gx - kx, gy - ky
    return tf.exp(-0.5 * (dx * dx + dy * dy) / variance)


def sparse_motions(kp_driving, kp_source, size: tuple[int, int], jacobians: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """x and y of DenseMotion.sparse_motions, each (B, h, w, K+1): the identity, then J_k (z - kd_k) + ks_k."""
    k = kp_driving[0].shape[1]
    shape = [-1, 1, 1, k]
    gx, gy = grid(*size)
    dx, dy = coordinates(kp_driving[0], shape)
    zx, zy = gx - dx, gy - dy
    if jacobians:
        j = matmul(entries(kp_source[1], shape), inverse(entries(kp_driving[1], shape)))
        zx, zy = j[0] * zx + j[1] * zy, j[2] * zx + j[3] * zy
    sx, sy = coordinates(kp_source[0], shape)
    mx, my = zx + sx, zy + sy
    return _with_identity(gx, mx), _with_identity(gy, my)


def _with_identity(identity: tf.Tensor, motions: tf.Tensor) -> tf.Tensor:
    batch = motions.shape[0]
    if batch is None:
        identity = identity + tf.zeros_like(motions[..., :1])
    elif batch != 1:
        identity = tf.tile(identity, [batch, 1, 1, 1])
    return tf.concat([identity, motions], axis=-1)


def grid_sample(image: tf.Tensor, gx: tf.Tensor, gy: tf.Tensor, align_corners: bool = False) -> tf.Tensor:
    """``ops.grid_sample`` of ``image`` (N, H, W, C) at points x ``gx``, y ``gy`` (G, h, w, P) -> (G*h, w, P, C).

    N must equal G, or be 1. The same corners and weights as ``ops.grid_sample``;
    the corners' flat indices are computed in float32 and gathered as one vector.
    """
    n, h, w, c = image.shape
    _, gh, gw, p = gx.shape
    padded = tf.reshape(tf.pad(image, [[0, 0], [1, 1], [1, 1], [0, 0]]), [-1, c])
    if align_corners:  # -1 and 1 are the centres of the corner pixels (livepuppet.fomm.numerics)
        ix, iy = (gx + 1.0) * ((w - 1) / 2.0), (gy + 1.0) * ((h - 1) / 2.0)
    else:
        ix, iy = ((gx + 1.0) * w - 1.0) / 2.0, ((gy + 1.0) * h - 1.0) / 2.0
    x0, y0 = tf.floor(finite_or(ix, -2.0)), tf.floor(finite_or(iy, -2.0))
    x1, y1 = x0 + 1.0, y0 + 1.0
    cx0, cx1 = (tf.clip_by_value(v, -1.0, float(w)) + 1.0 for v in (x0, x1))
    cy0, cy1 = (tf.clip_by_value(v, -1.0, float(h)) + 1.0 for v in (y0, y1))
    row = float(w + 2)
    base = 0.0
    if n != 1:
        base = tf.reshape(tf.cast(tf.range(tf.shape(gx)[0]), tf.float32) * ((h + 2) * row), [-1, 1, 1, 1])

    def corner(cy: tf.Tensor, cx: tf.Tensor) -> tf.Tensor:
        index = tf.cast(tf.reshape(base + cy * row + cx, [-1]), tf.int32)
        return tf.reshape(tf.gather(padded, index), [-1, gw, p, c])

    def weight(v: tf.Tensor) -> tf.Tensor:
        return tf.reshape(v, [-1, gw, p, 1])

    return (corner(cy0, cx0) * weight((x1 - ix) * (y1 - iy)) + corner(cy0, cx1) * weight((ix - x0) * (y1 - iy))
            + corner(cy1, cx0) * weight((x1 - ix) * (iy - y0)) + corner(cy1, cx1) * weight((ix - x0) * (iy - y0)))


GRID_SAMPLE_OP = "livepuppet_grid_sample"


def grid_sample_op(image: tf.Tensor, gx: tf.Tensor, gy: tf.Tensor, align_corners: bool = False) -> tf.Tensor:
    """:func:`grid_sample` as one op, which the ONNX export makes ONNX's own GridSample.

    ONNX Runtime's GridSample computes the same corners and weights in one
    kernel (vox-256, CPU provider: 3.1 against 10 ms for the frame warp, 1.1
    against 7.5 for the dense motion's, the same output to the bit), so the ONNX
    graph marks each warp with this op (:mod:`livepuppet.conversion.onnx_export`).
    Run in TensorFlow it computes :func:`grid_sample` eagerly.
    """
    def run(*args):
        return grid_sample(*args, align_corners=align_corners).numpy()

    name = GRID_SAMPLE_OP + ("_aligned" if align_corners else "")  # the export reads the convention off the name
    out = tf.numpy_function(run, [image, gx, gy], tf.float32, stateful=False, name=name)
    g, h, w, p = gx.shape
    out.set_shape([None if g is None else g * h, w, p, image.shape[-1]])
    return out


def warp(image: tf.Tensor, deformation: tf.Tensor, align_corners: bool = False, as_op: bool = False) -> tf.Tensor:
    """``ops.grid_sample`` of ``image`` (N, H, W, C) at a (G, h, w, 2) grid -> (G, h, w, C); ``as_op``: see :func:`grid_sample_op`."""
    _, h, w, _ = deformation.shape
    out = (grid_sample_op if as_op else grid_sample)(image, deformation[..., 0:1], deformation[..., 1:2],
                                                     align_corners)
    return tf.reshape(out, [-1, h, w, image.shape[-1]])


def hull_area(x: tf.Tensor, y: tf.Tensor, eps: float = 1e-7) -> tf.Tensor:
    """``ops.hull_area`` of the K points (x, y), each (1, K) -> (1, 1, 1, 1), on (1, i, j, m) axes."""
    k = x.shape[-1]
    xi, yi = tf.reshape(x, [1, k, 1, 1]), tf.reshape(y, [1, k, 1, 1])
    xj, yj = tf.reshape(x, [1, 1, k, 1]), tf.reshape(y, [1, 1, k, 1])
    dx, dy = xj - xi, yj - yi  # d[i, j] = p_j - p_i, (1, K, K, 1)
    mx, my = tf.reshape(dx, [1, k, 1, k]), tf.reshape(dy, [1, k, 1, k])  # d[i, m]
    cross = dx * my - dy * mx  # (1, K, K, K)
    dot = dx * mx + dy * my
    length2 = dx * dx + dy * dy
    tol = eps * tf.maximum(tf.reduce_max(length2, axis=[1, 2, 3], keepdims=True), 1e-30)
    on_line = tf.abs(cross) <= tol
    within = tf.logical_and(dot >= -tol, dot <= length2 + tol)
    ok = tf.logical_or(cross > tol, tf.logical_and(on_line, within))
    edge_ok = tf.reduce_min(tf.cast(ok, tf.float32), axis=3, keepdims=True)  # (1, K, K, 1)
    same = tf.cast(length2 <= tol, tf.float32)
    earlier = tf.constant(np.tril(np.ones((k, k), np.float32), -1).reshape(1, k, k, 1))
    first_copy = 1.0 - tf.minimum(tf.reduce_sum(same * earlier, axis=2, keepdims=True), 1.0)  # (1, K, 1, 1)
    edge = edge_ok * (1.0 - same) * first_copy * tf.reshape(first_copy, [1, 1, k, 1])
    shoelace = xi * yj - xj * yi
    return 0.5 * tf.reduce_sum(edge * shoelace, axis=[1, 2, 3], keepdims=True)


def movement_scale(kp_source: tf.Tensor, kp_initial: tf.Tensor) -> tf.Tensor:
    """``kp_processing.movement_scale`` as a (1, 1, 1, 1) tensor."""
    k = kp_source.shape[1]
    source = hull_area(*coordinates(kp_source[:1], [1, k]))
    initial = hull_area(*coordinates(kp_initial[:1], [1, k]))
    ok = tf.logical_and(source > 0, initial > 0)
    ratio = tf.sqrt(tf.maximum(source, 1e-30)) / tf.sqrt(tf.maximum(initial, 1e-30))
    return tf.where(tf.logical_and(ok, tf.abs(ratio) < np.inf), ratio, 1.0)


def normalize_keypoints(source, driving, initial, relative: tf.Tensor, adapt_scale: tf.Tensor):
    """``kp_processing.normalize_keypoints``; ``relative`` and ``adapt_scale`` are (1,) here, not scalars."""
    k = driving[0].shape[1]
    relative = tf.reshape(relative, [1, 1, 1, 1]) > 0.5
    adapt = tf.reshape(adapt_scale, [1, 1, 1, 1]) > 0.5
    scale = tf.where(adapt, movement_scale(source[0], initial[0]), 1.0)
    points = [tf.reshape(kp[0], [-1, 1, k, 2]) for kp in (source, driving, initial)]
    value_rel = (points[1] - points[2]) * scale + points[0]
    shape = [-1, 1, k, 1]
    m = matmul(matmul(entries(driving[1], shape), inverse(entries(initial[1], shape))), entries(source[1], shape))
    jac_rel = tf.reshape(tf.concat(m, axis=-1), [-1, k, 2, 2])
    value = tf.where(relative, value_rel, points[1])
    return tf.reshape(value, [-1, k, 2]), tf.where(tf.reshape(relative, [1, 1, 1, 1]), jac_rel, driving[1])
