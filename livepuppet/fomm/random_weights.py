"""Random, numerically sane weights for any FOMM architecture: what bench and the tests convert.

The published weights cannot be had everywhere (and not at all on CI), so a
model to time or test is made from a config alone: numpy only, shaped by
:func:`livepuppet.fomm.config.expected_shapes`.
"""

from __future__ import annotations

import numpy as np

from livepuppet.fomm import config as cfgmod
from livepuppet.fomm.config import ModelConfig


def random_state(cfg: ModelConfig, seed: int = 0, outliers: tuple[str, ...] = (), outlier_scale: float = 64.0
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(generator, kp_detector) state dicts for ``cfg`` with random, numerically sane weights.

    numpy only. Convolutions get He-style weights; batch norms positive
    running variances; the jacobian head starts at the identity and the output
    heads are damped, so keypoints, jacobians and sampling grids stay finite
    and plausible, which is all that timing needs.

    ``outliers`` names generator convolutions (``bottleneck.r0.conv1``,
    ``up_blocks.1.conv``, ``final``) that get an input channel
    ``outlier_scale`` times larger than the rest, and weights on that channel
    as much smaller: harmless in float, but an input that int8, at one range
    per tensor, quantises badly, as trained networks' outlier channels are
    (tests of ``--fast``'s plan and of auto's choice).
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
    for conv in outliers:
        _outlier_channel(states[0], conv, outlier_scale)
    return states[0], states[1]


def _outlier_channel(state: dict[str, np.ndarray], conv: str, scale: float) -> None:
    """Channel 0 of ``conv``'s input made ``scale`` times the others' size and always on (the batch norm
    before its ReLU shifted up), ``conv``'s weights on it ``scale`` times smaller."""
    norm = _norm_before(state, conv)
    if f"{conv}.weight" not in state or f"{norm}.weight" not in state:
        raise KeyError(f"no generator convolution {conv!r} after a batch norm in this architecture")
    state[f"{norm}.weight"][0] *= scale
    state[f"{norm}.bias"][0] = scale
    state[f"{conv}.weight"][:, 0] /= scale


def _norm_before(state: dict[str, np.ndarray], conv: str) -> str:
    """The batch norm whose ReLU'd output ``conv`` reads, by the generator's layout (blocks.py)."""
    parts = conv.split(".")
    if parts[0] == "bottleneck":  # norm1 -> conv1, norm2 -> conv2 inside a residual block
        return f"{parts[0]}.{parts[1]}.norm{parts[-1][-1]}"
    ups = sorted({int(n.split(".")[1]) for n in state if n.startswith("up_blocks.")})
    if parts[0] == "up_blocks" and int(parts[1]) > 0:  # the previous up block ends conv, norm, ReLU
        return f"up_blocks.{int(parts[1]) - 1}.norm"
    return f"up_blocks.{ups[-1]}.norm" if conv == "final" and ups else ""
