"""The OpenVINO back end: a plan's files on oneDNN (or an Intel GPU), each at the precision the plan says.

OpenVINO reads both kinds of file a folder holds: a network's ``.tflite``
(the XNNPACK graph, which OpenVINO runs fastest without AMX; its tensors carry
TFLite's names, mapped back through the variant's ``tensors``) and an IR
``.xml`` (the plain-graph generator with bf16 weights that AMX runs fastest,
or the int8 generator of ``convert --fast``). Compiled models are cached in the
user's cache folder, keyed by the folder's content, so a second start takes a
fraction of the first and the model folder itself is never written to.
OpenVINO's ``infer`` releases the GIL, so the live loop's threads keep running.
"""

from __future__ import annotations

import numpy as np

from livepuppet import paths
from livepuppet.errors import LivepuppetError, ModelFolderError, one_line
from livepuppet.modelfolder.schema import ModelFolder
from livepuppet.runtime import cpu as cpumod
from livepuppet.runtime import weight_pages
from livepuppet.runtime.devices import openvino_devices
from livepuppet.runtime.engines.base import Engine, check_inputs
from livepuppet.runtime.plan import Plan, Step

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}  # livepuppet's precision names -> OpenVINO's
DEVICES = {"cpu": "CPU", "gpu": "GPU", "auto": "AUTO"}


devices = openvino_devices  # OpenVINO's devices here (livepuppet.runtime.devices)


class OpenVINOEngine(Engine):
    """Compiles each network of a plan with OpenVINO: latency hint, the plan's precision, ``threads`` cores."""

    name = "openvino"

    def __init__(self, folder: ModelFolder, plan: Plan, threads: int | None = None, cache: bool = True):
        super().__init__(folder, plan)
        try:
            import openvino as ov
        except ImportError:
            raise LivepuppetError("the openvino engine needs OpenVINO: pip install openvino") from None
        self.device = _device(plan.device, ov)
        self.threads = threads or cpumod.usable_cores()
        core = ov.Core()
        self.cache_dir = paths.user_cache("openvino", folder.content_key[:16]) if cache else None
        if self.cache_dir is not None:
            core.set_property({"CACHE_DIR": str(self.cache_dir)})  # compiled models: start-up in a fraction
        self._requests = {network: self._compile(core, network, step) for network, step in plan.steps.items()}

    def _compile(self, core, network: str, step: Step) -> tuple:
        path = self.folder.file(step.variant)
        try:
            compiled = core.compile_model(str(path), self.device, self._config(step.compute))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFolderError(f"OpenVINO cannot load {path} ({one_line(first, 160)}); convert again") from None
        for root in (self.folder.path, self.cache_dir):  # the weights it mapped were read once, into its own copies
            if root is not None:
                weight_pages.release(root)
        to_file = dict(step.variant.tensors)
        from_file = {v: k for k, v in to_file.items()}
        inputs = {from_file.get(p.get_any_name(), p.get_any_name()): p for p in compiled.inputs}
        shapes = {name: tuple(-1 if d.is_dynamic else d.get_length() for d in port.get_partial_shape())
                  for name, port in inputs.items()}
        check_inputs(self.folder, network, shapes, path)
        outputs = {from_file.get(p.get_any_name(), p.get_any_name()): p for p in compiled.outputs}
        scalars = {name for name, shape in shapes.items() if not shape}
        return compiled.create_infer_request(), inputs, outputs, scalars

    def _config(self, precision: str) -> dict:
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": HINTS[precision]}
        if self.device == "CPU":
            # No pinning: the live loop's capture, preview and sink threads share these cores.
            config.update({"INFERENCE_NUM_THREADS": self.threads, "ENABLE_CPU_PINNING": False})
        return config

    def _run(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request, ports, outputs, scalars = self._requests[model]
        request.infer({ports[k]: v.reshape(()) if k in scalars else v for k, v in inputs.items()})
        return {name: request.get_tensor(port).data.copy() for name, port in outputs.items()}

    def close(self) -> None:
        self._requests.clear()


def _device(device: str, ov) -> str:
    name = DEVICES.get(device.lower())
    if name is None:
        raise LivepuppetError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if name == "GPU" and not any(d.startswith("GPU") for d in ov.Core().available_devices):
        raise LivepuppetError("OpenVINO sees no GPU here (`livepuppet doctor` lists its devices); use --device cpu")
    return name


def cache_size() -> int:
    """Bytes of compiled models in the user's cache folder (``doctor``)."""
    root = paths.cache_dir() / "openvino"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0


__all__ = ["OpenVINOEngine", "devices", "HINTS", "DEVICES", "cache_size"]
