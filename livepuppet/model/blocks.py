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

from .ops import upsample_nearest2x

BN_EPS = 1e-5


class StateReader:
    """Hands out a state dict's tensors by prefix and remembers which were used."""

    def __init__(self, state: Mapping[str, np.ndarray], prefix: str = "", used: set[str] | None = None,
                 fold: bool = True):
        self.state = state
        self.prefix = prefix
        self.used: set[str] = set() if used is None else used
        self.fold = fold  # fold batch norms into the convolutions before them

    def child(self, name: str) -> "StateReader":
        return StateReader(self.state, f"{self.prefix}{name}.", self.used, self.fold)

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
    """

    def __init__(self, conv: StateReader, norm: StateReader | None = None, padding: int | None = None,
                 name: str | None = None):
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
        self.padding = (k - 1) // 2 if padding is None else padding
        self.kernel = _variable(w.transpose(2, 3, 1, 0), "kernel")
        self.bias = _variable(b, "bias")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        k = self.kernel.shape[0]
        if self.padding == 0:
            pad = "VALID"
        elif 2 * self.padding == k - 1:
            pad = "SAME"
        else:
            p = self.padding
            x, pad = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]]), "VALID"
        out = tf.nn.bias_add(tf.nn.conv2d(x, self.kernel, 1, pad), self.bias)
        return self.norm(out) if self.norm is not None else out


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
        return tf.nn.relu(self.conv(x))


class DownBlock2d(SameBlock2d):
    """conv -> BN -> ReLU -> 2x2 average pool."""

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.avg_pool2d(super().__call__(x), 2, 2, "VALID")


class UpBlock2d(SameBlock2d):
    """nearest x2 -> conv -> BN -> ReLU."""

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return super().__call__(upsample_nearest2x(x))


class ResBlock2d(tf.Module):
    """Pre-activation residual block: BN -> ReLU -> conv -> BN -> ReLU -> conv, plus the input."""

    def __init__(self, state: StateReader, name: str | None = None):
        super().__init__(name=name)
        self.norm1 = Affine(state.child("norm1"))
        self.conv1 = Conv(state.child("conv1"), state.child("norm2"))
        self.conv2 = Conv(state.child("conv2"))

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        out = self.conv1(tf.nn.relu(self.norm1(x)))
        return self.conv2(tf.nn.relu(out)) + x


class Hourglass(tf.Module):
    """U-Net: down blocks, then up blocks each concatenating [upsampled, skip]."""

    def __init__(self, state: StateReader, num_blocks: int, name: str | None = None):
        super().__init__(name=name)
        self.down = [DownBlock2d(state.child(f"encoder.down_blocks.{i}")) for i in range(num_blocks)]
        self.up = [UpBlock2d(state.child(f"decoder.up_blocks.{j}")) for j in range(num_blocks)]

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
