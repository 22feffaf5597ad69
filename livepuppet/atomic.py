"""Folders written whole: built beside their destination, then swapped in at once.

A convert or a web export builds its folder under a hidden partial name
(:func:`livepuppet.paths.partial_name`) next to the destination, and only a
finished folder replaces what was there: an interruption, a failed check or a
full disk leaves the old folder as it was and no partial one behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from livepuppet.paths import partial_name, stale_partials


def partial_folder(out: Path) -> Path:
    """A new empty folder beside ``out``; made with mkdir, not mkdtemp, so that the folder it becomes
    gets the user's ordinary permissions (umask), not mkdtemp's private 0700."""
    for stale in stale_partials(out):  # a killed run's leftovers (its process is gone)
        shutil.rmtree(stale, ignore_errors=True)
    while True:
        tmp = partial_name(out)
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


def replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``; an existing ``out`` is swapped out, never half-replaced."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old / out.name, out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
