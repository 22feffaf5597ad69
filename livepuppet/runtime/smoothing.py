"""Steady keypoints: a causal One-Euro filter (Casiez et al., CHI 2012) over the driving keypoints.

Camera noise and lighting flicker move the detected keypoints a little every
frame, and the avatar shakes although the head is still. A fixed low-pass
filter would steady it but make every real movement lag. The One-Euro filter
is a low-pass whose cutoff rises with speed: at rest it smooths hard, in a
quick movement it follows almost at once.

One cutoff is shared by all keypoints of a frame, set by the speed of their
*mean* position: a head movement moves them together, while per-keypoint noise
averages out of the mean. Keypoint values and Jacobians are filtered with the
same weight. The time step is one frame at ``rate`` frames per second, so a
file gives the same result however fast it is processed.

What the mean does not average out is the shake of the whole picture (a camera
on a desk, a hand-held phone) and noise every keypoint shares: measured on the
avatar, that alone opened the classic filter to three times its resting cutoff
and left the avatar only 1.6x steadier (issue 21). So the speed that opens the
filter is the part above the speed noise alone would show: the noise level is
read off the mean's second differences over the last second (a steady
movement has none, white noise has six times its variance), and the filtered
velocity must exceed ``noise_band`` times its noise before the cutoff rises.
A real head turn is many times that, and is followed within a frame.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the CLI reads DEFAULT_STRENGTH; engines stay unimported until a command needs them
    from livepuppet.runtime.engines import Keypoints

DEFAULT_STRENGTH = 0.5  # --smoothing when not given (run); animate defaults to 0 (off)
_MEDIAN_CHI2_2 = 2 * math.log(2)  # the median of a chi-square with 2 degrees of freedom


def _alpha(cutoff: float, dt: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class NoiseLevel:
    """The per-axis standard deviation of a 2-D track's white noise, from its recent second differences.

    A track at rest or moving at a steady speed has second differences of
    noise alone (variance 6 sigma^2 per axis); the median over ``window``
    frames ignores the odd sudden move.
    """

    def __init__(self, window: int = 25) -> None:
        self._points: deque[np.ndarray] = deque(maxlen=3)
        self._rough: deque[float] = deque(maxlen=window)

    def add(self, point: np.ndarray) -> None:
        self._points.append(point)
        if len(self._points) == 3:
            a, b, c = self._points
            second = c - 2 * b + a
            self._rough.append(float(second @ second))

    @property
    def sigma(self) -> float:
        """0 until a few frames were seen (no band: the filter starts as the classic One-Euro)."""
        if len(self._rough) < 5:
            return 0.0
        return math.sqrt(float(np.median(self._rough)) / (6 * _MEDIAN_CHI2_2))


class KeypointSmoother:
    """Filters keypoints frame by frame; ``strength`` 0 passes them through, 1 smooths hardest."""

    def __init__(self, strength: float = DEFAULT_STRENGTH, rate: float = 25.0, d_cutoff: float = 2.0,
                 beta: float = 20.0, noise_band: float = 3.0) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"smoothing strength must be in 0..1, got {strength}")
        self.strength, self.dt, self.d_cutoff = strength, 1.0 / rate, d_cutoff
        # Tuned on noisy still clips and sudden turns, measured on the keypoints and on the avatar
        # (tests/test_smoothing.py, benchmarks/steadiness.py): the resting cutoff falls from 1.5 Hz to
        # 0.15 Hz as strength rises; beta opens the filter for movement beyond the noise band.
        self.min_cutoff = 1.5 * 10 ** (-strength)
        self.beta, self.noise_band = beta, noise_band
        self.reset()

    def reset(self) -> None:
        self._value: np.ndarray | None = None
        self._jac: np.ndarray | None = None
        self._velocity = np.zeros(2)
        self._noise = NoiseLevel()

    def _speed(self, value: np.ndarray) -> float:
        """The filtered speed of the mean position beyond what its noise alone would show."""
        a_d = _alpha(self.d_cutoff, self.dt)
        velocity = (value - self._value).mean(axis=0) / self.dt  # type: ignore[operator]
        if not np.isfinite(velocity).all():
            return 0.0
        self._velocity = self._velocity + a_d * (velocity - self._velocity)
        # The filtered velocity of white noise: sigma / dt * sqrt(a_d / (2 - a_d)) per axis; sqrt(2) for both.
        noise = math.sqrt(2 * a_d / (2 - a_d)) * self._noise.sigma / self.dt
        return max(0.0, float(np.hypot(*self._velocity)) - self.noise_band * noise)

    def step(self, value: np.ndarray, jacobian: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame: value (K, 2), jacobian (K, 2, 2) -> their filtered versions."""
        value = np.asarray(value, np.float64)
        jacobian = np.asarray(jacobian, np.float64)
        if self.strength == 0.0 or self._value is None or not np.isfinite(self._value).all():
            self.reset()
            self._value, self._jac = value, jacobian
            self._noise.add(value.mean(axis=0))
            return value, jacobian
        centre = value.mean(axis=0)
        if np.isfinite(centre).all():
            self._noise.add(centre)
        a = _alpha(self.min_cutoff + self.beta * self._speed(value), self.dt)
        self._value = self._value + a * (value - self._value)
        self._jac = self._jac + a * (jacobian - self._jac)  # type: ignore[operator]
        return self._value, self._jac

    def __call__(self, kp: "Keypoints") -> "Keypoints":
        """Filter a batch of frames (B, K, 2) / (B, K, 2, 2), in order."""
        if self.strength == 0.0:
            return kp
        pairs = [self.step(v, j) for v, j in zip(kp.value, kp.jacobian)]
        return type(kp)(np.stack([v for v, _ in pairs]).astype(np.float32),
                        np.stack([j for _, j in pairs]).astype(np.float32))
