"""Steady keypoints: a causal One-Euro filter (Casiez et al., CHI 2012) over the driving keypoints.

Camera noise and lighting flicker move the detected keypoints a little every
frame, and the avatar shakes although the head is still. A fixed low-pass
filter would steady it but make every real movement lag. The One-Euro filter
is a low-pass whose cutoff rises with speed: at rest it smooths hard, in a
quick movement it follows almost at once.

One cutoff is shared by all keypoints of a frame, set by the speed of their
*mean* position: a head movement moves them together, while per-keypoint noise
averages out of the mean, so noise does not open the filter. Keypoint values
and Jacobians are filtered with the same weight. The time step is one frame at
``rate`` frames per second, so a file gives the same result however fast it is
processed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the CLI reads DEFAULT_STRENGTH; engines stay unimported until a command needs them
    from livepuppet.runtime.engines import Keypoints

DEFAULT_STRENGTH = 0.5  # --smoothing when not given (run); animate defaults to 0 (off)


def _alpha(cutoff: float, dt: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class KeypointSmoother:
    """Filters keypoints frame by frame; ``strength`` 0 passes them through, 1 smooths hardest."""

    def __init__(self, strength: float = DEFAULT_STRENGTH, rate: float = 25.0, d_cutoff: float = 8.0) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"smoothing strength must be in 0..1, got {strength}")
        self.strength, self.dt, self.d_cutoff = strength, 1.0 / rate, d_cutoff
        # Tuned on noisy still clips and sudden turns (tests/test_smoothing.py): the resting cutoff
        # falls from 1.5 Hz to 0.15 Hz as strength rises; beta opens the filter for movement.
        self.min_cutoff = 1.5 * 10 ** (-strength)
        self.beta = 6.0
        self.reset()

    def reset(self) -> None:
        self._value: np.ndarray | None = None
        self._jac: np.ndarray | None = None
        self._speed = 0.0

    def step(self, value: np.ndarray, jacobian: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame: value (K, 2), jacobian (K, 2, 2) -> their filtered versions."""
        value = np.asarray(value, np.float64)
        jacobian = np.asarray(jacobian, np.float64)
        if self.strength == 0.0 or self._value is None or not np.isfinite(self._value).all():
            self._value, self._jac, self._speed = value, jacobian, 0.0
            return value, jacobian
        velocity = (value - self._value).mean(axis=0) / self.dt
        speed = float(np.hypot(*velocity)) if np.isfinite(velocity).all() else 0.0
        self._speed += _alpha(self.d_cutoff, self.dt) * (speed - self._speed)
        a = _alpha(self.min_cutoff + self.beta * self._speed, self.dt)
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
