"""Runtime back ends behind one small interface.

``open_engine(folder, "tflite")`` runs the ``.tflite`` files with LiteRT and
never imports TensorFlow; ``"openvino"`` runs the OpenVINO IR (bfloat16 where
the CPU has it); ``"savedmodel"`` runs the SavedModels with TensorFlow (its GPU
path, where TensorFlow sees one); ``"onnx"`` runs the ONNX models with ONNX Runtime on the
best execution provider installed (TensorRT, CUDA, DirectML, CoreML... or the CPU). ``"auto"`` (:mod:`.auto`) picks the fastest
of them within the fidelity budget, measured once per model folder and machine.
"""

from __future__ import annotations

from pathlib import Path

from livepuppet.errors import LivepuppetError
from livepuppet.modelfolder.manifest import read_manifest
from livepuppet.runtime.engines.base import Engine, Keypoints, SourceData

ENGINES = ("auto", "tflite", "openvino", "savedmodel", "onnx")


def open_engine(folder: str | Path, kind: str = "tflite", threads: int | None = None, *,
                precision: str | None = None, kp_precision: str | None = None, device: str = "cpu",
                exact: bool = False) -> Engine:
    """Open ``folder`` on the back end ``kind``.

    ``precision`` / ``kp_precision`` (fp32, bf16, fp16) apply to OpenVINO, which
    computes at the precision that fits the CPU unless told, and ``precision`` to
    ONNX Runtime's provider (fp32 unless told); ``exact`` asks for float32
    everywhere, on any engine. ``device``: OpenVINO's, or ONNX Runtime's provider.
    """
    manifest = read_manifest(folder)
    if kind == "auto":
        from livepuppet.runtime.engines.auto import open_auto

        return open_auto(manifest, threads=threads, device=device, exact=exact)
    if kind == "tflite":
        from livepuppet.runtime.engines.tflite import TFLiteEngine

        if exact and manifest.precision != "fp32":
            raise LivepuppetError(f"{manifest.folder} holds {manifest.precision} TFLite models; --exact needs an fp32 "
                                  "folder (convert again with --precision fp32) or --engine openvino")
        return TFLiteEngine(manifest, threads=threads)
    if kind == "openvino":
        from livepuppet.runtime.engines.openvino import OpenVINOEngine

        precision = "fp32" if exact else precision
        return OpenVINOEngine(manifest, threads=threads, precision=precision,
                              kp_precision="fp32" if exact else (kp_precision or "fp32"), device=device)
    if kind == "savedmodel":
        from livepuppet.runtime.engines.savedmodel import SavedModelEngine

        return SavedModelEngine(manifest)
    if kind == "onnx":
        from livepuppet.runtime.engines.onnx import ONNXEngine

        return ONNXEngine(manifest, threads=threads, device=device,
                          precision="fp32" if exact or precision is None else precision)
    raise LivepuppetError(f"unknown engine {kind!r}; choose one of {', '.join(ENGINES)}")


def open_from_args(folder: str | Path, args) -> Engine:
    """``open_engine`` with a command's ``--engine``, ``--threads``, ``--device``, ``--exact`` and ``--fast``."""
    kind = getattr(args, "engine", None) or "auto"
    device = getattr(args, "device", None) or "cpu"
    if getattr(args, "fast", False):
        if kind not in ("auto", "openvino") or getattr(args, "exact", False):
            raise LivepuppetError("--fast runs the int8 OpenVINO generator: use it with --engine auto or openvino, "
                                  "without --exact")
        from livepuppet.runtime.engines.openvino import default_precision

        return open_engine(folder, "openvino", getattr(args, "threads", None), precision="int8",
                           kp_precision=default_precision(), device=device)
    return open_engine(folder, kind, getattr(args, "threads", None), device=device,
                       exact=bool(getattr(args, "exact", False)))


__all__ = ["Engine", "Keypoints", "SourceData", "open_engine", "open_from_args", "ENGINES"]
