"""The LiteRT back end: runs the ``.tflite`` files on XNNPACK. Never imports TensorFlow."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from livepuppet.errors import ModelFolderError
from livepuppet.modelfolder.manifest import MODEL_NAMES, Manifest
from livepuppet.runtime.engines.base import Engine


def _interpreter_module():
    """LiteRT's interpreter; TensorFlow's copy only when LiteRT is not installed."""
    try:
        from ai_edge_litert import interpreter
        return interpreter
    except ImportError:
        import tensorflow as tf  # the one fallback the engine may import

        return tf.lite


class TFLiteEngine(Engine):
    """Runs the four ``.tflite`` files with LiteRT's interpreter and XNNPACK on ``threads`` cores.

    XNNPACK packs a model's weights into memory of its own when the model's
    tensors are allocated, and reads them from the memory-mapped file to do so:
    for a moment both copies are resident. The models are therefore prepared
    here, largest first, each file's pages dropped as soon as it is packed, so
    the peak is one copy of every model plus the generator's file (the largest,
    about 270 MB at vox-256 fp32), not plus everything packed before it.
    """

    name = "tflite"

    def __init__(self, manifest: Manifest, threads: int | None = None, models: tuple[str, ...] = MODEL_NAMES):
        """``models``: the ones to load (a remote client loads only the keypoint models)."""
        super().__init__(manifest)
        lite = _interpreter_module()
        self.threads = threads or os.cpu_count() or 1
        paths = {model: manifest.path(model, "tflite") for model in models}
        for path in paths.values():
            if not path.is_file():
                raise ModelFolderError(f"{path} is missing; convert the checkpoint again")
        self._runners = {}
        for model in sorted(paths, key=lambda m: paths[m].stat().st_size, reverse=True):
            path = paths[model]
            try:
                with native_stderr_silenced():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
                    interp = lite.Interpreter(model_path=str(path), num_threads=self.threads)
                    interp.allocate_tensors()  # applies XNNPACK, which packs the weights now
            except (ValueError, RuntimeError) as exc:
                raise ModelFolderError(f"{path} is not a valid TFLite model ({exc}); convert again") from None
            self._runners[model] = interp.get_signature_runner("serving_default")
            if model == "kp_detector":  # reads the file's tensor table: before its pages are dropped
                _check_input_shape(self._runners[model], manifest, path)
            release_file_pages(path)

    def _run(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._runners[model](**inputs)


def _check_input_shape(runner, manifest: Manifest, path: Path) -> None:
    """The model file, not only its manifest, must take frames of the manifest's size and batch."""
    try:
        actual = [int(d) for d in runner.get_input_details()["image"]["shape_signature"]]
    except (KeyError, TypeError, ValueError):
        raise ModelFolderError(f"{path} has no image input; convert the checkpoint again") from None
    declared = [manifest.batch or -1, *manifest.frame_size, 3]
    if actual != declared:
        raise ModelFolderError(f"{path} takes frames of shape {actual[:4]}, but its manifest says {declared}; "
                               "convert the checkpoint again")


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what C++ code writes to stderr (file descriptor 2) to the null device meanwhile.

    LiteRT logs its delegate set-up there, past Python's ``sys.stderr``; errors
    still reach Python as exceptions, with their message.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no stderr to silence
        yield
        return
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def release_file_pages(path: Path) -> int:
    """Drop the resident pages of a memory-mapped model file; returns the bytes released.

    LiteRT maps the ``.tflite`` file and XNNPACK packs its weights into memory of
    its own, so once packed, the mapped weights would sit in memory twice (about
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
