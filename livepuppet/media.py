"""Image and video input/output.

Everything the model sees or produces passes through here as float32 RGB arrays
of shape (H, W, 3) with values in [0, 1]; conversion to and from files happens
only in this module, so the rest of livepuppet never deals with BGR order,
bit depths or containers.

Reading uses OpenCV. Video writing pipes raw RGB frames into the ffmpeg binary
(the one bundled with ``imageio-ffmpeg`` when installed, else ``ffmpeg`` on the
PATH) to get H.264 and audio muxing; without any ffmpeg binary it falls back to
OpenCV's MPEG-4 Part 2 ('mp4v') writer and cannot copy audio.

Writers never leave a half-written result under the name the user asked for:
they write under a hidden temporary name in the same folder and rename it into
place only when :meth:`close` succeeds. The exception is a *fragmented* video
writer (live recordings), which writes in place so that a recording survives the
process being killed.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO, Iterator, TypeVar

import cv2
import numpy as np

from livepuppet.errors import MediaError
from livepuppet.files import check_regular, open_bounded
from livepuppet.limits import MAX_PIXELS
from livepuppet.paths import partial_name, stale_partials

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
"""File name extensions read from a folder of driving frames (case-insensitive)."""

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi"})
"""Extensions :func:`open_writer` and :class:`VideoWriter` accept for video output."""

FOLDER_FPS = 30.0
"""Frame rate assumed for a folder of images, which carries no timing of its own."""

_FALLBACK_FPS = 30.0  # used when a video file reports no usable frame rate
_FRAME_NAME = re.compile(r"^\d{5,}\.png$")  # files FrameFolderWriter writes
_AUDIO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Audio:")
_UNPLAYABLE = 0x2 | 0x4  # AV_PKT_FLAG_CORRUPT (cut off by the end of the file), AV_PKT_FLAG_DISCARD
_W = TypeVar("_W", bound="_Writer")

# libavformat's own messages ("moov atom not found") would precede our one-line
# error for a corrupt video; read by OpenCV when it first opens a video file.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
MAX_IMAGE_BYTES = 256_000_000  # an image file: a 64-megapixel 16-bit RGB TIFF, uncompressed, is 384 MB decoded
_JPEG_SEGMENTS = 1000  # marker segments before a JPEG's frame header (real files have a dozen)


@contextlib.contextmanager
def _opencv_quiet() -> Iterator[None]:
    """Silence OpenCV's warnings (such as "can't be used to capture by name") while opening a file."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(min(level, logging.LOG_LEVEL_ERROR))
    try:
        yield
    finally:
        logging.setLogLevel(level)


# --------------------------------------------------------------------------- images


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as float32 RGB (H, W, 3) in [0, 1] at its own size.

    Grayscale is replicated to three channels, palette images are expanded, and
    an alpha channel is dropped (not composited: the colour stored under
    transparent pixels is used as is). 16-bit images are divided by 65535 and
    8-bit ones by 255, so no precision is lost before the model sees them. EXIF
    orientation is applied, so phone photos come out upright; that is why this
    decodes with ``IMREAD_ANYDEPTH | IMREAD_ANYCOLOR`` rather than
    ``IMREAD_UNCHANGED``, which ignores orientation (and the alpha it would keep
    is dropped anyway). Bytes are read by Python and decoded with
    ``cv2.imdecode`` so that non-ASCII paths work on every platform.

    Before anything is decoded: the file must be a regular one of at most
    :data:`MAX_IMAGE_BYTES`, and a PNG's or JPEG's declared size must be within
    :data:`MAX_PIXELS` (OpenCV's own limit, set in :mod:`livepuppet.limits`,
    covers the other formats).
    """
    p = Path(path)
    if p.is_dir():
        raise MediaError(f"{p} is a folder, not an image; give the path of an image file")
    try:
        with open_bounded(p, MAX_IMAGE_BYTES, "image", MediaError) as f:
            _check_pixels(header_size(f), p)
            f.seek(0)
            data = np.frombuffer(f.read(), dtype=np.uint8)
    except FileNotFoundError:
        raise MediaError(f"image not found: {p}; check the path") from None
    except OSError as exc:
        raise MediaError(f"cannot read image {p}: {exc.strerror or exc}; check its permissions") from None
    decoded = None
    if data.size:
        try:
            decoded = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
        except cv2.error as exc:
            if "CV_IO_MAX_IMAGE" in str(exc):  # OpenCV's own limit, for the formats not read above
                raise MediaError(f"image {p} is above livepuppet's limit of {MAX_PIXELS / 1e6:.0f} megapixels; "
                                 "scale it down (the model sees 256x256 anyway)") from None
            decoded = None
    if decoded is None:
        raise MediaError(
            f"cannot read image {p}: the file is empty, corrupt or not a supported format; "
            "save it as PNG or JPEG and try again"
        )
    _check_pixels(decoded.shape[1::-1], p)  # a program that imported cv2 before livepuppet lacks OpenCV's limit
    return _decoded_to_rgb_float(decoded, p)


def _check_pixels(size: tuple[int, int] | None, path: Path, what: str = "image") -> None:
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        w, h = size
        raise MediaError(f"{what} {path} is {w}x{h} ({w * h / 1e6:.0f} megapixels), above livepuppet's limit of "
                         f"{MAX_PIXELS / 1e6:.0f}; scale it down (the model sees 256x256 anyway)")


def header_size(image: bytes | BinaryIO) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header (bytes, or a file read from its start) without decoding, so
    a 1 MB file of 20000x20000 pixels is refused before it takes gigabytes; None for other formats or a
    header that is not there. A JPEG's segments are skipped by their lengths, however far its size lies."""
    f = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image
    head = f.read(24)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if not head.startswith(b"\xff\xd8"):
        return None
    f.seek(2)
    return _jpeg_size(f)


def _jpeg_size(f: BinaryIO) -> tuple[int, int] | None:
    """Walk a JPEG's marker segments up to its start-of-frame; None if it ends, scans or loops first."""
    for _ in range(_JPEG_SEGMENTS):
        marker = f.read(2)
        while marker[:2] == b"\xff\xff":  # fill bytes before a marker
            marker = marker[1:] + f.read(1)
        if len(marker) < 2 or marker[0] != 0xFF or marker[1] in (0xD9, 0xDA):  # end of image or scan: no frame
            return None
        if 0xD0 <= marker[1] <= 0xD7 or marker[1] == 0x01:  # markers without a length
            continue
        length = f.read(2)
        if len(length) < 2 or int.from_bytes(length, "big") < 2:
            return None
        if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):  # start of frame
            frame = f.read(5)
            return (int.from_bytes(frame[3:5], "big"), int.from_bytes(frame[1:3], "big")) if len(frame) == 5 else None
        f.seek(int.from_bytes(length, "big") - 2, io.SEEK_CUR)
    return None


def _decoded_to_rgb_float(img: np.ndarray, source: Path) -> np.ndarray:
    """Turn an OpenCV-decoded array (BGR order, any supported depth) into float32 RGB [0, 1]."""
    if img.dtype == np.uint8:
        scale = 255.0
    elif img.dtype == np.uint16:
        scale = 65535.0
    elif img.dtype in (np.float32, np.float64):
        scale = 1.0  # floating-point TIFFs are taken to be in [0, 1] already
    else:
        raise MediaError(
            f"cannot read image {source}: {img.dtype} pixels are not supported; "
            "save it as 8- or 16-bit PNG or JPEG"
        )
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        rgb = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] in (3, 4):
        rgb = img[:, :, 2::-1]  # BGR(A) -> RGB, alpha dropped
    else:
        raise MediaError(
            f"cannot read image {source}: {img.shape} is not a grayscale or colour image; "
            "save it as an RGB PNG or JPEG"
        )
    out = rgb.astype(np.float32)
    if scale == 1.0 and not np.isfinite(out).all():
        raise MediaError(f"image {source} has NaN or infinite pixels; save it as an 8- or 16-bit PNG or JPEG")
    if scale != 1.0:
        np.divide(out, np.float32(scale), out=out)  # exact x / 255, not x * (1 / 255)
    np.clip(out, 0.0, 1.0, out=out)
    return np.ascontiguousarray(out)


def fit_frame(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) float image to ``size`` = (h, w), the model's frame size.

    An image already of that size is returned unchanged (the very same array, not
    resampled), so inputs prepared at the right size reach the model bit-exact,
    as they do in the reference implementation. Otherwise the whole image is
    stretched to fit (no cropping, so nothing the user framed is cut away):
    shrinking uses ``INTER_AREA``, which averages instead of aliasing; enlarging
    uses ``INTER_CUBIC`` and then clips, since cubic overshoots past [0, 1].
    """
    h, w = (int(size[0]), int(size[1]))
    if h <= 0 or w <= 0:
        raise ValueError(f"frame size must be positive, got {size!r}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    if image.shape[:2] == (h, w):
        return image
    src = np.ascontiguousarray(image, dtype=np.float32)
    if h <= src.shape[0] and w <= src.shape[1]:
        return cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA)
    out = cv2.resize(src, (w, h), interpolation=cv2.INTER_CUBIC)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """Convert a float frame in [0, 1] to uint8 as ``round(frame * 255)``, clipped.

    Rounding is ``np.rint`` (round half to even), the same rule as
    ``torch.round``, so saved frames match the reference's
    ``round(prediction * 255)`` exactly. Values outside [0, 1] are clipped and
    NaN becomes 0, so a diverging model produces black, not garbage.
    """
    scaled = np.asarray(frame, dtype=np.float32) * np.float32(255.0)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return scaled.astype(np.uint8)


def _frame_to_uint8_rgb(frame: np.ndarray) -> np.ndarray:
    """Accept a float [0, 1] or uint8 RGB (H, W, 3) frame and return contiguous uint8."""
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB frame, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        return to_uint8(arr)
    raise TypeError(f"frames must be float in [0, 1] or uint8, got {arr.dtype}")


# --------------------------------------------------------------------------- ffmpeg


def _native(path: str | os.PathLike[str]) -> str:
    """A path as ffmpeg and OpenCV must get it: absolute, so that a file named like a protocol
    ('file:clip.mp4', 'concat:a|b') is read or written as that file, not as what the protocol names."""
    return os.path.abspath(path)


@functools.lru_cache(maxsize=1)
def _ffmpeg_exe() -> str | None:
    """Locate an ffmpeg binary: imageio-ffmpeg's bundled one, else the PATH; None if neither."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed, or no binary for this platform
        return shutil.which("ffmpeg")


def _has_audio(path: Path) -> bool:
    """Whether a media file has an audio stream, from ffmpeg's stream listing (False without ffmpeg)."""
    exe = _ffmpeg_exe()
    if exe is None:
        return False
    try:
        result = subprocess.run(
            [exe, "-hide_banner", "-nostdin", "-i", _native(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return _AUDIO_STREAM.search(result.stderr.decode("utf-8", "replace")) is not None


def _stderr_tail(handle: IO[bytes] | None, lines: int = 2) -> str:
    """The last non-empty lines ffmpeg wrote, joined into one line for an error message."""
    if handle is None:
        return ""
    try:
        handle.seek(0)
        text = handle.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(kept[-lines:])


# --------------------------------------------------------------------------- reading


def _natural_key(name: str) -> tuple[list[object], str]:
    """Sort key that orders 'frame2' before 'frame10' (digits compare as numbers)."""
    parts: list[object] = []
    for i, part in enumerate(re.split(r"(\d+)", name.casefold())):
        parts.append(int(part) if i % 2 else part)
    return parts, name


class FrameSource:
    """The frames of a driving video file or of a folder of images, in order.

    Iterating yields float32 RGB (H, W, 3) frames in [0, 1] at their native
    size (callers :func:`fit_frame` them), once. Create it with
    :func:`open_frames`; the first frame is decoded on opening, so a file that
    cannot be played is reported before any work starts.

    Attributes:
        path: the file or folder read.
        fps: frames per second (a folder has no timing: :data:`FOLDER_FPS`).
        frame_count: number of frames, or None when the container does not say
            (a count read from video metadata is best effort).
        audio_source: the video file itself when it has an audio stream, for
            :class:`VideoWriter` ``audio_from``; None otherwise.
        size: (h, w) of the first frame.
    """

    path: Path
    fps: float
    frame_count: int | None
    audio_source: Path | None
    size: tuple[int, int]

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._capture: cv2.VideoCapture | None = None
        self._files: list[Path] = []
        self._index = 0
        self._pending: np.ndarray | None = None
        self._closed = False
        self._read = 1  # frames decoded, the first one on opening
        self.notices: list[str] = []
        if not self.path.exists():
            raise MediaError(f"driving video or frame folder not found: {self.path}; check the path")
        if self.path.is_dir():
            self._open_folder()
        else:
            self._open_video()
        assert self._pending is not None
        self.size = (int(self._pending.shape[0]), int(self._pending.shape[1]))

    def _open_folder(self) -> None:
        try:
            entries = list(self.path.iterdir())
        except OSError as exc:
            raise MediaError(f"cannot list folder {self.path}: {exc.strerror or exc}; check its permissions") from exc
        files = [
            e
            for e in entries
            if not e.name.startswith(".") and e.suffix.lower() in IMAGE_EXTENSIONS and e.is_file()
        ]
        if not files:
            raise MediaError(
                f"folder {self.path} contains no images; put the driving frames there as "
                "PNG, JPEG, BMP, TIFF or WebP files"
            )
        self._files = sorted(files, key=lambda f: _natural_key(f.name))
        self.fps = FOLDER_FPS
        self.frame_count = len(self._files)
        self.audio_source = None
        self._pending = read_image(self._files[0])
        self._index = 1

    def _open_video(self) -> None:
        try:
            check_regular(self.path, "driving video", MediaError)
        except OSError as exc:
            raise MediaError(f"cannot read video {self.path}: {exc.strerror or exc}; check its permissions") from None
        with _opencv_quiet():
            capture = cv2.VideoCapture(_native(self.path), cv2.CAP_FFMPEG)
            try:
                check_frame_size(capture, self.path)  # before a frame of that size is decoded
            except MediaError:
                capture.release()
                raise
            ok, bgr = (capture.read() if capture.isOpened() else (False, None))
        if not ok or bgr is None:
            capture.release()
            raise MediaError(
                f"cannot read video {self.path}: it is corrupt, empty or in an unsupported format; "
                "re-encode it as H.264 MP4 or give a folder of frames"
            )
        self._capture = capture
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        self.fps = fps if math.isfinite(fps) and fps > 0 else _FALLBACK_FPS
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None
        self.audio_source = self.path if _has_audio(self.path) else None
        self._pending = _decoded_to_rgb_float(bgr, self.path)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        if self._closed:
            raise StopIteration
        if self._capture is not None:
            ok, bgr = self._capture.read()
            if not ok or bgr is None:
                self._note_short_read()
                self.close()
                raise StopIteration
            self._read += 1
            _check_pixels(bgr.shape[1::-1], self.path, "a frame of video")  # a stream that grows mid-way
            return _decoded_to_rgb_float(bgr, self.path)
        if self._index >= len(self._files):
            self.close()
            raise StopIteration
        path = self._files[self._index]
        self._index += 1
        return read_image(path)

    def _note_short_read(self) -> None:
        """A video that ends well before the frame count it declares is damaged: say so, never silently."""
        if self.frame_count is not None and self._read < self.frame_count * 0.98 - 1:
            self.notices.append(f"{self.path.name} ended after {self._read} of its {self.frame_count} frames; "
                                "the file is probably damaged, so the output is shorter")

    def close(self) -> None:
        """Release the video decoder; iteration then stops. Safe to call twice."""
        self._closed = True
        self._pending = None
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_frame_size(capture: object, name: object, what: str = "video") -> None:
    """Refuse a video or camera whose declared frame size is over :data:`MAX_PIXELS`, before a frame is
    decoded (a 1.5 MB file of 16000x16000 frames takes gigabytes once decoded and queued). A source that
    does not say (a test double, a back end without the property) is checked frame by frame instead."""
    try:
        w, h = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    except (AttributeError, TypeError, ValueError, OverflowError, cv2.error):
        return
    _check_pixels((w, h), Path(str(name)), what)


def open_frames(path: str | os.PathLike[str]) -> FrameSource:
    """Open a video file, or a folder of images read in natural file-name order."""
    return FrameSource(path)


def probe_video(path: str | os.PathLike[str]) -> dict[str, object]:
    """Describe a video file: exact ``frame_count`` (counted by decoding), ``fps``,
    ``size`` (h, w) and ``has_audio``.

    Counting decodes the whole file, because container metadata is often wrong
    (fragmented MP4s, variable frame rates); use it on short clips and in tests.
    """
    p = Path(path)
    if not p.is_file():
        raise MediaError(f"video not found: {p}; check the path")
    with _opencv_quiet():
        capture = cv2.VideoCapture(_native(p), cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            raise MediaError(f"cannot read video {p}: it is corrupt or in an unsupported format")
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = 0
        while capture.grab():
            count += 1
    finally:
        capture.release()
    return {"frame_count": count, "fps": fps, "size": (height, width), "has_audio": _has_audio(p)}


# --------------------------------------------------------------------------- writing


def _check_parent(target: Path) -> Path:
    """Return the folder an output goes into, or explain why it cannot be used."""
    parent = target.parent
    if not parent.exists():
        raise MediaError(f"cannot write {target}: folder {parent} does not exist; create it or choose another output")
    if not parent.is_dir():
        raise MediaError(f"cannot write {target}: {parent} is a file, not a folder; choose another output")
    return parent


def _partial_name(target: Path, suffix: str = "") -> Path:
    """A hidden, unique sibling name for work in progress; stale ones (their process gone) are removed."""
    for stale in stale_partials(target):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    return partial_name(target, suffix)


def frames_on_disk(path: Path) -> int | None:
    """The video frames a player can read from ``path`` now: packets found by ffmpeg's demuxer (nothing is
    decoded, so an hour of recording takes a second or two); 0 for a file with none or no video at all,
    None when they could not be counted (then a file is kept, never deleted)."""
    exe = _ffmpeg_exe()
    if exe is None:  # OpenCV's writer made it; count by decoding
        try:
            return int(probe_video(path)["frame_count"])
        except MediaError:
            return 0
    cmd = [exe, "-hide_banner", "-nostdin", "-v", "quiet", "-i", _native(path), "-map", "0:v:0", "-c", "copy",
           "-f", "framecrc", "-"]
    try:
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return sum(1 for line in result.stdout.decode("ascii", "replace").splitlines()
               if line[:1].isdigit() and not _packet_flags(line) & _UNPLAYABLE)


def _packet_flags(line: str) -> int:
    """The flags of a packet in ffmpeg's framecrc listing ('..., F=0x2' for a corrupt one; none shown for a key frame)."""
    flags = re.search(r"F=0x([0-9A-Fa-f]+)", line)
    return int(flags.group(1), 16) if flags else 0


def unfinished_name(target: Path, attempt: int = 1) -> Path:
    """Where a recording cut short beside an existing ``target`` is kept: ``NAME.unfinished.mp4``, then -2, -3..."""
    tail = "" if attempt == 1 else f"-{attempt}"
    return target.with_name(f"{target.stem}.unfinished{tail}{target.suffix}")


def _move_aside(work: Path, target: Path) -> Path:
    """Rename ``work`` to the first free :func:`unfinished_name` of ``target``, never over an existing file."""
    for attempt in range(1, 1000):
        kept = unfinished_name(target, attempt)
        try:
            os.link(work, kept)  # fails if ``kept`` exists, where a rename would replace it
        except FileExistsError:
            continue
        except OSError:  # no hard links here (FAT): a checked rename
            if os.path.lexists(kept):
                continue
            os.rename(work, kept)
            return kept
        os.unlink(work)
        return kept
    raise OSError(f"no free name beside {target}")


def _keep_killed_recordings(target: Path) -> list[str]:
    """A killed run's hidden work file for ``target`` is kept under a visible name when it holds frames, and
    the notice says where; one with no playable frame (a killed non-fragmented encode) is removed."""
    notices = []
    for stale in stale_partials(target):
        if not stale.is_file() or stale.is_symlink():
            continue
        count = frames_on_disk(stale)
        if count == 0:
            stale.unlink(missing_ok=True)
            continue
        frames = "its frames" if count is None else f"its {count} frames"
        try:
            kept = _move_aside(stale, target)
        except OSError:
            kept = stale
        notices.append(f"an earlier recording to {target.name} was cut off (its process is gone); "
                       f"{frames} are kept in {kept}")
    return notices


class _Writer:
    """Shared life cycle: ``with`` closes on success and aborts on an exception."""

    path: Path
    frames_written: int

    def write(self, frame: np.ndarray) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def abort(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self: _W) -> _W:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class VideoWriter(_Writer):
    """Encode RGB frames to a video file (H.264 via the ffmpeg binary).

    Frames go to ffmpeg through a pipe as raw RGB, encoded with libx264 at
    CRF 18 (visually lossless for puppeteering output) in yuv420p so every
    player can show it; yuv420p needs even dimensions, so an odd width or height
    is padded by repeating the last column or row. ``audio_from`` (typically
    :attr:`FrameSource.audio_source`) has its audio muxed in at :meth:`close`,
    trimmed to the video's length; the video is never shortened to the audio.

    By default the file appears under ``path`` only when :meth:`close`
    succeeds. With ``fragmented=True`` (live recordings) it is written in place
    as a fragmented MP4 flushed after each frame, with one-second keyframes and
    no encoder delay, so a recording cut off by a crash or kill still plays every
    frame ffmpeg received; ffmpeg runs in its own session, so Ctrl-C in the
    terminal reaches only livepuppet and the recording is finished, and if
    livepuppet itself is killed ffmpeg still completes the file. An exception in a
    fragmented writer's ``with`` block keeps the recording; :meth:`abort` deletes
    it. Fragmentation applies to .mp4 and .mov; a fragmented .mkv is written
    in place and flushed too, which Matroska players tolerate when cut off.
    (After a hard kill, a writer may leave its hidden ``.NAME.partial-*`` file
    next to the target; the next writer to that name keeps one with frames under
    :func:`unfinished_name` and says so in :attr:`notices`.) An existing file at
    ``path`` is replaced only by a finished video with frames on disk; a fragmented
    writer whose encoder fails mid-way (a full disk) keeps the frames already on
    disk, in place for a new file, else beside the existing one.

    Without an ffmpeg binary it falls back to OpenCV's 'mp4v' writer: larger
    files, no audio, and no fragmentation. :attr:`codec` says which is used.

    Attributes:
        path: the final output path.
        codec: 'libx264' or 'mp4v'.
        frames_written: frames accepted so far (handed to the encoder).
        frames_saved: after close (or a failed write of a recording), the frames
            on disk: counted in the file for a recording; None before.
        notices: what the writer found and did on opening (a killed run's recording kept).
        size: (h, w) of the frames, once the first one is written.
        audio_muxed: after close, whether audio was copied from ``audio_from``.
    """

    codec: str
    size: tuple[int, int] | None
    audio_muxed: bool

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        audio_from: str | os.PathLike[str] | None = None,
        fragmented: bool = False,
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise MediaError(
                f"cannot write video {self.path}: use a .mp4, .mov, .mkv or .avi file name, "
                "or a folder name ending in / to save PNG frames"
            )
        fps = float(fps)
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        self.fps = fps
        self.fragmented = bool(fragmented)
        self.frames_written = 0
        self.frames_saved: int | None = None
        self.notices: list[str] = []
        self.size = None
        self.audio_muxed = False
        self._exe = _ffmpeg_exe()
        self.codec = "libx264" if self._exe is not None else "mp4v"
        self._audio: Path | None = None
        if audio_from is not None:
            audio_path = Path(audio_from)
            if not audio_path.is_file():
                raise MediaError(f"audio source not found: {audio_path}; check the path")
            if self._exe is not None and _has_audio(audio_path):
                self._audio = audio_path
        if self.path.is_dir():
            raise MediaError(f"cannot write video {self.path}: a folder of that name exists; choose another name")
        _check_parent(self.path)
        self.notices += _keep_killed_recordings(self.path)
        # Create the output file now, so an unwritable location fails before any work.
        # A live recording goes in place (a killed run still leaves it playable) unless a file is there:
        # then beside it, so the existing file is only ever replaced by a finished recording.
        in_place = self.fragmented and not os.path.lexists(self.path)
        self._work = self.path if in_place else partial_name(self.path, self.path.suffix)
        try:
            fd = os.open(self._work, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            os.close(fd)
        except OSError as exc:
            raise MediaError(
                f"cannot write {self.path}: {exc.strerror or exc}; choose a folder you can write to"
            ) from exc
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._cv_writer: cv2.VideoWriter | None = None
        self._pad = (0, 0)
        self._done = False

    # ---- encoding

    def _start(self, height: int, width: int) -> None:
        self.size = (height, width)
        self._pad = (height % 2, width % 2)
        enc_w, enc_h = width + self._pad[1], height + self._pad[0]
        if self._exe is None:
            writer = cv2.VideoWriter(_native(self._work), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (enc_w, enc_h))
            if not writer.isOpened():
                raise MediaError(
                    f"cannot write video {self.path}: OpenCV has no encoder for it; "
                    "install imageio-ffmpeg (pip install imageio-ffmpeg) or use an .mp4 name"
                )
            self._cv_writer = writer
            return
        rate = Fraction(self.fps).limit_denominator(100_000)
        cmd = [
            self._exe, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{enc_w}x{enc_h}",
            "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0",
            "-an", "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p",
        ]  # fmt: skip
        mp4_like = self.path.suffix.lower() in (".mp4", ".mov")
        if self.fragmented:
            keyint = str(max(1, round(self.fps)))
            cmd += ["-preset", "veryfast", "-tune", "zerolatency", "-g", keyint, "-flush_packets", "1"]
            if mp4_like:
                cmd += ["-movflags", "frag_keyframe+empty_moov+default_base_moof", "-frag_duration", "1"]
        else:
            cmd += ["-preset", "medium"]
            if mp4_like:
                cmd += ["-movflags", "+faststart"]
        cmd.append(_native(self._work))
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                # Terminal Ctrl-C must reach only us, not cut the encoder short.
                start_new_session=os.name == "posix",
                creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
            )
        except OSError as exc:
            raise MediaError(f"cannot start ffmpeg ({self._exe}): {exc.strerror or exc}; reinstall imageio-ffmpeg") from exc

    def write(self, frame: np.ndarray) -> None:
        """Append one float32 [0, 1] or uint8 RGB (H, W, 3) frame; all frames must share one size."""
        if self._done:
            raise ValueError("write() on a closed VideoWriter")
        rgb = _frame_to_uint8_rgb(frame)
        h, w = rgb.shape[:2]
        if self.size is None:
            try:
                self._start(h, w)
            except BaseException:
                self.abort()
                raise
        elif (h, w) != self.size:
            raise ValueError(f"frame size {(h, w)} differs from the first frame's {self.size}")
        if self._pad != (0, 0):
            rgb = np.pad(rgb, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        if self._cv_writer is not None:
            self._cv_writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
        else:
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write(rgb.tobytes())
                self._proc.stdin.flush()  # hand each frame over now: recordings must not lag
            except (BrokenPipeError, OSError) as exc:
                self._proc.wait()
                detail = _stderr_tail(self._stderr) or f"exit code {self._proc.returncode}"
                if self.fragmented:
                    self._done = True
                    self._close_stderr()
                    raise MediaError(f"recording to {self.path} stopped: {self._settle(finished=False)}; "
                                     f"check free disk space (ffmpeg: {detail})") from exc
                self.abort()
                raise MediaError(f"ffmpeg stopped while writing {self.path}: {detail}; check free disk space") from exc
        self.frames_written += 1

    def close(self) -> None:
        """Finish encoding, mux audio, and move the file into place. Safe to call twice.

        Closing a writer that received no frames raises :class:`MediaError` and
        leaves nothing behind (there is no video to make); call :meth:`abort` to
        discard silently.
        """
        if self._done:
            return
        if self.frames_written == 0:
            self.abort()
            raise MediaError(f"no frames were written to {self.path}, so no video was saved")
        self._done = True
        try:
            failure = self._end_encoder()
        except BaseException:
            self._close_stderr()
            if not self.fragmented:
                self._remove_work()
            raise
        self._close_stderr()
        if self.fragmented:  # what the encoder put on disk is kept, whatever happened
            kept = self._settle(finished=failure is None)
            if failure is not None or self.frames_saved == 0:
                raise MediaError(f"recording to {self.path} stopped: {kept}; check free disk space "
                                 f"(ffmpeg: {failure or 'no playable frame'})")
            return
        try:
            if failure is not None:
                raise MediaError(f"ffmpeg failed to write {self.path}: {failure}; check free disk space")
            if self._audio is not None:
                self._mux_audio()
            if self._work != self.path:
                os.replace(self._work, self.path)
            self.frames_saved = self.frames_written
        except BaseException:
            self._remove_work()
            raise

    def _end_encoder(self) -> str | None:
        """Let the encoder finish the file; what went wrong, or None."""
        if self._cv_writer is not None:
            self._cv_writer.release()
            self._cv_writer = None
            return None
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.close()
        except OSError:
            pass  # ffmpeg already gone; its exit code tells why
        if self._proc.wait() != 0:
            return _stderr_tail(self._stderr) or f"exit code {self._proc.returncode}"
        return None

    def _settle(self, finished: bool) -> str:
        """Where a recording's frames end up, counted on disk (:attr:`frames_saved`), said in a few words.

        An existing file at :attr:`path` is replaced only by a finished recording with frames; the frames of
        one cut short (a full disk) are kept beside it under :func:`unfinished_name`, and a recording
        without a playable frame is removed.
        """
        count = frames_on_disk(self._work)
        self.frames_saved = count
        name = self.path.name
        frames = "the frames on disk" if count is None else f"the {count} frames on disk"
        if count == 0:
            self._remove_work()
            return "no frame reached the disk, so nothing was saved" + (
                f" ({name} is untouched)" if self._work != self.path else "")
        if self._work == self.path:
            return f"{frames} are kept"
        try:
            if finished:  # ffmpeg finished the file without an error
                os.replace(self._work, self.path)
                return f"{frames} are saved"
            kept = _move_aside(self._work, self.path)
            return f"{frames} are kept in {kept.name} beside it ({name} is untouched)"
        except OSError:
            return f"{frames} are kept in {self._work}"

    def _mux_audio(self) -> None:
        """Copy the audio of ``audio_from`` into the encoded video, cut to the video's duration.

        Trimming with ``-t`` rather than ``-shortest`` keeps every frame even when
        the audio track ends a little before the video. Audio is stream-copied when
        the container accepts its codec, else re-encoded to AAC; if neither works
        the video is kept without audio and a warning says so.
        """
        assert self._exe is not None and self._audio is not None
        muxed = partial_name(self.path, self.path.suffix)
        duration = f"{self.frames_written / self.fps:.6f}"
        reason = ""
        for audio_codec in (["-c:a", "copy"], ["-c:a", "aac", "-b:a", "192k"]):
            cmd = [
                self._exe, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                "-i", _native(self._work), "-i", _native(self._audio),
                "-map", "0:v:0", "-map", "1:a?", "-c:v", "copy", *audio_codec, "-t", duration,
            ]  # fmt: skip
            if self.path.suffix.lower() in (".mp4", ".mov"):
                cmd += ["-movflags", "+faststart"]
            cmd.append(_native(muxed))
            result = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if result.returncode == 0:
                os.replace(muxed, self._work)
                self.audio_muxed = True
                return
            lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = lines[-1] if lines else f"exit code {result.returncode}"
        muxed.unlink(missing_ok=True)
        warnings.warn(
            f"could not copy the audio of {self._audio} into {self.path} ({reason}); "
            "the video was saved without sound",
            stacklevel=3,
        )

    def abort(self) -> None:
        """Stop encoding and delete the output (for a fragmented writer, the recording too).

        Does nothing after a successful :meth:`close`.
        """
        if self._done:
            return
        self._done = True
        if self._cv_writer is not None:
            self._cv_writer.release()
            self._cv_writer = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            if self._proc.stdin is not None:
                try:
                    self._proc.stdin.close()
                except OSError:
                    pass
        self._close_stderr()
        self._remove_work()

    def _remove_work(self) -> None:
        try:
            self._work.unlink(missing_ok=True)
        except OSError:
            pass

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and self.fragmented and self.frames_written:
            # A recording is worth keeping even when the session ended in an error;
            # the original exception matters more than a failure to finish the file.
            try:
                self.close()
            except Exception:
                pass
            return
        super().__exit__(exc_type, exc, tb)


class FrameFolderWriter(_Writer):
    """Save frames as numbered PNGs ``00000.png``, ``00001.png``, ... in a folder.

    Each file holds exactly :func:`to_uint8` of the frame (8-bit RGB, lossless),
    for bit-exact comparisons. Frames go into a hidden sibling folder that is
    renamed to ``folder`` on :meth:`close`. A target that already exists must be
    empty or hold only numbered frames from an earlier run; those are replaced
    as a whole (so stale frames from a longer earlier run never mix in). Any
    other content is refused before work starts rather than deleted.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder)
        self.frames_written = 0
        self._done = False
        self._check_target()
        _check_parent(self.path)
        self._work = _partial_name(self.path)
        try:
            os.mkdir(self._work)
        except OSError as exc:
            raise MediaError(
                f"cannot write frames to {self.path}: {exc.strerror or exc}; choose a folder you can write to"
            ) from exc

    def _check_target(self) -> list[Path]:
        """The target's existing frame files; MediaError if it holds anything else."""
        if not self.path.exists():
            return []
        if not self.path.is_dir():
            raise MediaError(f"cannot write frames to {self.path}: it is a file; give a folder name")
        entries = list(self.path.iterdir())
        foreign = [e for e in entries if not (_FRAME_NAME.match(e.name) and e.is_file())]
        if foreign:
            raise MediaError(
                f"cannot write frames to {self.path}: the folder already holds other files "
                f"(such as {foreign[0].name}); give an empty or new folder"
            )
        return entries

    def write(self, frame: np.ndarray) -> None:
        """Save one float32 [0, 1] or uint8 RGB (H, W, 3) frame as the next numbered PNG."""
        if self._done:
            raise ValueError("write() on a closed FrameFolderWriter")
        rgb = _frame_to_uint8_rgb(frame)
        target = self._work / f"{self.frames_written:05d}.png"
        try:
            ok = cv2.imwrite(str(target), np.ascontiguousarray(rgb[:, :, ::-1]))
        except cv2.error:
            ok = False
        if not ok:
            raise MediaError(f"cannot write {target.name} to {self.path}: check free disk space")
        self.frames_written += 1

    def close(self) -> None:
        """Move the finished frames into place. Safe to call twice.

        Raises :class:`MediaError` (and leaves nothing behind) if no frame was written.
        """
        if self._done:
            return
        if self.frames_written == 0:
            self.abort()
            raise MediaError(f"no frames were written to {self.path}, so nothing was saved")
        self._done = True
        try:
            existing = self._check_target()
            if not self.path.exists():
                os.rename(self._work, self.path)
            elif not existing:
                os.rmdir(self.path)
                os.rename(self._work, self.path)
            else:
                old = _partial_name(self.path, ".old")
                os.rename(self.path, old)
                os.rename(self._work, self.path)
                shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            shutil.rmtree(self._work, ignore_errors=True)
            raise MediaError(f"cannot move the frames into {self.path}: {exc.strerror or exc}") from exc
        except BaseException:
            shutil.rmtree(self._work, ignore_errors=True)
            raise

    def abort(self) -> None:
        """Discard the frames written so far; the target folder is left as it was."""
        if self._done:
            return
        self._done = True
        shutil.rmtree(self._work, ignore_errors=True)


def open_writer(
    output: str | os.PathLike[str],
    fps: float,
    audio_from: str | os.PathLike[str] | None = None,
    *,
    fragmented: bool = False,
) -> VideoWriter | FrameFolderWriter:
    """Pick the writer for an output name given on the command line.

    A name ending in a path separator, or naming an existing folder, gets
    numbered PNG frames (``fps`` and ``audio_from`` do not apply to a folder);
    a .mp4/.mov/.mkv/.avi name gets a video. Anything else is refused, since
    guessing a container from an unknown extension would surprise the user.
    """
    text = os.fspath(output)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        return FrameFolderWriter(path)
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        shown = f"'{path.suffix}'" if path.suffix else "no extension"
        raise MediaError(
            f"cannot write {path}: {shown} is not a supported video type; use .mp4, .mov, .mkv "
            "or .avi, or end the name with / to save PNG frames"
        )
    return VideoWriter(path, fps, audio_from=audio_from, fragmented=fragmented)
