"""What this machine's runtimes can run on: OpenVINO's devices, and ONNX Runtime's execution providers.

Read by :mod:`livepuppet.runtime.plan` (what ``--device`` offers ``auto``), the
engines, and ``doctor``; it opens no model.
"""

from __future__ import annotations

from dataclasses import dataclass

from livepuppet.errors import LivepuppetError

INSTALL = "pip install 'livepuppet[onnx]'; GPU builds: see the README"


def openvino_devices() -> list[str]:
    """OpenVINO's devices here (``CPU``, ``GPU``, ``GPU.1``...), or [] without OpenVINO."""
    try:
        import openvino as ov
    except ImportError:
        return []
    return list(ov.Core().available_devices)


@dataclass(frozen=True)
class Provider:
    name: str  # livepuppet's, as --device takes it
    ort: str  # ONNX Runtime's
    label: str
    gpu: bool
    precisions: tuple[str, ...]  # what it can compute at here; the first is float32
    behind: tuple[str, ...] = ()  # providers (ONNX Runtime's names) that take what it cannot, before the CPU
    compiles: bool = False  # builds engines worth keeping between runs (in the user's cache folder)


# Preference order: the first installed is what --device auto runs (and gpu, among the GPU ones).
PROVIDERS = (
    Provider("tensorrt", "TensorrtExecutionProvider", "TensorRT", True, ("fp32", "fp16"), ("CUDAExecutionProvider",),
             compiles=True),
    Provider("cuda", "CUDAExecutionProvider", "CUDA", True, ("fp32", "tf32")),
    Provider("migraphx", "MIGraphXExecutionProvider", "MIGraphX", True, ("fp32", "fp16")),
    Provider("directml", "DmlExecutionProvider", "DirectML", True, ("fp32",)),
    Provider("coreml", "CoreMLExecutionProvider", "CoreML", True, ("fp32",), compiles=True),
    Provider("openvino", "OpenVINOExecutionProvider", "OpenVINO", False, ("fp32",)),
    Provider("cpu", "CPUExecutionProvider", "CPU", False, ("fp32",)),
)
BY_NAME = {p.name: p for p in PROVIDERS}
BY_ORT = {p.ort: p for p in PROVIDERS}
DEVICES = ("cpu", "gpu", "auto", *(p.name for p in PROVIDERS if p.name not in ("cpu", "openvino")))


def onnxruntime():
    """ONNX Runtime, its own log quiet; a one-line error saying how to install it where it is not."""
    try:
        import onnxruntime
    except ImportError:
        raise LivepuppetError(f"the onnx engine needs ONNX Runtime ({INSTALL})") from None
    onnxruntime.set_default_logger_severity(3)  # its warnings are for developers, not users
    return onnxruntime


def available() -> list[Provider]:
    """The providers this onnxruntime build offers, in preference order; [] without onnxruntime."""
    try:
        found = set(onnxruntime().get_available_providers())
    except LivepuppetError:
        return []
    return [p for p in PROVIDERS if p.ort in found]


def requested(device: str, offered: list[Provider] | None = None) -> list[Provider]:
    """The providers ``--device`` offers ``auto`` to time: cpu; every GPU one (gpu); every one (auto); or one."""
    offered = available() if offered is None else offered
    if device == "cpu":
        return [BY_NAME["cpu"]] if BY_NAME["cpu"] in offered else []
    if device in ("gpu", "auto"):
        return [p for p in offered if p.gpu or device == "auto"]
    return [p for p in offered if p.name == device]


def resolve(device: str, offered: list[Provider] | None = None) -> Provider:
    """``--device`` -> the provider that runs: cpu, gpu (the best GPU one), auto (the best), or one by name."""
    offered = available() if offered is None else offered
    names = ", ".join(p.name for p in offered) or "none"
    if device == "cpu":
        return BY_NAME["cpu"]
    if device in ("gpu", "auto"):
        found = [p for p in offered if p.gpu or device == "auto"]
        if found:
            return found[0]
        raise LivepuppetError(f"ONNX Runtime here has no GPU provider (it offers: {names}); install its GPU build "
                              "for your GPU (README, 'GPUs') or use --device cpu")
    if device not in BY_NAME:
        raise LivepuppetError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if BY_NAME[device] not in offered:
        raise LivepuppetError(f"this onnxruntime build has no {BY_NAME[device].label} provider (it offers: {names}); "
                              "install the build for it (README, 'GPUs') or choose another --device")
    return BY_NAME[device]


