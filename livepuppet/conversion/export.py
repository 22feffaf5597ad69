"""Checkpoint -> model folder: the targets asked for, each verified, then the manifest; all or nothing.

A *target* is what one back end needs (:mod:`livepuppet.conversion.targets`).
By default ``convert`` writes the two the CPU engines run, ``tflite`` and
``openvino``; ``savedmodel`` (TensorFlow on a GPU) and ``int8`` (``--fast``)
are written on request. The folder is built beside its destination and renamed
into place only once every variant has been run and compared with what it must
reproduce, so a failed or interrupted convert never leaves a half-made or
half-replaced model. What is written does not depend on the converting machine.
"""

from __future__ import annotations

import os
import shutil
import time
from importlib import import_module, metadata
from pathlib import Path
from typing import Callable, Iterable

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from livepuppet import __version__
from livepuppet.outputs import partial_folder, replace_folder
from livepuppet.conversion.graphs import Graphs
from livepuppet.conversion.job import Check, Job
from livepuppet.conversion.targets import DEFAULT_TARGETS, TARGETS, resolve_targets
from livepuppet.errors import LivepuppetError
from livepuppet.fomm.checkpoint import Checkpoint
from livepuppet.fomm.config import ModelConfig
from livepuppet.fomm.numerics import DEFAULT as DEFAULT_NUMERICS
from livepuppet.modelfolder.read import read_folder
from livepuppet.modelfolder.schema import MANIFEST, ModelFolder, to_json

PRECISIONS = ("fp32", "fp16", "int8")  # of the .tflite files (convert --precision)
class VerificationError(LivepuppetError):
    """A built variant does not reproduce what it was made from."""


def build(checkpoint: Checkpoint, cfg: ModelConfig, out: Path, *, targets: Iterable[str] = DEFAULT_TARGETS,
          precision: str = "fp32", batch: int | None = 1, numerics: str = DEFAULT_NUMERICS,
          console: Console | None = None, on_model_built: Callable[[str], None] | None = None) -> ModelFolder:
    """Convert a checkpoint into the model folder ``out``; returns the folder as written.

    ``on_model_built`` is called after each network's first file (progress hooks, tests).
    """
    console = console or Console(stderr=True)
    out = Path(out)
    order = resolve_targets(targets)
    check_destination(out)
    if "int8" in order:  # before minutes of other targets: a CPU without int8 dot products gets no int8
        from livepuppet.conversion.quantize import check_cpu

        check_cpu()
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_folder(out)
    try:
        graphs = Graphs(checkpoint, cfg, batch, numerics)
        with Progress(TextColumn("{task.description:<44}"), BarColumn(bar_width=20),
                      TextColumn("{task.fields[step]:<12}"), TimeElapsedColumn(), console=console) as progress:
            job = Job(graphs, tmp, precision, progress, console, on_model_built)
            for target in order:
                import_module(TARGETS[target]).build(job)
        shutil.rmtree(job.scratch_dir, ignore_errors=True)
        print_checks(console, job.checks)
        enforce(job.checks)
        folder = ModelFolder(out, cfg, batch, dict(job.signatures), tuple(job.variants),
                             checkpoint_name=checkpoint.path.name, checkpoint_sha256=checkpoint.sha256,
                             numerics=numerics, livepuppet_version=__version__,
                             tensorflow_version=metadata.version("tensorflow"),
                             created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        (tmp / MANIFEST).write_text(to_json(folder))
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    console.print(f"[green]model written to {out}[/] ({', '.join(order)}) in {time.perf_counter() - start:.1f} s")
    return read_folder(out)


def check_destination(out: Path) -> None:
    """Refuse to replace anything but an earlier model folder, and say so before any work."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise LivepuppetError(f"{out} exists and is not a livepuppet model folder; choose another --out")
    parent = out.parent if out.parent != Path("") else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise LivepuppetError(f"cannot write to {out}: {probe} is a file, not a folder; choose another --out")
    if not os.access(probe, os.W_OK):
        raise LivepuppetError(f"cannot write to {probe}; choose a writable --out")


def print_checks(console: Console, checks: list[Check]) -> None:
    table = Table(title="self-verification: each file against what it must reproduce", title_justify="left")
    for column, justify in (("network back end/graph/weights", "left"), ("against", "left"), ("error", "right"),
                            ("limit", "right")):
        table.add_column(column, justify=justify, no_wrap=column != "against")
    for check in checks:
        mark = "" if check.passed else " [red]over[/]"
        table.add_row(check.label, check.against, f"{check.error:.1e}{mark}", f"{check.limit:g} {check.unit}")
    console.print(table)


def enforce(checks: list[Check]) -> None:
    for check in checks:
        if not check.passed:
            hint = ("convert with --precision fp32" if check.label.endswith(("fp16", "int8"))
                    else "please report this with your TensorFlow and OpenVINO versions")
            raise VerificationError(f"the converted {check.label} differs from the {check.against} by "
                                    f"{check.error:.2e} (limit {check.limit:g}); nothing was written. {hint}")


__all__ = ["build", "check_destination", "resolve_targets", "TARGETS", "DEFAULT_TARGETS", "PRECISIONS",
           "VerificationError"]
