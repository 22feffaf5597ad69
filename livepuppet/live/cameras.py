"""Which cameras exist: the one camera listing, used by ``run`` (missing-camera errors) and ``doctor``.

Linux: the /dev/video* capture nodes named in sysfs, read without opening a
device (opening can take a second each, and a busy driver can hang). Other
systems have no such listing, so indices are opened one by one within a time
budget. Only the standard library is imported up front: ``doctor`` imports
this module and must work with a broken OpenCV.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import time
from pathlib import Path
from typing import NamedTuple


class CameraNode(NamedTuple):
    """A V4L2 capture node: its number (the ``--camera`` index), its name and whether it is a loopback device."""

    num: int
    name: str
    virtual: bool

    def label(self) -> str:
        return f"{self.num} ({self.name})" if self.name else str(self.num)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def video_nodes(dev: str = "/dev", sysfs: str = "/sys/class/video4linux") -> list[CameraNode]:
    """The capture nodes under ``dev``, in number order; a camera's metadata node (sysfs index > 0) is left out."""
    nodes = []
    for path in glob.glob(os.path.join(dev, "video*")):
        m = re.fullmatch(r"video(\d+)", os.path.basename(path))
        if not m:
            continue
        num = int(m.group(1))
        node = Path(sysfs) / f"video{num}"
        if _read(node / "index") not in ("", "0"):
            continue  # metadata node of a camera listed under its other index
        try:
            virtual = "/devices/virtual/" in os.path.realpath(node)
        except OSError:
            virtual = False
        nodes.append(CameraNode(num, _read(node / "name"), virtual))
    return sorted(nodes)


def list_cameras(probe: int = 10, budget_s: float = 3.0, *, dev: str = "/dev",
                 sysfs: str = "/sys/class/video4linux") -> list[str]:
    """Cameras that exist, as ``"index (name)"`` strings (Linux: from sysfs; elsewhere: indices that open)."""
    if sys.platform.startswith("linux"):
        return [n.label() for n in video_nodes(dev, sysfs)]
    import cv2
    found, t0 = [], time.monotonic()
    for i in range(probe):
        if time.monotonic() - t0 > budget_s:
            break
        cap = cv2.VideoCapture(i)
        if cap.isOpened():
            found.append(str(i))
        cap.release()
    return found
