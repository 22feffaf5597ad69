"""The LiteRT back end: runs the ``.tflite`` files on XNNPACK. Never imports TensorFlow."""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import numpy as np

from livepuppet.errors import ModelFolderError, one_line
from livepuppet.modelfolder.schema import ModelFolder
from livepuppet.quiet import native_stderr_silenced
from livepuppet.runtime.engines.base import Engine, check_inputs
from livepuppet.runtime.plan import Plan


def interpreter_module():
    """LiteRT's interpreter; TensorFlow's copy only when LiteRT is not installed."""
    try:
        from ai_edge_litert import interpreter
        return interpreter
    except ImportError:
        from livepuppet.quiet import import_tensorflow  # the one fallback the engine may import

        return import_tensorflow().lite


class TFLiteEngine(Engine):
    """Runs a plan's four ``.tflite`` files with LiteRT's interpreter and XNNPACK on ``threads`` cores.

    XNNPACK packs a model's weights into memory of its own when the model's
    tensors are allocated, and reads them from the memory-mapped file to do so:
    for a moment both copies are resident. The models are therefore prepared
    here, largest first, each file's pages dropped as soon as it is packed, so
    the peak is one copy of every model plus the generator's file (the largest,
    about 270 MB at vox-256 fp32), not plus everything packed before it.
    """

    name = "tflite"

    def __init__(self, folder: ModelFolder, plan: Plan, threads: int | None = None, cache: bool = True):  # noqa: ARG002
        super().__init__(folder, plan)
        lite = interpreter_module()
        self.threads = threads or os.cpu_count() or 1
        paths = {network: folder.file(step.variant) for network, step in plan.steps.items()}
        self._runners = {}
        for network in sorted(paths, key=lambda n: plan.steps[n].variant.files[0].bytes, reverse=True):
            path = paths[network]
            try:
                with native_stderr_silenced():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
                    interp = lite.Interpreter(model_path=str(path), num_threads=self.threads)
                    interp.allocate_tensors()  # applies XNNPACK, which packs the weights now
                runner = interp.get_signature_runner("serving_default")
                inputs = {k: tuple(int(d) for d in v["shape_signature"]) for k, v in runner.get_input_details().items()}
            except (ValueError, RuntimeError, KeyError, TypeError) as exc:
                raise ModelFolderError(f"{path} is not a valid TFLite model ({one_line(str(exc), 120)}); "
                                       "convert again") from None
            check_inputs(folder, network, inputs, path)  # reads the file's tensor table: before its pages go
            self._runners[network] = runner
            release_file_pages(path)

    def _run(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._runners[model](**inputs)

    def close(self) -> None:
        self._runners.clear()


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
