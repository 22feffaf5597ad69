"""Where livepuppet keeps checkpoints and converted models.

``checkpoint/`` (downloaded or hand-placed PyTorch checkpoints) and ``models/``
(converted model folders) live under one home: ``$LIVEPUPPET_HOME`` when set;
else the livepuppet checkout when run from inside it (a clone of the
repository); else the per-user data folder (``platformdirs``, e.g.
``~/.local/share/livepuppet``), so running from another folder never
downloads and converts everything again.

Nothing here creates a folder; whoever writes into one creates it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from livepuppet.hub.registry import ModelEntry

HOME_ENV = "LIVEPUPPET_HOME"
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


def _checkout() -> Path | None:
    """The repository this livepuppet runs from, or None for an installed package."""
    root = Path(__file__).resolve().parent.parent
    try:
        if 'name = "livepuppet"' in (root / "pyproject.toml").read_text(encoding="utf-8"):
            return root
    except OSError:
        pass
    return None


def cache_dir() -> Path:
    """The per-user cache folder (``$LIVEPUPPET_CACHE``, else e.g. ``~/.cache/livepuppet``): what can be fetched
    or made again, such as a remote server's keypoint models."""
    value = os.environ.get("LIVEPUPPET_CACHE", "").strip()
    if value:
        return Path(value).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_cache_dir("livepuppet", appauthor=False)).absolute()


def checkpoint_dir() -> Path:
    """The folder where checkpoints are downloaded to and looked up in."""
    return home_dir() / CHECKPOINT_FOLDER


def models_dir() -> Path:
    """The folder where converted model folders are written to and looked up in."""
    return home_dir() / MODELS_FOLDER


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
