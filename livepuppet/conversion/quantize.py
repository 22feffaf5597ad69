"""``convert --fast``: the OpenVINO generator with int8 convolutions (NNCF), mixed with float by measurement.

Post-training, static: NNCF measures the range of every convolution's input on
generator inputs that the model makes itself (the bundled portrait,
:mod:`~livepuppet.runtime.probe`, moving along :data:`CALIBRATION_FRAMES` frames
of synthetic head motion), then stores int8 weights (per output channel) and
quantises those inputs at the measured ranges; the CPU runs them on AMX-INT8
or VNNI, with the rest of the generator at its float precision.

Only convolution inputs are quantised. NNCF by default also quantises the
inputs of additions and multiplications: the residual stream, batch-norm
scales, the occlusion product and the sampling coordinates and weights of
both warps. On vox-256 that was nearly all of int8's error (0.59 mean / 4.9 max
levels against 0.19 / 2.2 with convolutions only, bench's random weights)
and none of its speed. The generator is quantised from the int8 graph
(:mod:`~livepuppet.fomm.modules.rewrites`: direct convolutions, the thin final
one split), whatever graph OpenVINO runs at float here.

Then :mod:`.int8_plan` measures each convolution group's error and keeps the
most sensitive in float until the whole is within ``auto``'s budget, and the
keypoint detector's precision is chosen the same way (the cheaper one within
the budget). The plan, the errors and the timings are returned for the
manifest's ``fast`` entry; ``bench`` prints them and ``auto`` measures the
result like any candidate.
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

CALIBRATION_FRAMES = 40
# Every op type NNCF would otherwise quantise the inputs of, on the CPU: all but the convolutions
NOT_QUANTISED = ("Add", "Subtract", "Multiply", "Divide", "Maximum", "Minimum", "Concat", "AvgPool", "MaxPool",
                 "Interpolate", "ReduceMean", "ReduceSum", "ReduceMax", "Softmax", "MatMul", "MVN", "NormalizeL2",
                 "SquaredDifference", "Power", "Sigmoid", "Clamp", "Exp", "Floor", "Select", "Gather")


def generator_inputs(engine, frames: int, seed: int) -> list[dict[str, np.ndarray]]:
    """The generator's inputs, one frame at a time, for ``frames`` frames of the probe's head motion.

    Made as :func:`~livepuppet.runtime.engines.auto.measure` makes them (the
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


def build_fast(folder: Path, data: dict[str, Any], source_xml: Path, progress=None) -> dict[str, Any]:
    """Quantise the generator of the model folder being built (``folder``, its manifest ``data``), in place.

    ``source_xml``: the float32 generator IR to quantise (the plain graph's).
    Adds ``models.generator.openvino_int8`` to ``data`` and returns what goes
    under the manifest's ``fast`` key: the plan, its error and the keypoint
    detector's precision. ``progress``: a rich Progress to report on.
    """
    import openvino as ov

    from livepuppet.conversion.int8_plan import Evaluator, make_plan
    from livepuppet.conversion.openvino_ir import DIRNAME
    from livepuppet.modelfolder.manifest import Manifest
    from livepuppet.runtime import cpu as cpumod
    from livepuppet.runtime.engines import auto
    from livepuppet.runtime.engines.openvino import PRECISIONS, OpenVINOEngine, default_precision

    start = time.perf_counter()
    report = _Reporter(progress)
    manifest = Manifest(Path(folder), data)
    exact = OpenVINOEngine(manifest, precision="fp32", cache=False)
    calibration = generator_inputs(exact, CALIBRATION_FRAMES, seed=3)
    probe_inputs = generator_inputs(exact, auto.PROBE_FRAMES, seed=0)
    reference, _, _ = auto.measure(exact)
    del exact
    float_precision = default_precision()
    core = ov.Core()
    original = core.read_model(str(source_xml))
    images = calibration_images(manifest.frame_size)
    report.start("calibrating", len(calibration) + len(images))
    quantized = quantize_convolutions(core.read_model(str(source_xml)), calibration, report.tick)
    kp_xml = Path(folder) / data["models"]["kp_detector"]["openvino"]
    kp_int8 = quantize_convolutions(core.read_model(str(kp_xml)), images, report.tick)
    evaluate = Evaluator(original, probe_inputs, PRECISIONS[float_precision], cpumod.usable_cores())
    plan, model = make_plan(quantized, original, evaluate, float_precision, report.step)
    for name, result in (("generator", model), ("kp_detector", kp_int8)):
        out = Path(folder) / DIRNAME / f"{name.replace('_', '-')}-int8.xml"
        ov.save_model(result, str(out), compress_to_fp16=False)
        data["models"][name]["openvino_int8"] = f"{DIRNAME}/{out.name}"
    kp_precisions = tuple(dict.fromkeys(("int8", float_precision, "fp32")))  # the cheapest first
    report.start("keypoint precision", len(kp_precisions))
    kp_errors = {}
    for kp in kp_precisions:
        report.tick()
        engine = OpenVINOEngine(manifest, precision="int8", kp_precision=kp, cache=False)
        kp_errors[kp] = auto.levels(auto.measure(engine)[0], reference)
        del engine
    within = [kp for kp, err in kp_errors.items() if auto.within_budget(*err)]
    kp_precision = within[0] if within else min(kp_errors, key=lambda kp: kp_errors[kp])
    report.done()
    mean, max_ = kp_errors[kp_precision]
    return {"calibration_frames": len(calibration), "float_precision": float_precision,
            "kp_precision": kp_precision, "kp_errors": {k: list(v) for k, v in kp_errors.items()},
            "mean_levels": mean, "max_levels": max_, "within_budget": auto.within_budget(mean, max_),
            "plan": plan.to_dict(), "seconds": time.perf_counter() - start}


def calibration_images(size: tuple[int, int], frames: int = CALIBRATION_FRAMES) -> list[dict[str, np.ndarray]]:
    """The keypoint detector's calibration inputs: the frames of the generator's head motion, one at a time."""
    from livepuppet.runtime import probe

    clip = probe.head_motion(size, frames + 1, seed=3)
    return [{"image": clip[i:i + 1]} for i in range(1, frames + 1)]


class _Reporter:
    """One progress-bar task for the whole of ``--fast``: calibration, the plan's measurements, the keypoints."""

    def __init__(self, progress):
        self.progress, self.phase = progress, ""
        self.task = progress.add_task("int8 generator", total=1, step="") if progress else None

    def start(self, phase: str, total: int) -> None:
        self.phase = phase
        if self.progress:
            self.progress.reset(self.task, total=total, step=phase[:24])

    def tick(self) -> None:
        if self.progress:
            self.progress.advance(self.task)

    def step(self, what: str, total: int) -> None:
        """make_plan's report, before each of its ``total`` measurements."""
        if self.phase != "plan":
            self.start("plan", total)
        if self.progress:
            self.progress.update(self.task, total=total, advance=1, step=what[:24])

    def done(self) -> None:
        if self.progress:
            self.progress.update(self.task, total=1, completed=1, step="done")
