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
