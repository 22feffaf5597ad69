"""The FOMM building blocks, built from a state dict, with eval batch norm folded away.

A batch norm that directly follows a convolution is folded into that
convolution's weights and bias (one fewer pass over the activations); the
pre-activation norms of the residual blocks, which follow an addition, become a
per-channel multiply-add. Weights are non-trainable ``tf.Variable``s so a
SavedModel keeps them out of its graph.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import tensorflow as tf

from livepuppet.fomm.modules.ops import upsample_nearest2x
from livepuppet.fomm.modules.rewrites import PLAIN, Rewrites

BN_EPS = 1e-5


class StateReader:
    """Hands out a state dict's tensors by prefix and remembers which were used.

    It also carries how the graph is built: ``fold`` (batch norms folded into
    the convolutions before them) and ``rewrites`` (the back end's graph
    rewrites, :mod:`.rewrites`), so every block built from it agrees.
    """

    def __init__(self, state: Mapping[str, np.ndarray], prefix: str = "", used: set[str] | None = None,
                 fold: bool = True, rewrites: Rewrites = PLAIN):
        self.state = state
        self.prefix = prefix
        self.used: set[str] = set() if used is None else used
        self.fold = fold
        self.rewrites = rewrites

    def child(self, name: str) -> "StateReader":
        return StateReader(self.state, f"{self.prefix}{name}.", self.used, self.fold, self.rewrites)

    def __getitem__(self, name: str) -> np.ndarray:
        key = self.prefix + name
        self.used.add(key)
        return np.asarray(self.state[key], dtype=np.float64)  # fold in double, store float32

    def has(self, name: str) -> bool:
        return self.prefix + name in self.state


def _bn_scale_shift(state: StateReader) -> tuple[np.ndarray, np.ndarray]:
    scale = state["weight"] / np.sqrt(state["running_var"] + BN_EPS)
    return scale, state["bias"] - state["running_mean"] * scale


def _variable(value: np.ndarray, name: str) -> tf.Variable:
    return tf.Variable(value.astype(np.float32), trainable=False, name=name)


class Conv(tf.Module):
    """Conv2d (stride 1, zero padding p) followed by an optional batch norm, folded in when ``fold``.

    Folding saves a pass over the activations but rounds the folded weights
    once more; unfolded, TensorFlow's oneDNN convolutions match PyTorch's
    almost bit for bit, which is what the parity tests measure.

    ``upsample=True`` computes the convolution of the input upsampled x2 by
    nearest neighbour (``UpBlock2d``) without making the upsampled image: each
    of the four output phases is a 2x2 convolution of the input, whose taps are
    sums of the 3x3 taps, and DEPTH_TO_SPACE interleaves them: 16 instead of
    36 multiply-adds per input pixel and channel pair, and no upsampled copy.

    ``split_taps=True``: a convolution with very few output channels (the
    generator's ``final``, 3 channels, 7x7) runs as a 1xk convolution into k times as many channels,
    then a kx1 convolution that selects and sums them: the same work in a
    shape CPU kernels tile well (about 3x faster with XNNPACK).

    ``winograd=True`` (the bottleneck's 3x3 convolutions) computes a 3x3 'same'
    convolution with at least ``WINOGRAD_MIN_CHANNELS`` channels in and out by
    Winograd's F(2x2, 3x3): the input, cut into overlapping 4x4 tiles, and the
    kernel are transformed so that each 2x2 block of outputs takes 16 instead of
    36 multiply-adds per channel pair, as 16 matrix products (FULLY_CONNECTED);
    the transforms are additions only. About 1.8x faster than CONV_2D on XNNPACK
    at 64x64x256; the result differs from a direct convolution by float32
    rounding (the transforms' coefficients are 0, +-1 and +-1/2).
    """

    SPLIT_TAPS_BELOW = 8  # output channels under which a kxk convolution is split into 1xk, kx1
    WINOGRAD_MIN_CHANNELS = 64  # below this, CONV_2D is as fast (measured on XNNPACK)

    def __init__(self, conv: StateReader, norm: StateReader | None = None, padding: int | None = None,
                 name: str | None = None, upsample: bool = False, winograd: bool = False,
                 split_taps: bool = False):
        super().__init__(name=name)
        w = conv["weight"]  # (out, in, kh, kw)
        b = conv["bias"]
        self.norm = None
        if norm is not None and not conv.fold:
            self.norm = Affine(norm)
        elif norm is not None:
            scale, shift = _bn_scale_shift(norm)
            w = w * scale[:, None, None, None]
            b = b * scale + shift
        k = w.shape[-1]
        self.size = k
        self.padding = (k - 1) // 2 if padding is None else padding
        self.upsample = upsample
        kernel = w.transpose(2, 3, 1, 0)  # (kh, kw, in, out)
        self.bias = _variable(b, "bias")
        self.phases: list[tuple[int, int, int, int]] = []  # (row, col, height, width) of each phase's window
        self.winograd = (winograd and not upsample and k == 3 and self.padding == 1
                         and min(w.shape[:2]) >= self.WINOGRAD_MIN_CHANNELS)
        if self.winograd:
            # U = G g G^T for each (in, out) pair, in float64; tile position t = 4 i + j.
            transformed = np.einsum("ia,jb,abco->ijco", _WINOGRAD_G, _WINOGRAD_G, kernel)
            self.winograd_kernels = [_variable(transformed[i, j], f"winograd_{i}{j}")
                                     for i in range(4) for j in range(4)]
        elif upsample:
            if 2 * self.padding != k - 1:
                raise ValueError("an upsampling convolution needs 'same' padding")
            self.phase_kernels = []
            for py in (0, 1):
                ky, oy = _phase_taps(kernel, py, axis=0, radius=self.padding)
                for px in (0, 1):
                    kyx, ox = _phase_taps(ky, px, axis=1, radius=self.padding)
                    self.phase_kernels.append(_variable(kyx, f"kernel_{py}{px}"))
                    self.phases.append((oy, ox, kyx.shape[0], kyx.shape[1]))
            self.halo = (self.padding + 1) // 2  # zero rows the low-resolution input needs
        elif split_taps and k > 1 and w.shape[0] < self.SPLIT_TAPS_BELOW and 2 * self.padding == k - 1:
            n = w.shape[0]
            # rows[0, dx, ci, dy*n + c] = kernel[dy, dx, ci, c]; select[dy, 0, dy*n + c, c] = 1
            self.rows = _variable(kernel.transpose(1, 2, 0, 3).reshape(1, k, -1, k * n), "rows")
            select = np.zeros((k, 1, k * n, n))
            for dy in range(k):
                select[dy, 0, dy * n:(dy + 1) * n] = np.eye(n)
            self.select = _variable(select, "select")
        else:
            self.kernel = _variable(kernel, "kernel")

    def __call__(self, x: tf.Tensor, activation=None) -> tf.Tensor:
        """The convolution, its batch norm, then ``activation`` if given."""
        if self.upsample:
            return self._upsampled(x, activation)
        if self.winograd:
            return self._finish(tf.nn.bias_add(self._winograd(x), self.bias), activation)
        if hasattr(self, "rows"):
            out = tf.nn.conv2d(tf.nn.conv2d(x, self.rows, 1, "SAME"), self.select, 1, "SAME")
        else:
            k = self.size
            if self.padding == 0:
                pad = "VALID"
            elif 2 * self.padding == k - 1:
                pad = "SAME"
            else:
                p = self.padding
                x, pad = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]]), "VALID"
            out = tf.nn.conv2d(x, self.kernel, 1, pad)
        return self._finish(tf.nn.bias_add(out, self.bias), activation)

    def _finish(self, out: tf.Tensor, activation) -> tf.Tensor:
        out = self.norm(out) if self.norm is not None else out
        return activation(out) if activation is not None else out

    def _upsampled(self, x: tf.Tensor, activation) -> tf.Tensor:
        _, h, w, _ = x.shape
        r = self.halo
        xp = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]]) if r else x
        outs = []
        for kernel, (oy, ox, kh, kw) in zip(self.phase_kernels, self.phases):
            window = xp[:, r + oy:r + oy + h + kh - 1, r + ox:r + ox + w + kw - 1, :]
            out = tf.nn.bias_add(tf.nn.conv2d(window, kernel, 1, "VALID"), self.bias)
            outs.append(self._finish(out, activation))  # per channel, so it commutes with the interleave
        return tf.nn.depth_to_space(tf.concat(outs, axis=-1), 2)

    def _winograd(self, x: tf.Tensor) -> tf.Tensor:
        """F(2x2, 3x3) on NHWC: Y = A^T [(G g G^T) . (B^T d B)] A for every 4x4 input tile d (stride 2)."""
        _, h, w, c = x.shape
        eh, ew = h % 2, w % 2  # odd sizes: one more zero row / column, cropped at the end
        th, tw = (h + eh) // 2, (w + ew) // 2
        # Space-to-depth of the padded input holds the four (row, column) parities as channel groups, so
        # element (a, b) of every tile is one stride-1 slice: group (a % 2, b % 2) shifted by (a // 2, b // 2).
        s = tf.nn.space_to_depth(tf.pad(x, [[0, 0], [1, 1 + eh], [1, 1 + ew], [0, 0]]), 2)

        def tile(a: int, b: int) -> tf.Tensor:
            g = (a % 2) * 2 + b % 2
            return s[:, a // 2:a // 2 + th, b // 2:b // 2 + tw, g * c:(g + 1) * c]

        d = [[tile(a, b) for b in range(4)] for a in range(4)]
        rows = [[_combine([d[a][b] for a in range(4)], _WINOGRAD_BT[i]) for b in range(4)] for i in range(4)]
        v = [[_combine(rows[i], _WINOGRAD_BT[j]) for j in range(4)] for i in range(4)]
        m = [[tf.matmul(tf.reshape(v[i][j], [-1, c]), self.winograd_kernels[4 * i + j]) for j in range(4)]
             for i in range(4)]
        rows = [[_combine([m[a][j] for a in range(4)], _WINOGRAD_AT[i]) for j in range(4)] for i in range(2)]
        y = [_combine(rows[i], _WINOGRAD_AT[j]) for i in range(2) for j in range(2)]  # output (i, j) of each tile
        out = tf.nn.depth_to_space(tf.reshape(tf.concat(y, axis=-1), [-1, th, tw, 4 * y[0].shape[-1]]), 2)
        return out[:, :h, :w, :] if eh or ew else out


_WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
_WINOGRAD_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
_WINOGRAD_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])


def _combine(terms: list[tf.Tensor], coefficients: np.ndarray) -> tf.Tensor:
    """sum(c * t) for coefficients in {-1, 0, 1}: additions and subtractions only."""
    out = None
    for term, c in zip(terms, coefficients):
        if c == 0:
            continue
        if out is None:
            out = term if c == 1 else -term
        else:
            out = out + term if c == 1 else out - term
    return out


def _phase_taps(kernel: np.ndarray, phase: int, axis: int, radius: int) -> tuple[np.ndarray, int]:
    """The taps of one output phase of 'conv after nearest x2' along ``axis``, on the low-resolution input.

    Output 2i + phase reads upsampled rows 2i + phase + d for d in [-radius, radius], that is
    input rows i + (phase + d) // 2; taps landing on the same input row add up.
    Returns the collapsed kernel and the offset of its first tap.
    """
    offsets = [(phase + d) // 2 for d in range(-radius, radius + 1)]
    first = min(offsets)
    shape = list(kernel.shape)
    shape[axis] = max(offsets) - first + 1
    out = np.zeros(shape)
    for t, o in enumerate(offsets):
        dst = [slice(None)] * kernel.ndim
        src = [slice(None)] * kernel.ndim
        dst[axis], src[axis] = o - first, t
        out[tuple(dst)] += kernel[tuple(src)]
    return out, first


class Affine(tf.Module):
    """An eval batch norm on its own: x * scale + shift per channel."""

    def __init__(self, norm: StateReader, name: str | None = None):
        super().__init__(name=name)
        scale, shift = _bn_scale_shift(norm)
        self.scale = _variable(scale, "scale")
        self.shift = _variable(shift, "shift")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return x * self.scale + self.shift


class SameBlock2d(tf.Module):
    """conv -> BN -> ReLU."""

    def __init__(self, state: StateReader, name: str | None = None):
        super().__init__(name=name)
        self.conv = Conv(state.child("conv"), state.child("norm"))

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.conv(x, activation=tf.nn.relu)


class DownBlock2d(SameBlock2d):
    """conv -> BN -> ReLU -> 2x2 average pool."""

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.avg_pool2d(super().__call__(x), 2, 2, "VALID")


class UpBlock2d(tf.Module):
    """nearest x2 -> conv -> BN -> ReLU.

    ``fused`` (the default where the graph's rewrites ask for it) runs it as one
    upsampling convolution (see :class:`Conv`): about 2x faster on XNNPACK, the
    same result up to float32 rounding. Unfused, it upsamples with
    RESIZE_NEAREST_NEIGHBOR, then convolves.
    """

    def __init__(self, state: StateReader, name: str | None = None, fused: bool | None = None):
        super().__init__(name=name)
        self.fused = state.rewrites.fused_upsample if fused is None else fused
        self.conv = Conv(state.child("conv"), state.child("norm"), upsample=self.fused)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.conv(x if self.fused else upsample_nearest2x(x), activation=tf.nn.relu)


class ResBlock2d(tf.Module):
    """Pre-activation residual block: BN -> ReLU -> conv -> BN -> ReLU -> conv, plus the input."""

    def __init__(self, state: StateReader, name: str | None = None):
        super().__init__(name=name)
        self.norm1 = Affine(state.child("norm1"))
        winograd = state.rewrites.winograd
        self.conv1 = Conv(state.child("conv1"), state.child("norm2"), winograd=winograd)
        self.conv2 = Conv(state.child("conv2"), winograd=winograd)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        out = self.conv1(tf.nn.relu(self.norm1(x)))
        return self.conv2(tf.nn.relu(out)) + x


class Hourglass(tf.Module):
    """U-Net: down blocks, then up blocks each concatenating [upsampled, skip]. ``fused``: see UpBlock2d."""

    def __init__(self, state: StateReader, num_blocks: int, name: str | None = None, fused: bool | None = None):
        super().__init__(name=name)
        self.down = [DownBlock2d(state.child(f"encoder.down_blocks.{i}")) for i in range(num_blocks)]
        self.up = [UpBlock2d(state.child(f"decoder.up_blocks.{j}"), fused=fused) for j in range(num_blocks)]

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        skips = [x]
        for block in self.down:
            skips.append(block(skips[-1]))
        out = skips.pop()
        for block in self.up:
            out = tf.concat([block(out), skips.pop()], axis=-1)
        return out


class AntiAliasDownsample(tf.Module):
    """Gaussian blur then keep every n-th pixel: one strided depthwise convolution."""

    def __init__(self, kernel: np.ndarray, scale: float, name: str | None = None):
        super().__init__(name=name)
        self.stride = int(1 / scale)
        self.pad = kernel.shape[-1] // 2
        self.kernel = _variable(np.asarray(kernel, np.float32).transpose(2, 3, 0, 1), "kernel")  # (k, k, C, 1)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        p = self.pad
        x = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        s = self.stride
        return tf.nn.depthwise_conv2d(x, self.kernel, [1, s, s, 1], "VALID")
