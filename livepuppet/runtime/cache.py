"""Small JSON records kept in the user's cache folder (auto's choices, where ONNX Runtime ran each op).

A cache is best effort: a record that is missing, unreadable, oversized or not
a JSON object reads as empty, and one that cannot be written is not kept; the
work is then done again. Writes go through the one rule for replacing a file
(:func:`livepuppet.outputs.write_atomically`).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from livepuppet.outputs import write_atomically

MAX_RECORD_BYTES = 1 << 20  # ours are a few kB; a larger file is not one of ours


def read_record(path: Path | None) -> dict:
    """The record at ``path`` as a dict; empty where there is none worth reading."""
    try:
        if path is None or path.stat().st_size > MAX_RECORD_BYTES:
            return {}
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def update_record(path: Path | None, key: str, value: object) -> None:
    """Set ``key`` in the record at ``path`` (the rest kept), written whole under a temporary name."""
    if path is None:
        return
    data = read_record(path)
    data[key] = value
    with contextlib.suppress(OSError):
        write_atomically(path, json.dumps(data, indent=1))
