"""The OpenVINO back end: the model folder's IR on oneDNN, at the precision that fits the CPU.

bfloat16 where the CPU computes it natively (AMX, AVX512-BF16), float32
elsewhere on x86, float16 on ARM; ``precision`` overrides. ``precision="int8"``
runs the generator ``convert --fast`` quantised (:mod:`livepuppet.conversion.quantize`),
its float parts at the CPU's precision. Keypoint processing
(a 2x2 inverse per keypoint, tiny) always runs at float32; the keypoint
detector runs at ``kp_precision``, because every later stage inherits its
keypoints and the soft-argmax at temperature 0.1 magnifies rounding tenfold.
OpenVINO's ``infer`` releases the GIL, so the live loop's threads keep running.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from livepuppet.runtime import cpu as cpumod
from livepuppet.runtime import weight_pages
from livepuppet.errors import LivepuppetError, ModelFolderError
from livepuppet.modelfolder.manifest import MODEL_NAMES, Manifest
from livepuppet.runtime.engines.base import Engine, writable_cache

PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}  # livepuppet's names -> OpenVINO's hints
DEVICES = {"cpu": "CPU", "gpu": "GPU", "auto": "AUTO"}
ALWAYS_FP32 = ("kp_processing",)


def default_precision(cpu: cpumod.CPU | None = None) -> str:
    """fp32, bf16 or fp16: what OpenVINO should compute at on ``cpu`` (this one by default)."""
    return (cpu or cpumod.current()).fast_precision()


def devices() -> list[str]:
    """OpenVINO's devices here (``CPU``, ``GPU``, ``GPU.1``...), or [] without OpenVINO."""
    try:
        import openvino as ov
    except ImportError:
        return []
    return list(ov.Core().available_devices)


class OpenVINOEngine(Engine):
    """Runs the four IR models of a model folder with OpenVINO, all cores, latency hint."""

    name = "openvino"

    def __init__(self, manifest: Manifest, threads: int | None = None, precision: str | None = None,
                 kp_precision: str = "fp32", device: str = "cpu", cache: bool = True):
        super().__init__(manifest)
        try:
            import openvino as ov
        except ImportError:
            raise LivepuppetError("the openvino engine needs OpenVINO: pip install openvino") from None
        self.int8 = precision == "int8"
        self.precision = "int8" if self.int8 else precision or default_precision()
        self.kp_precision = kp_precision
        self.device = _device(device, ov)
        self.threads = threads or cpumod.usable_cores()
        core = ov.Core()
        cache = _cache_dir(manifest.folder) if cache else None
        if cache is not None:
            core.set_property({"CACHE_DIR": str(cache)})  # compiled models: start-up in a fraction of the time
        self._requests = {}
        for model in MODEL_NAMES:
            precision = ("fp32" if model in ALWAYS_FP32 else self.kp_precision if model == "kp_detector"
                         else default_precision() if self.int8 else self.precision)
            path = _ir_path(manifest, model, _ir_kind(manifest, model, precision, self.int8))
            try:
                compiled = core.compile_model(str(path), self.device, self._config(precision))
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise ModelFolderError(f"OpenVINO cannot load {path} ({first}); convert again") from None
            weight_pages.release(manifest.folder)  # the weights it mapped were read once, into its own copies
            self._requests[model] = (compiled.create_infer_request(), [p.get_any_name() for p in compiled.outputs],
                                     {p.get_any_name(): tuple(p.get_partial_shape().to_shape()) for p in compiled.inputs
                                      if p.get_partial_shape().rank.get_length() == 0})

    @property
    def label(self) -> str:
        kp = "" if self.kp_precision == self.precision else f", keypoints {self.kp_precision}"
        return f"openvino {self.precision}{kp} on {self.device}"

    def _config(self, precision: str) -> dict:
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": PRECISIONS[precision]}
        if self.device == "CPU":
            # No pinning: the live loop's capture, preview and sink threads share these cores.
            config.update({"INFERENCE_NUM_THREADS": self.threads, "ENABLE_CPU_PINNING": False})
        return config

    def _run(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request, outputs, scalars = self._requests[model]
        request.infer({k: v.reshape(()) if k in scalars else v for k, v in inputs.items()})
        return {name: request.get_tensor(name).data.copy() for name in outputs}


def _ir_kind(manifest: Manifest, model: str, precision: str, int8: bool) -> str:
    """Which of a model's IR files to compile: the int8 generator, the one with bf16 weights, or float32.

    The bf16-weights file computes the same to the bit at bf16, from half the
    memory; folders converted on a CPU without bf16 (or before it) lack it."""
    if int8 and model == "generator":
        return "openvino_int8"
    if precision == "bf16" and manifest.model(model).get("openvino_bf16"):
        return "openvino_bf16"
    return "openvino"


def _ir_path(manifest: Manifest, model: str, kind: str = "openvino") -> Path:
    entry = manifest.model(model).get(kind)
    if kind == "openvino_int8" and not entry:
        raise ModelFolderError(f"{manifest.folder} has no int8 generator; make one with "
                               f"`livepuppet convert CHECKPOINT --out {manifest.folder} --fast`")
    if not entry or not (manifest.folder / entry).is_file():
        raise ModelFolderError(
            f"{manifest.folder} has no OpenVINO models (converted by an older livepuppet or without OpenVINO); "
            f"add them with `livepuppet convert CHECKPOINT --out {manifest.folder}`, or use --engine tflite")
    return manifest.folder / entry


def _device(device: str, ov) -> str:
    name = DEVICES.get(device.lower())
    if name is None:
        raise LivepuppetError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if name == "GPU" and not any(d.startswith("GPU") for d in ov.Core().available_devices):
        raise LivepuppetError("OpenVINO sees no GPU here (`livepuppet doctor` lists its devices); use --device cpu")
    return name


def _cache_dir(folder: Path) -> Path | None:
    """``.openvino-cache`` in the model folder when it is writable, else no cache.

    A compiled blob per model and precision (vox-256: about 140 MB for a bf16
    generator) halves the start-up of the next run; ``auto`` compiles the
    candidates it only measures without it, so only the chosen one is kept."""
    return writable_cache(folder, ".openvino-cache")
