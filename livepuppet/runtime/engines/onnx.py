"""The ONNX Runtime back end: the model folder's ONNX models on the best execution provider installed.

Which providers exist depends on the onnxruntime build (README, "GPUs"):
``onnxruntime`` (CPU; CoreML on macOS), ``onnxruntime-gpu`` (CUDA, and TensorRT
where its libraries are installed), ``onnxruntime-directml`` (Windows, any
DirectX 12 GPU), ``onnxruntime-openvino``. ``--device`` picks: ``cpu``, ``gpu``
(the first GPU provider of :data:`PROVIDERS`), ``auto`` (the first provider of
all), or a provider by name. The nodes a provider cannot take run on the ones
behind it, down to the CPU provider (ONNX Runtime's own partitioning), so a
timing includes them; after each model's first call the engine knows which
provider ran which op (:attr:`ONNXEngine.placement`) and records it in the
user's cache folder, where ``doctor`` reads it. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from livepuppet import paths
from livepuppet.errors import LivepuppetError, ModelFolderError, one_line
from livepuppet.modelfolder.schema import NETWORKS, ModelFolder
from livepuppet.runtime import cpu as cpumod
from livepuppet.runtime.cache import read_record, update_record
from livepuppet.runtime.engines.base import Engine, check_inputs
from livepuppet.runtime.devices import BY_NAME, BY_ORT, DEVICES, INSTALL, PROVIDERS, Provider, available, onnxruntime, \
    requested, resolve
from livepuppet.runtime.plan import Plan


def provider_list(provider: Provider, precision: str, cache: Path | None) -> list:
    """What to hand ONNX Runtime: ``provider`` with its options, then those behind it, then the CPU."""
    options = {
        "tensorrt": {"trt_fp16_enable": precision == "fp16", "trt_engine_cache_enable": cache is not None,
                     "trt_timing_cache_enable": cache is not None, **_cache_options(cache, "trt")},
        "cuda": {"use_tf32": int(precision == "tf32")},
        "migraphx": {"migraphx_fp16_enable": int(precision == "fp16")},
        "coreml": {"ModelFormat": "MLProgram", **({"ModelCacheDirectory": str(cache)} if cache else {})},
    }.get(provider.name, {})
    chain = [(provider.ort, options)] + [(name, {}) for name in provider.behind]
    return chain + ([] if provider.name == "cpu" else [("CPUExecutionProvider", {})])


def _cache_options(cache: Path | None, prefix: str) -> dict:
    return {f"{prefix}_engine_cache_path": str(cache), f"{prefix}_timing_cache_path": str(cache)} if cache else {}


def session(path: Path, providers: list, threads: int | None = None, profile: bool = False):
    """An InferenceSession of ``path``, its logging off; ``profile``: record where each op runs."""
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads or 0
    if any(name == "DmlExecutionProvider" for name, _ in providers):
        options.enable_mem_pattern = False  # DirectML's requirements
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"livepuppet-onnx-{os.getpid()}")
    return ort.InferenceSession(str(path), options, providers=[name for name, _ in providers],
                                provider_options=[opts for _, opts in providers])


def feed(sess, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Named float32 inputs, a 0-d switch given the (1,) shape the portable graph declares for it."""
    ranks = {i.name: len(i.shape) for i in sess.get_inputs()}
    return {k: np.asarray(v, np.float32).reshape([1] * ranks[k]) if np.ndim(v) != ranks[k] else v
            for k, v in inputs.items()}


def placement_of(sess) -> dict[str, dict[str, int]]:
    """Stop ``sess``'s profiling and count its kernels: {provider: {op type: kernels run}}."""
    path = Path(sess.end_profiling())
    try:
        events = json.loads(path.read_text())
    except (OSError, ValueError):
        events = []
    finally:
        path.unlink(missing_ok=True)
    counts: dict[str, Counter] = {}
    for event in events:
        args = event.get("args", {}) if isinstance(event, dict) else {}
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time") and "provider" in args:
            label = BY_ORT.get(args["provider"]).label if args["provider"] in BY_ORT else args["provider"]
            counts.setdefault(label, Counter())[args.get("op_name", "?")] += 1
    return {label: dict(ops) for label, ops in counts.items()}


class ONNXEngine(Engine):
    """Runs a plan's four ONNX models with ONNX Runtime on one provider (and its fallbacks)."""

    name = "onnx"

    def __init__(self, folder: ModelFolder, plan: Plan, threads: int | None = None, cache: bool = True):
        super().__init__(folder, plan)
        self.provider = resolve(plan.device)
        self.precision = plan.steps["generator"].compute
        if self.precision not in self.provider.precisions:
            raise LivepuppetError(f"the {self.provider.label} provider computes at "
                                  f"{' or '.join(self.provider.precisions)}, not {self.precision}")
        self.threads = threads or cpumod.usable_cores()
        keep = paths.user_cache("onnx", folder.content_key[:16]) if cache and self.provider.compiles else None
        providers = provider_list(self.provider, self.precision, keep)
        self.placement: dict[str, dict[str, dict[str, int]]] = {}
        self._sessions = {network: self._open(network, step.variant, providers)
                          for network, step in plan.steps.items()}

    def _open(self, network: str, variant, providers: list) -> tuple:
        path = self.folder.file(variant)
        try:
            sess = session(path, providers, self.threads, profile=True)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a bad or truncated file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFolderError(f"ONNX Runtime cannot load {path} ({one_line(first, 160)}); convert again") from None
        shapes = {i.name: tuple(d if isinstance(d, int) else -1 for d in i.shape) for i in sess.get_inputs()}
        check_inputs(self.folder, network, shapes, path)
        return sess, [o.name for o in sess.get_outputs()]

    def _run(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess, names = self._sessions[model]
        out = dict(zip(names, sess.run(names, feed(sess, inputs))))
        if model not in self.placement:  # the first call: where each op ran, then no more profiling
            self.placement[model] = placement_of(sess)
            if len(self.placement) == len(NETWORKS):
                record_placement(self.folder, self.provider.name, self.placement)
        return out

    def close(self) -> None:
        self._sessions.clear()


def _placement_file(folder: ModelFolder) -> Path | None:
    root = paths.user_cache("onnx")
    return None if root is None else root / f"placement-{folder.content_key[:16]}.json"


def record_placement(folder: ModelFolder, provider: str, placement: dict) -> None:
    """Keep where each model's ops ran on ``provider``, in the user's cache folder."""
    update_record(_placement_file(folder), provider, placement)


def read_placement(folder: ModelFolder) -> dict:
    return read_record(_placement_file(folder))


def describe_placement(placement: dict[str, dict[str, int]]) -> str:
    """{provider: {op: kernels}} -> 'all 120 kernels on CUDA' or '110 on CoreML; 10 on CPU (GridSample 2, ...)'."""
    totals = {p: sum(ops.values()) for p, ops in placement.items()}
    if len(totals) == 1:
        (only, n), = totals.items()
        return f"all {n} kernels on {only}"
    parts = []
    for p, n in sorted(totals.items(), key=lambda kv: (kv[0] == "CPU", -kv[1])):
        ops = ", ".join(f"{op} {k}" for op, k in sorted(placement[p].items(), key=lambda kv: -kv[1])[:4])
        parts.append(f"{n} on {p}" + (f" ({ops})" if p == "CPU" else ""))
    return "; ".join(parts)
