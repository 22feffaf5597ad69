"""Limits on what livepuppet takes in, set before any library reads them.

OpenCV reads ``OPENCV_IO_MAX_IMAGE_PIXELS`` once, when ``cv2`` is first imported, and refuses to decode
an image above it (for every format, including those whose headers livepuppet does not read itself).
This module is imported by ``livepuppet/__init__.py``, so it runs before any livepuppet module imports
cv2; a program that imported cv2 before livepuppet keeps OpenCV's own limit, and livepuppet's header
and frame-size checks still apply.
"""

from __future__ import annotations

import os

MAX_PIXELS = 64_000_000
"""Pixels per image or video frame: an 8K photo fits; 20000x20000 would take 5.8 GB as float RGB."""


def _set_opencv_limit() -> None:
    key = "OPENCV_IO_MAX_IMAGE_PIXELS"
    try:
        lower = 0 < int(os.environ.get(key, "")) < MAX_PIXELS  # the user's own, stricter limit stands
    except ValueError:
        lower = False
    if not lower:
        os.environ[key] = str(MAX_PIXELS)


_set_opencv_limit()
