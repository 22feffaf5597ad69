"""What an output may replace or delete: one rule, checked by every command that writes, before any work.

Writing an output replaces what is at its path (a file, or a folder with everything under it) and
clears the leftovers of killed runs under its name (:func:`livepuppet.paths.stale_partials`). None of
that may be an input of the command, however either is spelled: ``a/../b``, a symbolic link (to the
file, to a folder above it, or inside an input folder), a hard link (the same file under another
name), a ``file:`` URL (what OpenCV's FFmpeg opens for ``--camera file:///clip.mp4``). Nor may an
output go inside an input folder (a model folder, a folder of frames or portraits), which would change
that folder. The check looks at paths only, so it costs nothing and runs before a model loads.

How an output replaces a finished result lives here too: a folder is built beside its target and
swapped in whole (:func:`partial_folder`, :func:`replace_folder`); a small file is written under a
temporary name and renamed (:func:`write_atomically`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path
from typing import Iterable, Union

from livepuppet.errors import OutputError
from livepuppet.paths import partial_name, stale_partials

Spec = Union[str, "os.PathLike[str]", int, None]
LINKS_FOLLOWED = 256  # entries of an input folder looked at for symbolic links (a model folder holds ~20)


def check(output: Spec, inputs: Iterable[Spec]) -> None:
    """Raise :class:`OutputError` when writing ``output`` would replace, delete or change one of ``inputs``
    (paths, ``file:`` URLs, camera indices and stream URLs, which name nothing on disk; None is skipped)."""
    if output is None:
        return
    out = _absolute(Path(os.fspath(output)).expanduser())
    cleared = stale_partials(out)
    for item in inputs:
        for src in spellings(item):
            if problem := _conflict(out, cleared, src):
                raise OutputError(problem)


def spellings(item: Spec) -> list[Path]:
    """Every file an input may name: the path as given, a ``file:`` URL's path (as FFmpeg reads it and
    percent-decoded), and the targets of the symbolic links an input folder holds. A camera index names none."""
    if item is None or isinstance(item, int):  # a camera index
        return []
    text = os.fsdecode(os.fspath(item))
    if not text.strip() or text.strip().isdigit():
        return []
    names = [text]
    if text[:5].lower() == "file:":  # FFmpeg strips "file:" and opens the rest; a browser would decode it
        rest = text[5:]
        names += [rest, urllib.parse.unquote(rest), urllib.parse.unquote(urllib.parse.urlsplit(text).path)]
    found: list[Path] = []
    for name in dict.fromkeys(n for n in names if n):
        path = _absolute(Path(name).expanduser())
        found += [path, *_link_targets(path)]
    return list(dict.fromkeys(found))


def _conflict(out: Path, cleared: list[Path], src: Path) -> str | None:
    """What writing ``out`` would do to the input ``src``, or None when it leaves it alone."""
    if _same(out, src):
        return (f"the output {out} is also an input ({src}); writing it would destroy that input, "
                "so choose another output name")
    for stale in cleared:
        if _same(stale, src) or _under(src, stale):
            return (f"the input {src} is the leftover of a killed run that writing {out} would clear; "
                    "move it elsewhere first")
    if _under(src, out):
        return f"the output {out} would replace the folder that holds the input {src}; choose an output outside it"
    if _under(out, src) and (src.is_dir() or not src.exists()):
        return (f"the output {out} is inside the input folder {src}; writing there would change that input, "
                "so choose an output outside it")
    return None


def _same(a: Path, b: Path) -> bool:
    """One file or folder, by any spelling: links resolved, hard links by their inode."""
    try:
        if os.path.samefile(a, b):
            return True
    except (OSError, ValueError):
        pass  # one of them does not exist (yet)
    return _real(a) == _real(b)


def _under(inner: Path, outer: Path) -> bool:
    """``inner`` lies strictly inside the folder ``outer``, as written or with links resolved."""
    pairs = ((_absolute(inner), _absolute(outer)), (_real(inner), _real(outer)))
    return any(a != b and a.is_relative_to(b) for a, b in pairs)


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):  # a link loop, a name too long
        return _absolute(path)


def _link_targets(folder: Path) -> list[Path]:
    """Where the symbolic links in an input folder (and its sub-folders, one level down) lead."""
    if not folder.is_dir():
        return []
    found: list[Path] = []
    pending, looked = [(folder, 0)], 0
    while pending and looked < LINKS_FOLLOWED:
        where, depth = pending.pop()
        try:
            with os.scandir(where) as entries:
                for entry in entries:
                    looked += 1
                    if looked > LINKS_FOLLOWED:
                        break
                    if entry.is_symlink():
                        found.append(_real(Path(entry.path)))
                    elif depth == 0 and entry.is_dir(follow_symlinks=False):
                        pending.append((Path(entry.path), 1))
        except OSError:
            continue
    return found


# --------------------------------------------------------------------------- replacing a finished result


def partial_folder(out: Path) -> Path:
    """A new empty folder beside ``out`` (stale ones of killed runs removed first); made with mkdir, not
    mkdtemp, so that the folder it becomes gets the user's ordinary permissions (umask), not 0700."""
    for stale in stale_partials(out):
        shutil.rmtree(stale, ignore_errors=True)
    while True:
        tmp = partial_name(out)
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


def replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` into place; an existing ``out`` is swapped out, never half-replaced."""
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


def write_atomically(path: Path, text: str) -> None:
    """Write a small text file under a temporary name beside ``path``, then rename it into place."""
    tmp = partial_name(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
