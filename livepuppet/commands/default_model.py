"""The model a runtime command runs: the one given, else the default one, converted or downloaded on first use."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from livepuppet.commands.convert import convert_checkpoint, model_name
from livepuppet.errors import LivepuppetError, ModelFolderError
from livepuppet.modelfolder.schema import MANIFEST
from livepuppet.paths import CHECKPOINT_FOLDER, MODELS_FOLDER, checkpoint_dir, find_checkpoint, homes, models_dir

if TYPE_CHECKING:  # pragma: no cover
    from livepuppet.hub.registry import ModelEntry

console = Console(stderr=True, soft_wrap=True)  # paths stay whole on one line


def default_model_folder() -> Path:
    """Where the default model is converted to in the home in use (livepuppet.paths)."""
    from livepuppet.hub.registry import get_entry

    return models_dir() / model_name(Path(get_entry().filename))


def converted_default_model() -> Path | None:
    """The default model's folder in the first home holding it converted, else None (nothing is downloaded)."""
    from livepuppet.hub.registry import get_entry

    try:
        return _found(get_entry())[0]
    except LivepuppetError:  # a broken registry file: no default model
        return None


def model_folder(model: Path | None) -> Path:
    """The folder a command will run: ``--model``, else the default one (which may not exist yet)."""
    return model if model is not None else default_model_folder()


def _found(entry: ModelEntry) -> tuple[Path | None, Path | None, list[str]]:
    """(the converted default model, else its checkpoint, in the first home holding one), and where it looked."""
    folder_name = model_name(Path(entry.filename))
    looked = []
    for home, why in homes():
        folder = home / MODELS_FOLDER / folder_name
        if (folder / MANIFEST).is_file():
            return folder, None, looked
        looked.append(f"{folder} ({why})")
    for home, why in homes():
        checkpoint = find_checkpoint(entry, home / CHECKPOINT_FOLDER)
        if checkpoint is not None:
            return None, checkpoint, looked
    return None, None, looked + [str(home / CHECKPOINT_FOLDER / entry.filename) for home, _ in homes()]


def _others() -> str:
    """'; models that exist: A, B (pass one with --model)' for the model folders every home holds, or ''."""
    found = []
    for home, _ in homes():
        try:
            found += sorted(str(p) for p in (home / MODELS_FOLDER).iterdir() if (p / MANIFEST).is_file())
        except OSError:
            continue
    if not found:
        return ""
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return f"; models that exist: {', '.join(found[:3])}{more} (pass one with --model)"


def _size_text(entry: ModelEntry) -> str:
    """', 228 MB' from the entry's exact size, ', about 228 MB' for a known published file, else ''."""
    from livepuppet.hub.registry import APPROXIMATE_SIZES

    if entry.size:
        return f", {entry.size / 1e6:.0f} MB"
    approximate = APPROXIMATE_SIZES.get(entry.filename)
    return f", about {approximate / 1e6:.0f} MB" if approximate else ""


def resolve_model(model: Path | None, *, download_ok: bool = False, yes: bool = False) -> Path:
    """The model folder to run: the one given, else the default one, converting or downloading it first.

    With no ``--model``: use the converted default model if a home holds it (the
    one in use first, then the checkout and the per-user data folder: see
    livepuppet.paths.homes); else convert the default checkpoint found in one,
    beside it; else (``download_ok``) ask once whether to download it (``yes``
    answers for scripts), then convert. Every "not found" names where it looked.
    """
    if model is not None:
        if not (model / MANIFEST).is_file():
            hint = (f"`livepuppet convert CHECKPOINT --out {model}` makes one" if not model.exists()
                    else "is it the folder `livepuppet convert` wrote?")
            raise ModelFolderError(f"{model} is not a livepuppet model folder; {hint}")
        return model
    from livepuppet.hub.registry import get_entry

    entry = get_entry()
    folder, checkpoint, looked = _found(entry)
    if folder is not None:
        if folder.parent != models_dir():
            console.print(f"default model: {folder}")
        return folder
    if checkpoint is None:
        where = f"looked for it in {', '.join(looked)}{_others()}"
        if not download_ok:
            raise ModelFolderError(f"no default model ({entry.filename}): {where}; run `livepuppet download`, "
                                   "or pass --model")
        if not (yes or _ask(f"The default model ({entry.filename}{_size_text(entry)}) is not here. Download it now?",
                            where)):
            raise LivepuppetError(f"no model to run; put {entry.filename} in {checkpoint_dir()} or pass --model")
        from livepuppet.hub.download import ensure_checkpoint

        checkpoint = ensure_checkpoint(entry)
    folder = checkpoint.parent.parent / MODELS_FOLDER / model_name(checkpoint)  # beside its checkpoint
    console.print(f"first run: converting {checkpoint} once (a minute or two)")
    return convert_checkpoint(checkpoint, folder, entry.preset, infer_on_mismatch=True)


def _ask(question: str, where: str = "") -> bool:
    """The download question, after where the model was looked for; no terminal to ask is an error saying both."""
    if not sys.stdin.isatty():
        raise LivepuppetError(f"the default model is missing ({where}) and there is no terminal to ask; "
                              "pass --yes to download it, or --model")
    console.print(where)
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
