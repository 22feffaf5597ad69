"""Where livepuppet keeps checkpoints and converted models.

``checkpoint/`` (downloaded or hand-placed PyTorch checkpoints) and ``models/``
(converted model folders) live under one home: ``$LIVEPUPPET_HOME`` when set;
else the livepuppet checkout when run from inside it (a clone of the
repository); else the per-user data folder (``platformdirs``, e.g.
``~/.local/share/livepuppet``), so running from another folder never
downloads and converts everything again.

Caches (engine choices, compiled models) live apart, in the per-user cache folder
(:func:`cache_dir`), keyed by a model folder's content and the machine.

Nothing here creates a data folder; whoever writes into one creates it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from livepuppet.hub.registry import ModelEntry

HOME_ENV = "LIVEPUPPET_HOME"
CACHE_ENV = "LIVEPUPPET_CACHE"
CHECKPOINT_FOLDER = "checkpoint"
MODELS_FOLDER = "models"
PARTIAL_SUFFIX = ".partial"


def home_dir() -> Path:
    """The directory holding ``checkpoint/`` and ``models/``, as an absolute path."""
    return home_and_reason()[0]


def home_and_reason() -> tuple[Path, str]:
    """The home directory and why it is the one (``doctor`` shows both)."""
    value = os.environ.get(HOME_ENV, "").strip()
    if value:
        return Path(value).expanduser().absolute(), f"${HOME_ENV}"
    checkout = _checkout()
    if checkout is not None and Path.cwd().absolute().is_relative_to(checkout):
        return checkout, "the livepuppet checkout this is run from"
    import platformdirs

    return Path(platformdirs.user_data_dir("livepuppet", appauthor=False)).absolute(), "the per-user data folder"


def homes() -> list[tuple[Path, str]]:
    """Every home that may hold checkpoints and models, the one in use first, each with why it is one.

    With $LIVEPUPPET_HOME set, only that one (it was asked for). Otherwise the
    checkout (of an editable install) and the per-user data folder both: a
    model converted in the checkout is found when livepuppet runs from another
    folder, and the other way round.
    """
    home, why = home_and_reason()
    found = [(home, why)]
    if why == f"${HOME_ENV}":
        return found
    import platformdirs

    checkout = _checkout()
    if checkout is not None:
        found.append((checkout, "the livepuppet checkout"))
    found.append((Path(platformdirs.user_data_dir("livepuppet", appauthor=False)).absolute(), "the per-user data folder"))
    unique: dict[Path, str] = {}
    for path, reason in found:
        unique.setdefault(path, reason)
    return list(unique.items())


def _checkout() -> Path | None:
    """The repository this livepuppet runs from, or None for an installed package."""
    root = Path(__file__).resolve().parent.parent
    try:
        if 'name = "livepuppet"' in (root / "pyproject.toml").read_text(encoding="utf-8"):
            return root
    except OSError:
        pass
    return None


def checkpoint_dir() -> Path:
    """The folder where checkpoints are downloaded to and looked up in."""
    return home_dir() / CHECKPOINT_FOLDER


def models_dir() -> Path:
    """The folder where converted model folders are written to and looked up in."""
    return home_dir() / MODELS_FOLDER


def cache_dir() -> Path:
    """Where machine-specific caches go (engine choices, compiled models): ``$LIVEPUPPET_CACHE``, else the
    per-user cache folder (``~/.cache/livepuppet`` on Linux). Never inside a model folder, so folders stay
    portable and may be read-only."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value:
        return Path(value).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_cache_dir("livepuppet", appauthor=False)).absolute()


def user_cache(*parts: str) -> Path | None:
    """The cache folder ``cache_dir()/parts...``, made if need be; None where it cannot be written
    (then nothing is cached and the work is done again next time)."""
    folder = cache_dir().joinpath(*parts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return None
    return folder


def find_checkpoint(entry: "ModelEntry", directory: Path | None = None) -> Path | None:
    """The checkpoint file for ``entry`` if it is present, else ``None``.

    A file the user placed by hand under the entry's file name is always used:
    its checksum is not enforced (it may be another copy of the same model, or
    a stripped one). An unfinished download (``<filename>.partial``) never
    counts, and neither does an empty file.
    """
    folder = checkpoint_dir() if directory is None else Path(directory)
    candidate = folder / entry.filename
    try:
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    except OSError:
        return None
    return None


def partial_name(target: Path, suffix: str = "") -> Path:
    """The one rule for work in progress: a hidden sibling ``.NAME.partial-PID-HEX`` (same folder, so the
    final rename is atomic; the pid lets a later run tell a killed run's leftovers from a live one's)."""
    import secrets

    return target.with_name(f".{target.name}.partial-{os.getpid()}-{secrets.token_hex(3)}{suffix}")


def stale_partials(target: Path) -> list[Path]:
    """Leftovers of ``partial_name(target)`` whose process is gone (a killed convert or animate)."""
    found = []
    try:
        siblings = list(target.parent.glob(f".{target.name}.partial-*"))
    except OSError:
        return []
    for path in siblings:
        pid = path.name.rsplit(".partial-", 1)[1].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            found.append(path)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or cannot tell: leave it
    return True
