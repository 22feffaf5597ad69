"""``--engine auto``: the fastest engine and precision here whose output stays within the fidelity budget.

Each candidate animates the bundled portrait's synthetic head motion
(:mod:`livepuppet.runtime.probe`); its frames are compared with float32's and timed.
The fastest within :data:`BUDGET` wins. The choice is measured once per model
folder and machine, then cached in the folder (``.engine-choice.json``) and
said at start. LiteRT float32 is always a candidate where the folder is
float32, so auto is never slower than it.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from rich.console import Console

from livepuppet.runtime import cpu as cpumod
from livepuppet.modelfolder.manifest import Manifest
from livepuppet.runtime.engines.base import Engine

BUDGET = {"max": 3.0, "mean": 0.3}  # 8-bit levels against float32, on the probe's frames
OPENVINO_DEVICES = ("cpu", "gpu", "auto")  # the others name ONNX Runtime providers
# onnxruntime's builds (one is installed): a new one may offer other providers
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino")
CACHE = ".engine-choice.json"
PROBE_FRAMES = 6
console = Console()  # stdout: a status line, kept apart from the one-line errors on stderr


@dataclass(frozen=True)
class Candidate:
    engine: str
    precision: str  # what the generator and source encoder compute at
    kp_precision: str  # the keypoint detector's
    provider: str = ""  # the onnx engine's execution provider (engines.onnx.PROVIDERS)

    @property
    def label(self) -> str:
        kp = "" if self.kp_precision == self.precision else f" (keypoints {self.kp_precision})"
        where = f" on {onnx_provider(self.provider).label}" if self.provider else ""
        return f"{self.engine} {self.precision}{kp}{where}"


@dataclass
class Measured:
    candidate: Candidate
    frame_ms: float
    generator_ms: float
    mean: float  # levels against float32
    max: float

    @property
    def within_budget(self) -> bool:
        return within_budget(self.mean, self.max)


def levels(frames: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Mean and max absolute difference in 8-bit levels (frames in [0, 1])."""
    diff = np.abs(frames - reference) * 255
    return float(diff.mean()), float(diff.max())


def within_budget(mean: float, max_: float) -> bool:
    return mean <= BUDGET["mean"] and max_ <= BUDGET["max"]


def candidates(manifest: Manifest, cpu: cpumod.CPU, exact: bool = False, device: str = "cpu") -> list[Candidate]:
    """What may run this folder here, the float32 reference first. ``device``: OpenVINO's device, or where
    ONNX Runtime runs (cpu; gpu: every GPU provider installed; auto: every provider; or one by name)."""
    out = []
    if manifest.precision == "fp32" or not exact:
        out.append(Candidate("tflite", manifest.precision, "fp32" if manifest.precision == "int8"
                             else manifest.precision))
    for provider in _onnx_providers(manifest, device):
        out += [Candidate("onnx", p, p, provider.name) for p in provider.precisions if p == "fp32" or not exact]
    if _has_openvino(manifest) and _openvino_takes(device):
        out.append(Candidate("openvino", "fp32", "fp32"))
        fast = cpu.fast_precision()
        if not exact and fast != "fp32":
            out += [Candidate("openvino", fast, "fp32"), Candidate("openvino", fast, fast)]
        if not exact and manifest.model("generator").get("openvino_int8"):
            out.append(Candidate("openvino", "int8", fast))
    out.sort(key=lambda c: (c.precision != "fp32" or c.kp_precision != "fp32", c.engine != "tflite"))
    return out


def _onnx_providers(manifest: Manifest, device: str) -> list:
    """The ONNX Runtime providers ``device`` asks for, where the folder has ONNX models and onnxruntime is installed."""
    from livepuppet.runtime.engines import onnx

    offered = onnx.available()
    if not offered or not all(manifest.model(m).get("onnx") for m in manifest.data.get("models", {})):
        return []
    if device == "cpu":
        return [onnx.BY_NAME["cpu"]]
    if device in ("gpu", "auto"):
        return [p for p in offered if p.gpu or device == "auto"]
    return [p for p in offered if p.name == device]


def _openvino_takes(device: str) -> bool:
    """OpenVINO runs on ``device``: its names only, and 'gpu' where it sees one (an NVIDIA GPU is ONNX Runtime's)."""
    if device != "gpu":
        return device in OPENVINO_DEVICES
    from livepuppet.runtime.engines.openvino import devices

    return any(d.startswith("GPU") for d in devices())


def onnx_provider(name: str):
    from livepuppet.runtime.engines.onnx import BY_NAME

    return BY_NAME[name]


def _has_openvino(manifest: Manifest) -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return all(manifest.model(m).get("openvino") for m in manifest.data.get("models", {}))


def open_candidate(manifest: Manifest, candidate: Candidate, threads: int | None, device: str,
                   cache: bool = True) -> Engine:
    """``cache``: keep OpenVINO's compiled models in the folder (only for the engine that will run)."""
    if candidate.engine == "tflite":
        from livepuppet.runtime.engines.tflite import TFLiteEngine

        return TFLiteEngine(manifest, threads=threads)
    if candidate.engine == "onnx":
        from livepuppet.runtime.engines.onnx import ONNXEngine

        return ONNXEngine(manifest, threads=threads, device=candidate.provider, precision=candidate.precision,
                          cache=cache)
    from livepuppet.runtime.engines.openvino import OpenVINOEngine

    return OpenVINOEngine(manifest, threads=threads, precision=candidate.precision,
                          kp_precision=candidate.kp_precision, device=device, cache=cache)


def measure(engine: Engine, frames: int = PROBE_FRAMES) -> tuple[np.ndarray, float, float]:
    """Animate the probe clip; (predictions, median ms a frame, median generator ms)."""
    from livepuppet.runtime.pipeline import Pipeline
    from livepuppet.runtime import probe

    size = engine.frame_size
    pipeline = Pipeline(engine)
    pipeline.set_source(probe.portrait(size))
    clip = probe.head_motion(size, frames + 1)
    pipeline.animate(clip[:1])  # calibration frame, and warm-up
    outputs, frame_ms, generator_ms = [], [], []
    for frame in clip[1:]:
        start = time.perf_counter()
        outputs.append(pipeline.animate(frame[None])[0])
        frame_ms.append((time.perf_counter() - start) * 1e3)
        generator_ms.append(pipeline.timings["generate"])
    return np.stack(outputs), statistics.median(frame_ms), statistics.median(generator_ms)


def choose(manifest: Manifest, threads: int | None = None, device: str = "cpu", exact: bool = False
           ) -> tuple[list[Measured], Measured]:
    """Measure every candidate; returns them all (fastest first) and the winner.

    The float32 reference comes first and is within the budget by definition,
    so there always is a winner. One engine is open at a time: a vox-256
    engine holds several hundred MB, and a first run must not hold two."""
    results, reference = [], None
    for candidate in candidates(manifest, cpumod.current(), exact, device):
        engine = open_candidate(manifest, candidate, threads, device, cache=False)
        frames, frame_ms, generator_ms = measure(engine)
        del engine
        if reference is None:
            reference = frames
        results.append(Measured(candidate, frame_ms, generator_ms, *levels(frames, reference)))
    winner = min((r for r in results if r.within_budget), key=lambda r: r.frame_ms)
    results.sort(key=lambda r: r.frame_ms)
    return results, winner


def open_auto(manifest: Manifest, threads: int | None = None, device: str = "cpu", exact: bool = False) -> Engine:
    """The engine auto picks for this folder and machine, measured on first use, then cached."""
    key = _cache_key(manifest, threads, device, exact)
    cached = _read_cache(manifest.folder).get(key)
    if cached:
        candidate = Candidate(**cached["candidate"])
        if candidate in candidates(manifest, cpumod.current(), exact, device):
            engine = open_candidate(manifest, candidate, threads, device)
            _say(candidate, cached["generator_ms"], cached["frame_ms"], "measured before on this machine")
            return engine
    console.print(f"engine: choosing the fastest engine for {manifest.folder.name} on this machine (once)...")
    results, winner = choose(manifest, threads, device, exact)
    engine = open_candidate(manifest, winner.candidate, threads, device)  # with its compiled models cached
    _write_cache(manifest.folder, key, winner, results)
    _say(winner.candidate, winner.generator_ms, winner.frame_ms,
         f"{winner.mean:.2f} mean / {winner.max:.1f} max levels from fp32")
    return engine


def _say(candidate: Candidate, generator_ms: float, frame_ms: float, note: str) -> None:
    unit = cpumod.current().matrix_unit if "bf16" in (candidate.precision, candidate.kp_precision) else ""
    console.print(f"engine: {candidate.label}{f' ({unit})' if unit else ''}, generator {generator_ms:.0f} ms, "
                  f"frame {frame_ms:.0f} ms ({note})")


def _cache_key(manifest: Manifest, threads: int | None, device: str, exact: bool) -> str:
    versions = ",".join(f"{p}={_version(p)}" for p in ("openvino", "ai-edge-litert", *ORT_DISTRIBUTIONS))
    made = manifest.data.get("created", "")
    return (f"{cpumod.current().fingerprint}|threads={threads or cpumod.usable_cores()}|{device}|exact={exact}|"
            f"{versions}|{made}")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _read_cache(folder: Path) -> dict:
    try:
        data = json.loads((Path(folder) / CACHE).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(folder: Path, key: str, winner: Measured, results: list[Measured]) -> None:
    """Remember the choice in the folder (atomically); a read-only folder just measures again next time."""
    data = _read_cache(folder)
    data[key] = {**asdict(winner), "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "all": [asdict(r) for r in results]}
    path = Path(folder) / CACHE
    tmp = path.with_name(f".{CACHE}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
