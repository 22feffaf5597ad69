"""Random, numerically sane weights for any FOMM architecture: what bench and the tests convert.

The published weights cannot be had everywhere (and not at all on CI), so a
model to time or test is made from a config alone: numpy only, shaped by
:func:`livepuppet.fomm.config.expected_shapes`.
"""

from __future__ import annotations

import numpy as np

from livepuppet.fomm import config as cfgmod
from livepuppet.fomm.config import ModelConfig


def random_state(cfg: ModelConfig, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(generator, kp_detector) state dicts for ``cfg`` with random, numerically sane weights.

    numpy only. Convolutions get He-style weights; batch norms positive
    running variances; the jacobian head starts at the identity and the output
    heads are damped, so keypoints, jacobians and sampling grids stay finite
    and plausible, which is all that timing needs.
    """
    rng = np.random.default_rng(seed)
    states = []
    for shapes in cfgmod.expected_shapes(cfg):
        state: dict[str, np.ndarray] = {}
        for name, shape in shapes.items():
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith("down.weight"):  # the anti-alias Gaussian, a fixed buffer
                k = shape[-1]
                scale = next(1 / n for n in range(2, 33) if cfgmod.antialias_kernel_size(1 / n) == k)
                value = np.broadcast_to(cfgmod.gaussian_kernel(scale), shape)
            elif leaf == "weight" and len(shape) == 4:
                fan_in = shape[1] * shape[2] * shape[3]
                value = rng.standard_normal(shape) * (2 / fan_in) ** 0.5
                if name.split(".")[0] in ("kp", "jacobian", "final") or ".mask." in name or ".occlusion." in name:
                    value = value * (0.02 if name.startswith("jacobian") else 0.2)
                elif name.endswith(".conv2.weight"):  # residual branches: keep the bottleneck O(1)
                    value = value * 0.25
            elif name == "jacobian.bias":
                value = np.tile([1.0, 0.0, 0.0, 1.0], shape[0] // 4)
            elif leaf == "running_var":
                value = rng.uniform(0.5, 2.0, shape)
            elif leaf == "running_mean":
                value = rng.normal(0, 0.2, shape)
            elif leaf == "weight":  # batch norm scale
                value = rng.uniform(0.7, 1.3, shape)
            else:  # biases
                value = rng.normal(0, 0.05, shape)
            state[name] = np.ascontiguousarray(value, dtype=np.float32)
        states.append(state)
    return states[0], states[1]
