"""The one place that keeps library log noise from users: TensorFlow's, absl's, LiteRT's, anything native.

TensorFlow's C++ side logs through absl straight to file descriptor 2 at import
and at its first device query ("All log messages before absl::InitializeLog()",
"oneDNN custom operations are on", "Could not find cuda drivers", "failed call
to cuInit ... UNKNOWN ERROR (303)"); ``TF_CPP_MIN_LOG_LEVEL`` no longer stops
all of it. LiteRT says "Created TensorFlow Lite XNNPACK delegate" the same way.
None of it is for users: a real failure still reaches Python as an exception
with its message. So every import of TensorFlow goes through
:func:`import_tensorflow`, and native calls that talk go inside
:func:`native_stderr_silenced`. tests/test_first_run.py runs the real first run and
``web --export`` and reads what they print, line by line.
"""

from __future__ import annotations

import contextlib
import os
import sys
from types import ModuleType
from typing import Iterator


def import_tensorflow() -> ModuleType:
    """Import TensorFlow (once) with descriptor 2 silenced for the import and the device set-up."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the cuInit attempt happens here, not in the user's first op
        tf.constant(0.0) + 0.0  # and the rest of the lazy device set-up
    tf.get_logger().setLevel("ERROR")
    return tf


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what C++ code writes to stderr (file descriptor 2) to the null device meanwhile.

    LiteRT logs its delegate set-up there, past Python's ``sys.stderr``; errors
    still reach Python as exceptions, with their message.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no stderr to silence
        yield
        return
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
