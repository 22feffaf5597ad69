"""Give the kernel back the pages of weight files that a runtime has mapped and no longer reads.

OpenVINO maps a model's ``.bin`` (or its compiled-model cache) and reads the
float32 weights once, at compile time, to make its own reordered (bf16) copies.
The mapped pages then stay counted in the process's resident memory although
nothing reads them again: vox-256 on the xnnpack graph, about 315 MB of 750.
``madvise(MADV_PAGEOUT)`` on those read-only file mappings drops them; it never
loses data (a page read again is read from the file), so a runtime that does
touch one later just pays a page fault. Linux only; elsewhere a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from pathlib import Path

MADV_PAGEOUT = 21  # Linux 5.4+; older kernels answer EINVAL and nothing changes


def release(folder: str | Path) -> int:
    """Page out this process's read-only mappings of files under ``folder``; returns the bytes advised."""
    if not sys.platform.startswith("linux"):
        return 0
    madvise = _madvise()
    if madvise is None:
        return 0
    root = str(Path(folder).resolve())
    advised = 0
    for start, end in _mappings_under(root):
        if madvise(start, end - start, MADV_PAGEOUT) == 0:
            advised += end - start
    return advised


def _mappings_under(root: str) -> list[tuple[int, int]]:
    """(start, end) of the read-only file mappings whose path lies under ``root``."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or "w" in fields[1]:
            continue
        if _is_under(fields[5].strip(), root):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            out.append((start, end))
    return out


def _is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def _madvise():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def resident(folder: str | Path) -> tuple[int, int]:
    """(mapped, resident) bytes of this process's read-only mappings of files under ``folder``."""
    root = str(Path(folder).resolve())
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return 0, 0
    mapped = rss = 0
    inside = False
    for line in lines:
        fields = line.split(maxsplit=5)
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            path = fields[5].strip() if len(fields) == 6 else ""
            inside = "w" not in fields[1] and _is_under(path, root)
            if inside:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                mapped += end - start
        elif inside and fields[0] == "Rss:":
            rss += int(fields[1]) * 1024
    return mapped, rss
