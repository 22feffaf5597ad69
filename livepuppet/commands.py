"""The ``convert`` and ``download`` subcommands, and the model resolution every runtime command shares."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from .errors import LivepuppetError, ModelFolderError
from .manifest import MANIFEST
from .paths import checkpoint_dir, find_checkpoint, models_dir

if TYPE_CHECKING:  # pragma: no cover
    from .registry import ModelEntry

console = Console(stderr=True)


def model_name(checkpoint: Path) -> str:
    """'vox-adv-cpk.pth.tar' -> 'vox-adv-cpk': the default model folder name."""
    name = checkpoint.name
    for suffix in (".tar", ".pth", ".pt", ".ckpt"):
        name = name.removesuffix(suffix)
    return name or "model"


def convert_checkpoint(checkpoint: Path, out: Path | None = None, config: str | None = None,
                       precision: str = "fp32", batch: int | None = 1,
                       size: tuple[int, int] | None = None, *, infer_on_mismatch: bool = False,
                       fast: bool = False) -> Path:
    """Read, check and convert a checkpoint; returns the model folder.

    ``infer_on_mismatch``: when ``config`` is unknown or does not fit the
    checkpoint, read the architecture off the checkpoint instead of failing,
    keeping the config's frame size when it has one (first runs: a registry
    entry's preset names the published model, a mirror may hold another one).
    """
    from . import config as cfgmod
    from .checkpoint import check_finite, load_checkpoint
    from .errors import ConfigError

    start = time.perf_counter()
    ckpt = load_checkpoint(checkpoint)
    check_finite(ckpt)
    try:
        cfg = cfgmod.resolve(config, (ckpt.generator, ckpt.kp_detector))
        cfgmod.validate(cfg, ckpt.generator, ckpt.kp_detector, source=str(checkpoint))
    except ConfigError:
        if config is None or not infer_on_mismatch:
            raise
        try:
            shape = cfgmod.resolve(config).frame_shape
        except ConfigError:
            shape = None
        cfg = cfgmod.infer(ckpt.generator, ckpt.kp_detector)
        if shape is not None:
            cfg = cfg.with_frame_shape(*shape)
        console.print(f"{checkpoint.name} does not match the {config!r} config; "
                      "using the architecture read off the checkpoint")
    if size is not None:
        cfg = cfg.with_frame_shape(size[1], size[0])
    cfg.validate_frame_shape()
    out = out or models_dir() / model_name(checkpoint)
    from .export import build, check_destination

    check_destination(out)
    console.print(f"converting {checkpoint.name}: {cfg.num_kp} keypoints, {cfg.frame_shape[1]}x{cfg.frame_shape[0]}, "
                  f"{precision}, batch {batch if batch else 'dynamic'}")
    build(ckpt, cfg, out, precision=precision, batch=batch, console=console, fast=fast)
    console.print(f"total {time.perf_counter() - start:.1f} s")
    return out


def convert(args: argparse.Namespace) -> int:
    out = convert_checkpoint(args.checkpoint, args.out, args.config, args.precision, args.batch, args.size,
                             fast=getattr(args, "fast", False))
    if getattr(args, "web", None):
        from .web import export

        console.print(f"[green]web page written to {export(out, args.web)}[/]")
    return 0


def download(args: argparse.Namespace) -> int:
    from .download import ensure_checkpoint
    from .registry import get_entry

    path = ensure_checkpoint(get_entry(args.name))
    console.print(f"[green]{path}[/] is ready; next: livepuppet run --source face.png")
    return 0


def default_model_folder() -> Path:
    from .registry import get_entry

    return models_dir() / model_name(Path(get_entry().filename))


def _size_text(entry: ModelEntry) -> str:
    """', 228 MB' from the entry's exact size, ', about 228 MB' for a known published file, else ''."""
    from .registry import APPROXIMATE_SIZES

    if entry.size:
        return f", {entry.size / 1e6:.0f} MB"
    approximate = APPROXIMATE_SIZES.get(entry.filename)
    return f", about {approximate / 1e6:.0f} MB" if approximate else ""


def resolve_model(model: Path | None, *, download_ok: bool = False, yes: bool = False) -> Path:
    """The model folder to run: the one given, else the default one, converting or downloading it first.

    With no ``--model``: use the converted default model if present; else convert
    the default checkpoint if it is in checkpoint/; else (``download_ok``) ask
    once whether to download it (``yes`` answers for scripts), then convert.
    """
    if model is not None:
        if not (model / MANIFEST).is_file():
            hint = (f"`livepuppet convert CHECKPOINT --out {model}` makes one" if not model.exists()
                    else "is it the folder `livepuppet convert` wrote?")
            raise ModelFolderError(f"{model} is not a livepuppet model folder; {hint}")
        return model
    folder = default_model_folder()
    if (folder / MANIFEST).is_file():
        return folder
    from .registry import get_entry

    entry = get_entry()
    checkpoint = find_checkpoint(entry)
    if checkpoint is None:
        if not download_ok:
            raise ModelFolderError(
                f"no model in {folder}; run `livepuppet download` then `livepuppet convert "
                f"{checkpoint_dir() / entry.filename}`, or pass --model")
        if not (yes or _ask(f"The default model ({entry.filename}{_size_text(entry)}) is not here. Download it now?")):
            raise LivepuppetError(f"no model to run; put {entry.filename} in {checkpoint_dir()} or pass --model")
        from .download import ensure_checkpoint

        checkpoint = ensure_checkpoint(entry)
    console.print(f"first run: converting {checkpoint.name} once (a minute or two)")
    return convert_checkpoint(checkpoint, folder, entry.preset, infer_on_mismatch=True)


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        raise LivepuppetError("the default model is missing and there is no terminal to ask; pass --yes to download it")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
