"""The model a runtime command runs: the one given, else the default one, converted or downloaded on first use."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from livepuppet.commands.convert import convert_checkpoint, model_name
from livepuppet.errors import LivepuppetError, ModelFolderError
from livepuppet.modelfolder.schema import MANIFEST
from livepuppet.paths import checkpoint_dir, find_checkpoint, models_dir

if TYPE_CHECKING:  # pragma: no cover
    from livepuppet.hub.registry import ModelEntry

console = Console(stderr=True)


def default_model_folder() -> Path:
    from livepuppet.hub.registry import get_entry

    return models_dir() / model_name(Path(get_entry().filename))


def converted_default_model() -> Path | None:
    """The default model's folder if it has been converted here, else None (nothing is downloaded)."""
    try:
        folder = default_model_folder()
    except LivepuppetError:  # a broken registry file: no default model
        return None
    return folder if (folder / MANIFEST).is_file() else None


def model_folder(model: Path | None) -> Path:
    """The folder a command will run: ``--model``, else the default one (which may not exist yet)."""
    return model if model is not None else default_model_folder()


def _size_text(entry: ModelEntry) -> str:
    """', 228 MB' from the entry's exact size, ', about 228 MB' for a known published file, else ''."""
    from livepuppet.hub.registry import APPROXIMATE_SIZES

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
    from livepuppet.hub.registry import get_entry

    entry = get_entry()
    checkpoint = find_checkpoint(entry)
    if checkpoint is None:
        if not download_ok:
            raise ModelFolderError(
                f"no model in {folder}; run `livepuppet download` then `livepuppet convert "
                f"{checkpoint_dir() / entry.filename}`, or pass --model")
        if not (yes or _ask(f"The default model ({entry.filename}{_size_text(entry)}) is not here. Download it now?")):
            raise LivepuppetError(f"no model to run; put {entry.filename} in {checkpoint_dir()} or pass --model")
        from livepuppet.hub.download import ensure_checkpoint

        checkpoint = ensure_checkpoint(entry)
    console.print(f"first run: converting {checkpoint.name} once (a minute or two)")
    return convert_checkpoint(checkpoint, folder, entry.preset, infer_on_mismatch=True)


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        raise LivepuppetError("the default model is missing and there is no terminal to ask; pass --yes to download it")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
