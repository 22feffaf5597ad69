"""``convert --fast``: OpenVINO networks with int8 convolutions (NNCF), calibrated on the bundled face.

Post-training, static: NNCF measures the range of every convolution's input on
inputs that the model makes itself (the bundled portrait,
:mod:`~livepuppet.runtime.probe`, moving along :data:`CALIBRATION_FRAMES`
frames of synthetic head motion), then stores int8 weights (per output
channel) and quantises those inputs at the measured ranges; the CPU runs them
on AMX-INT8 or VNNI, the rest of the network at its float precision.

Only convolution inputs are quantised. NNCF by default also quantises the
inputs of additions and multiplications: the residual stream, batch-norm
scales, the occlusion product and the sampling coordinates and weights of
both warps. On vox-256 that was nearly all of int8's error (0.59 mean / 4.9 max
levels against 0.19 / 2.2 with convolutions only, bench's random weights)
and none of its speed. Which convolutions then stay in float is
:mod:`.int8_plan`'s measurement; :mod:`livepuppet.conversion.targets.int8`
puts it together.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Callable, Iterator

import numpy as np

CALIBRATION_FRAMES = 40
# Every op type NNCF would otherwise quantise the inputs of, on the CPU: all but the convolutions
NOT_QUANTISED = ("Add", "Subtract", "Multiply", "Divide", "Maximum", "Minimum", "Concat", "AvgPool", "MaxPool",
                 "Interpolate", "ReduceMean", "ReduceSum", "ReduceMax", "Softmax", "MatMul", "MVN", "NormalizeL2",
                 "SquaredDifference", "Power", "Sigmoid", "Clamp", "Exp", "Floor", "Select", "Gather")


def generator_inputs(engine, frames: int, seed: int) -> list[dict[str, np.ndarray]]:
    """The generator's inputs, one frame at a time, for ``frames`` frames of the probe's head motion.

    Made as :func:`~livepuppet.runtime.timing.measure` makes them (the
    first frame calibrates), by ``engine`` (float32): with ``seed`` 0 these are
    exactly the generator calls auto's error check makes."""
    from livepuppet.runtime import probe

    size = engine.frame_size
    source = engine.encode_source(probe.portrait(size))
    clip = probe.head_motion(size, frames + 1, seed=seed)
    driving = engine.detect_keypoints(clip)
    samples = []
    for i in range(1, frames + 1):
        norm = engine.process_keypoints(source.keypoints, driving[i], driving[0], True, True)
        samples.append({"driving_value": norm.value, "driving_jacobian": norm.jacobian,
                        "source_value": source.keypoints.value, "source_jacobian": source.keypoints.jacobian,
                        "features": source.features, "source_small": source.source_small})
    return samples


class _Counted:
    """A calibration set that reports each sample NNCF takes (our progress bar, not NNCF's)."""

    def __init__(self, samples: list, tick: Callable[[], None]):
        self.samples, self.tick = samples, tick

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator:
        for sample in self.samples:
            self.tick()
            yield sample


def quantize_convolutions(model: Any, samples: list[dict[str, np.ndarray]],
                          tick: Callable[[], None] = lambda: None) -> Any:
    """``model`` with every convolution's weights and inputs at int8 (per-channel weights, fast bias correction)."""
    import logging

    import nncf

    nncf.set_log_level(logging.ERROR)
    scope = nncf.IgnoredScope(types=list(NOT_QUANTISED), validate=False)
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's own progress bars
        return nncf.quantize(model, nncf.Dataset(_Counted(samples, tick)), subset_size=len(samples),
                             preset=nncf.QuantizationPreset.MIXED, ignored_scope=scope)


def check_cpu() -> None:
    """--fast only where the CPU has int8 dot products; elsewhere int8 would run slower than float."""
    from livepuppet.errors import LivepuppetError
    from livepuppet.runtime import cpu

    if not cpu.current().int8:
        raise LivepuppetError("--fast needs a CPU with int8 dot products (AMX-INT8, AVX512-VNNI or AVX-VNNI); "
                              "this one has none, so its bf16/fp32 engines are the fast ones: convert without --fast")


def calibration_images(size: tuple[int, int], frames: int = CALIBRATION_FRAMES) -> list[dict[str, np.ndarray]]:
    """The keypoint detector's calibration inputs: the frames of the generator's head motion, one at a time."""
    from livepuppet.runtime import probe

    clip = probe.head_motion(size, frames + 1, seed=3)
    return [{"image": clip[i:i + 1]} for i in range(1, frames + 1)]
