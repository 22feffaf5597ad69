"""Opening a user's file for reading: a regular file of bounded size, checked before a byte is read.

A path may name a FIFO (opening it waits for a writer forever), a device such as ``/dev/zero`` (reading
it never ends), or a sparse file of terabytes; each gets a one-line error here instead. The checks run
on the opened descriptor, so a file swapped between the check and the read is caught too.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import BinaryIO

from livepuppet.errors import LivepuppetError


def open_bounded(path: str | os.PathLike[str], max_bytes: int, what: str,
                 error: type[LivepuppetError] = LivepuppetError) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file of at most ``max_bytes``; else raise ``error``.

    ``what`` names the file in messages ("image", "config file"). A missing or unreadable file raises the
    OSError as is, so that callers keep their own wording for those.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{path} is a folder; give the path of the {what}")
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} {path} is not a regular file (a device, pipe or socket); give a file")
        if info.st_size > max_bytes:
            raise error(f"{what} {path} is {info.st_size / 1e6:.0f} MB, more than the {max_bytes / 1e6:.0f} MB "
                        f"a {what} may have; check that it is the right file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: str | os.PathLike[str], max_bytes: int, what: str,
                 error: type[LivepuppetError] = LivepuppetError) -> bytes:
    """The whole of a regular file of at most ``max_bytes`` (see :func:`open_bounded`); a file that grows
    past the limit while being read is refused too."""
    with open_bounded(path, max_bytes, what, error) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise error(f"{what} {path} grew past {max_bytes / 1e6:.0f} MB while being read; check that it is the right file")
    return data


def check_regular(path: str | os.PathLike[str], what: str, error: type[LivepuppetError] = LivepuppetError) -> None:
    """Refuse a path that is not a regular file (a FIFO would block the reader, a device never ends) before
    a library opens it; OSError for a missing or unreadable file, as :func:`open_bounded`."""
    with open_bounded(path, sys.maxsize, what, error):
        pass
