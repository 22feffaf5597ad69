"""One place that decides what runs: from a model folder, this machine and the user's flags to a plan.

A :class:`Plan` names, for each of the four networks, the folder's variant to
open (back end, graph, stored precision) and the precision to compute it at.
:func:`candidates` lists every plan this machine can run for a request, the
float32 reference first; ``--engine auto`` times them and keeps the fastest
within the fidelity budget (:mod:`livepuppet.runtime.timing`); an explicit
``--engine`` runs :func:`plan`, the first candidate of that back end that is
not the float32 reference unless ``--exact`` asks for it. Engines, auto,
bench, web and quantize all call here; no other module chooses a precision.

Per back end, the choices (measured: benchmarks/README.md):

- LiteRT runs the ``.tflite`` files at their stored precision.
- OpenVINO computes at the CPU's reduced precision (:meth:`CPU.fast_precision`:
  bf16 with AMX or AVX512-BF16, fp16 on ARM) except keypoint processing
  (always fp32) and, in one candidate, the keypoint detector (its soft-argmax
  magnifies rounding tenfold). With AMX the generator runs the plain graph,
  stored with bf16 weights (oneDNN's own kernels beat XNNPACK's rewrites
  there); elsewhere it reads the ``.tflite`` of the XNNPACK graph. Where the
  folder has ``convert --fast``'s int8 generator and the CPU int8 dot products
  (AMX-INT8, VNNI), it is a candidate too, its float layers at the reduced
  precision.
- TensorFlow (SavedModel) runs fp32, on a GPU where TensorFlow sees one.
"""

from __future__ import annotations

from importlib import metadata
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

from livepuppet.errors import LivepuppetError, ModelFolderError
from livepuppet.modelfolder.schema import NETWORKS, ModelFolder, Variant
from livepuppet.runtime import cpu as cpumod

ENGINES = ("auto", "tflite", "openvino", "savedmodel", "onnx")
RUNTIME_MODULES = {"tflite": "ai_edge_litert", "openvino": "openvino", "savedmodel": "tensorflow",
                   "onnx": "onnxruntime"}
OPENVINO_DEVICES = ("cpu", "gpu", "auto")  # the other --device names are ONNX Runtime's providers
# back end -> the distributions that provide it (read from package metadata: nothing is imported)
RUNTIME_PACKAGES = {"tflite": ("ai-edge-litert", "tensorflow", "tensorflow-cpu"), "openvino": ("openvino",),
                    "savedmodel": ("tensorflow", "tensorflow-cpu"),
                    "onnx": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino")}
ALWAYS_FP32 = ("kp_processing",)  # a 2x2 inverse per keypoint: tiny, and every later stage inherits it


@dataclass(frozen=True)
class Request:
    """What the user asked for (``--engine``, ``--exact``, ``--fast``, ``--device``)."""

    engine: str = "auto"
    exact: bool = False
    fast: bool = False
    device: str = "cpu"


@dataclass(frozen=True)
class Machine:
    """What this machine offers a plan: its CPU and the runtimes installed."""

    cpu: cpumod.CPU
    runtimes: frozenset[str]

    @classmethod
    def current(cls) -> "Machine":
        return cls(cpumod.current(), frozenset(e for e, packages in RUNTIME_PACKAGES.items()
                                               if any(map(_installed, packages))))


def _installed(package: str) -> bool:
    """Whether a distribution is installed, from its metadata: no import (TensorFlow takes seconds)."""
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class Step:
    variant: Variant
    compute: str  # the precision it computes at (an int8 variant: its float layers')

    @property
    def precision(self) -> str:
        """int8 where the variant is int8, else what it computes at."""
        return "int8" if self.variant.precision == "int8" else self.compute


@dataclass(frozen=True)
class Plan:
    engine: str
    steps: Mapping[str, Step]
    device: str = "cpu"
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def precision(self) -> str:
        """The generator's: int8 where its variant is int8, else what it computes at."""
        return self.steps["generator"].precision

    @property
    def kp_precision(self) -> str:
        return self.steps["kp_detector"].precision

    @property
    def exact(self) -> bool:
        return all(s.compute == "fp32" and s.variant.precision == "fp32" for s in self.steps.values())

    @property
    def key(self) -> str:
        """What identifies the plan across runs (auto's cache): each network's variant and compute precision."""
        steps = ";".join(f"{n}={'/'.join(s.variant.key[1:])}@{s.compute}" for n, s in sorted(self.steps.items()))
        return f"{self.engine}|{self.device}|{steps}"

    @property
    def label(self) -> str:
        """``tflite fp32``, ``openvino bf16 (keypoints fp32)``, ``openvino int8 (keypoints bf16)``."""
        kp = "" if self.kp_precision == self.precision else f" (keypoints {self.kp_precision})"
        where = "" if self.device == "cpu" else f" on {self.device}"
        return f"{self.engine} {self.precision}{kp}{where}"


def _uniform(folder: ModelFolder, engine: str, backend: str, compute: Callable[[Variant], str],
             device: str = "cpu", graph: str | None = None) -> Plan | None:
    steps = {}
    for network in NETWORKS:
        variant = folder.find(network, backend, graph) or folder.find(network, backend)
        if variant is None:
            return None
        steps[network] = Step(variant, compute(variant))
    return Plan(engine, steps, device)


def _tflite(folder: ModelFolder, machine: Machine, request: Request) -> list[Plan]:
    plan = _uniform(folder, "tflite", "tflite", lambda v: v.precision)
    return [plan] if plan else []


def _savedmodel(folder: ModelFolder, machine: Machine, request: Request) -> list[Plan]:
    plan = _uniform(folder, "savedmodel", "savedmodel", lambda v: "fp32")  # TensorFlow places it (a GPU if any)
    return [plan] if plan else []


def _onnx(folder: ModelFolder, machine: Machine, request: Request) -> list[Plan]:
    """Each provider ``--device`` asks for (engines.onnx.requested), float32 and, unless exact, its reduced
    precisions (TensorRT fp16, CUDA tf32)."""
    from livepuppet.runtime.devices import requested

    plans = []
    for provider in requested(request.device):
        base = _uniform(folder, "onnx", "onnx", lambda v: "fp32", device=provider.name)
        if base is None:
            return []
        plans.append(base)
        if not request.exact:
            plans += [_with(base, {n: precision for n in NETWORKS}) for precision in provider.precisions[1:]]
    return plans


def _openvino_takes(device: str) -> bool:
    """OpenVINO runs on ``device``: its own names only, and 'gpu' where it sees one (an NVIDIA GPU is ONNX
    Runtime's)."""
    if device != "gpu":
        return device in OPENVINO_DEVICES
    from livepuppet.runtime.devices import openvino_devices

    return any(d.startswith("GPU") for d in openvino_devices())


def _openvino(folder: ModelFolder, machine: Machine, request: Request) -> list[Plan]:
    """fp32 first; then, unless exact, the CPU's reduced precision with the keypoints at fp32 and at it;
    then the int8 generator where the folder has one."""
    if not _openvino_takes(request.device):
        return []
    exact = _uniform(folder, "openvino", "openvino", lambda v: "fp32", request.device, graph="xnnpack")
    if exact is None or not all(s.variant.precision == "fp32" for s in exact.steps.values()):
        return []
    plans = [exact]
    fast = "fp16" if request.device == "gpu" else machine.cpu.fast_precision()  # Intel GPUs compute fp16
    if request.exact:
        return plans
    if fast == "fp32":  # no reduced float here; int8 (VNNI without bf16) computes its float layers at fp32
        return plans + _int8(folder, machine, exact, fast)
    reduced = _with(exact, {n: fast for n in NETWORKS if n not in ALWAYS_FP32 and n != "kp_detector"})
    if machine.cpu.amx and (plain := folder.find("generator", "openvino", "plain", "bf16")) and fast == "bf16":
        reduced = _replace_step(reduced, "generator", Step(plain, "bf16"))
    plans += [reduced, _with(reduced, {"kp_detector": fast})]
    return plans + _int8(folder, machine, plans[-1], fast)


def _int8(folder: ModelFolder, machine: Machine, reduced: Plan, fast: str) -> list[Plan]:
    """The int8 generator where the folder has one and the CPU has int8 dot products (without them int8
    runs slower than float), with the keypoint detector at int8 (``convert --fast`` writes that variant only
    where it measured it within the budget), at ``fast``, and at fp32; the first is what ``--fast`` runs."""
    generator = folder.find("generator", "openvino", precision="int8")
    if generator is None or not machine.cpu.int8:
        return []
    int8 = _replace_step(reduced, "generator", Step(generator, fast))
    keypoints = folder.find("kp_detector", "openvino", precision="int8")
    first = [_replace_step(int8, "kp_detector", Step(keypoints, fast))] if keypoints else []
    found = first + [int8, _with(int8, {"kp_detector": "fp32"})]
    return list({p.key: p for p in found}.values())  # where the float precision is fp32, two are one


def _with(plan: Plan, compute: Mapping[str, str]) -> Plan:
    return replace(plan, steps={n: Step(s.variant, compute.get(n, s.compute)) for n, s in plan.steps.items()})


def _replace_step(plan: Plan, network: str, step: Step) -> Plan:
    return replace(plan, steps={**plan.steps, network: step})


PLANNERS: dict[str, Callable[[ModelFolder, Machine, Request], list[Plan]]] = {
    "tflite": _tflite, "openvino": _openvino, "savedmodel": _savedmodel, "onnx": _onnx,
}


def candidates(folder: ModelFolder, machine: Machine, request: Request) -> list[Plan]:
    """Every plan that can run ``folder`` here for ``request``; the float32 reference first.

    With ``request.engine == 'auto'`` every installed back end contributes
    (SavedModel only where TensorFlow is the only runtime, since it is the
    slowest on a CPU); otherwise only the one asked for."""
    engines = [request.engine] if request.engine != "auto" else [e for e in PLANNERS if e != "savedmodel"]
    plans = [p for e in engines if e in machine.runtimes for p in PLANNERS[e](folder, machine, request)]
    if request.exact:
        plans = [p for p in plans if p.exact]
    if request.fast:
        plans = [p for p in plans if p.precision == "int8"]
    plans.sort(key=lambda p: (not p.exact, p.engine != "tflite"))
    return plans


def plan(folder: ModelFolder, machine: Machine, request: Request) -> Plan:
    """The plan for an explicit ``--engine``: its first candidate, preferring reduced precision unless exact.

    Every way this can fail is a one-line error that says what to do."""
    if request.exact and request.fast:
        raise LivepuppetError("--fast (reduced precision) and --exact (float32) contradict each other; pick one")
    if request.fast and not machine.cpu.int8:
        raise LivepuppetError("--fast runs int8, and this CPU has no int8 dot products (AMX-INT8, AVX512-VNNI or "
                              "AVX-VNNI): it would be slower than the default here; run without --fast")
    if request.engine not in PLANNERS:
        raise LivepuppetError(f"unknown engine {request.engine!r}; choose one of {', '.join(ENGINES)}")
    if request.engine == "openvino" and not _openvino_takes(request.device):
        raise LivepuppetError(f"OpenVINO sees no GPU here (`livepuppet doctor` lists its devices); use --device cpu"
                              if request.device == "gpu" else f"--device {request.device} is an ONNX Runtime "
                              "provider; OpenVINO takes cpu, gpu or auto")
    if request.engine not in machine.runtimes:
        module = RUNTIME_MODULES[request.engine]
        raise LivepuppetError(f"the {request.engine} engine needs {module}, which is not installed here: "
                              f"pip install {module.replace('_', '-')}")
    found = candidates(folder, machine, request)
    if not found:
        raise ModelFolderError(_missing(folder, request))
    reduced = [p for p in found if not p.exact]
    return found[0] if request.exact or not reduced else reduced[0]


def _missing(folder: ModelFolder, request: Request) -> str:
    if request.engine == "onnx" and folder.find("generator", "onnx"):
        from livepuppet.runtime.devices import INSTALL, available

        if not available():
            return f"the onnx engine needs ONNX Runtime ({INSTALL})"
        return f"ONNX Runtime here offers no provider for --device {request.device} (`livepuppet doctor` lists them)"
    if request.fast:
        return (f"{folder.path} has no int8 generator; make one with "
                f"`livepuppet convert CHECKPOINT --out {folder.path} --fast`")
    if request.exact and folder.find("generator", request.engine):
        return (f"{folder.path} holds no float32 models for {request.engine}; --exact needs an fp32 folder "
                "(convert again with --precision fp32)")
    return (f"{folder.path} has no {request.engine} models; add them with `livepuppet convert CHECKPOINT "
            f"--out {folder.path} --targets {request.engine}`, or choose another --engine")
