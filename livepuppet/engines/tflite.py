"""The LiteRT back end: runs the ``.tflite`` files on XNNPACK. Never imports TensorFlow."""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import ModelFolderError
from ..manifest import MODEL_NAMES, Manifest
from .base import Engine


def _interpreter_module():
    """LiteRT's interpreter; TensorFlow's copy only when LiteRT is not installed."""
    try:
        from ai_edge_litert import interpreter
        return interpreter
    except ImportError:
        import tensorflow as tf  # noqa: the fallback the engine is allowed

        return tf.lite


class TFLiteEngine(Engine):
    name = "tflite"

    def __init__(self, manifest: Manifest, threads: int | None = None):
        super().__init__(manifest)
        lite = _interpreter_module()
        self.threads = threads or os.cpu_count() or 1
        self._runners = {}
        for model in MODEL_NAMES:
            path = manifest.path(model, "tflite")
            if not path.is_file():
                raise ModelFolderError(f"{path} is missing; convert the checkpoint again")
            try:
                interp = lite.Interpreter(model_path=str(path), num_threads=self.threads)
            except (ValueError, RuntimeError) as exc:
                raise ModelFolderError(f"{path} is not a valid TFLite model ({exc}); convert again") from None
            self._runners[model] = interp.get_signature_runner("serving_default")
        self._unreleased = {model: manifest.path(model, "tflite") for model in MODEL_NAMES}

    def _run(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self._runners[model](**inputs)
        path = self._unreleased.pop(model, None)
        if path is not None:  # XNNPACK has packed its own copy of the weights by now
            release_file_pages(path)
        return out


def release_file_pages(path: Path) -> int:
    """Drop the resident pages of a memory-mapped model file; returns the bytes released.

    LiteRT maps the ``.tflite`` file and XNNPACK packs its weights into memory of
    its own on the first run, so the mapped weights sit in memory twice (about
    300 MB for vox-256). The mapping is private and unmodified, so dropping its
    pages is safe: anything still read from it is paged in again from the file.
    Linux only; elsewhere (or on any failure) it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return 0
    try:
        target = str(Path(path).resolve())
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        released = 0
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].strip() == target:
                    start, end = (int(v, 16) for v in fields[0].split("-"))
                    if libc.madvise(start, end - start, 4) == 0:  # MADV_DONTNEED
                        released += end - start
        return released
    except (OSError, ValueError, AttributeError):
        return 0
