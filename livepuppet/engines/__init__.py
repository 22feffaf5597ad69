"""Runtime back ends behind one small interface.

``open_engine(folder, "tflite")`` runs the ``.tflite`` files with LiteRT and
never imports TensorFlow; ``"savedmodel"`` runs the SavedModels with
TensorFlow (its GPU path, where TensorFlow sees one).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import LivepuppetError
from ..manifest import read_manifest
from .base import Engine, Keypoints, SourceData

ENGINES = ("tflite", "savedmodel")


def open_engine(folder: str | Path, kind: str = "tflite", threads: int | None = None) -> Engine:
    manifest = read_manifest(folder)
    if kind == "tflite":
        from .tflite import TFLiteEngine

        return TFLiteEngine(manifest, threads=threads)
    if kind == "savedmodel":
        from .savedmodel import SavedModelEngine

        return SavedModelEngine(manifest)
    raise LivepuppetError(f"unknown engine {kind!r}; choose one of {', '.join(ENGINES)}")


__all__ = ["Engine", "Keypoints", "SourceData", "open_engine", "ENGINES"]
