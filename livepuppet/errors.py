"""User-facing errors.

Anything a user can cause (a bad path, a corrupt checkpoint, a missing camera)
is raised as a :class:`LivepuppetError` subclass. The CLI prints its message as
one line and exits with code 2; any other exception is a bug in livepuppet.
"""

from __future__ import annotations


class LivepuppetError(Exception):
    """An error the user can fix; its message says what is wrong and what to do."""

    exit_code = 2


class CheckpointError(LivepuppetError):
    """The checkpoint file is missing, corrupt, unsafe, or of another architecture."""


class ConfigError(LivepuppetError):
    """The architecture config is unreadable or does not fit the checkpoint."""


class ModelFolderError(LivepuppetError):
    """A converted model folder is missing, incomplete, or from an incompatible version."""


class MediaError(LivepuppetError):
    """An image or video cannot be read or written."""


class CameraError(LivepuppetError):
    """The camera is absent or cannot be opened."""


class VirtualCameraError(LivepuppetError):
    """No virtual camera device is available."""


class DownloadError(LivepuppetError):
    """A download failed or its checksum did not match."""


class OutputError(LivepuppetError):
    """An output would replace, delete or change one of the command's inputs."""


MAX_LINE = 300  # characters of one error line; a fuzzed file once produced a 94 KB message


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """The message as one line of at most ``limit`` characters, whatever a file put into it."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def from_os_error(exc: OSError) -> LivepuppetError:
    """An I/O failure the user can act on (full disk, no permission, vanished file) as a LivepuppetError."""
    import errno

    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return LivepuppetError(f"the disk is full (or a file-size limit was reached){where}; free some space and "
                               "try again (nothing was replaced)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return LivepuppetError(f"no permission to write or read{where}: {exc.strerror}; choose another path")
    return LivepuppetError(f"an I/O operation failed{where}: {exc.strerror or exc}")


_IO_PHRASES = {"No space left on device": "the disk is full", "Disk quota exceeded": "the disk quota is used up",
               "File too large": "the disk is full (or a file-size limit was reached)",
               "Read-only file system": "the disk is read-only", "Permission denied": "no permission to write there"}


def from_library_io_error(exc: Exception) -> LivepuppetError | None:
    """TensorFlow reports a failed write as its own error type, not OSError; name the cause in one line."""
    if not type(exc).__module__.startswith("tensorflow"):
        return None
    text = str(exc)
    for phrase, cause in _IO_PHRASES.items():
        if phrase in text:
            return LivepuppetError(f"{cause}: TensorFlow could not write its files; free some space (or choose "
                                   "another --out) and try again. Nothing was replaced")
    return None


def bounded_lines(text: str, max_lines: int = 8) -> str:
    """An error message as printed: one line as a rule; the few messages laid out as a short list (every
    URL of a failed download) keep their lines, each capped like :func:`one_line`, and at most ``max_lines``."""
    lines = [one_line(line) for line in str(text).splitlines() if line.strip()]
    return "\n".join(lines[:max_lines]) or one_line(text)
