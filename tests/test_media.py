"""Tests for livepuppet.media: image reading, resizing, frame sources and writers.

Material is generated on the fly (numpy, OpenCV, Pillow, the ffmpeg binary from
imageio-ffmpeg) plus scikit-image's astronaut as a real photograph. No TensorFlow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from livepuppet import media
from livepuppet.errors import LivepuppetError, MediaError

FFMPEG = media._ffmpeg_exe()
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="no ffmpeg binary (install imageio-ffmpeg)")
posix_only = pytest.mark.skipif(os.name != "posix", reason="uses POSIX signals and /proc")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """A real photo, uint8 RGB 512x512."""
    return skdata.astronaut()


def _photo(astronaut: np.ndarray, h: int, w: int) -> np.ndarray:
    """The astronaut shrunk to (h, w), uint8 RGB."""
    return cv2.resize(astronaut, (w, h), interpolation=cv2.INTER_AREA)


def _save_rgb(path: Path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))


def to255(img: np.ndarray) -> np.ndarray:
    return media.to_uint8(img)


def _assert_one_line(exc: pytest.ExceptionInfo[MediaError]) -> None:
    message = str(exc.value)
    assert message and "\n" not in message
    assert isinstance(exc.value, LivepuppetError)


def _level(i: int) -> int:
    """The 0-255 grey level of frame i (distinct for i < 30)."""
    return 20 + 7 * i


def _gray_frame(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A flat frame whose level encodes its index, easy to recognise after lossy coding."""
    return np.full((h, w, 3), _level(i) / 255.0, dtype=np.float32)


def _levels(video: Path) -> list[float]:
    """Mean 0-255 level of each frame of a video, read with OpenCV."""
    with media.open_frames(video) as source:
        return [float(frame.mean() * 255.0) for frame in source]


# --------------------------------------------------------------------------- read_image


def test_read_rgb_png_is_exact_and_rgb_ordered(tmp_path: Path, astronaut: np.ndarray) -> None:
    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(path)  # Pillow writes RGB order, OpenCV must not swap it
    img = media.read_image(path)
    assert img.dtype == np.float32 and img.shape == (512, 512, 3)
    np.testing.assert_array_equal(img, astronaut.astype(np.float32) / np.float32(255))
    assert img.flags["C_CONTIGUOUS"]


def test_read_grayscale_becomes_three_equal_channels(tmp_path: Path, astronaut: np.ndarray) -> None:
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    path = tmp_path / "gray.png"
    Image.fromarray(gray).save(path)
    img = media.read_image(path)
    assert img.shape == (512, 512, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], gray / np.float32(255))


def test_read_rgba_drops_alpha(tmp_path: Path, astronaut: np.ndarray) -> None:
    rgba = np.dstack([astronaut, np.zeros(astronaut.shape[:2], np.uint8)])  # fully transparent
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    img = media.read_image(path)
    assert img.shape == (512, 512, 3)
    np.testing.assert_array_equal(to255(img), astronaut)


def test_read_gray_alpha(tmp_path: Path) -> None:
    gray = np.arange(60, dtype=np.uint8).reshape(6, 10) * 4
    path = tmp_path / "la.png"
    Image.fromarray(gray).convert("LA").save(path)
    img = media.read_image(path)
    assert img.shape == (6, 10, 3)
    np.testing.assert_array_equal(to255(img)[:, :, 1], gray)


def test_read_palette(tmp_path: Path, astronaut: np.ndarray) -> None:
    pal = Image.fromarray(_photo(astronaut, 64, 80)).quantize(colors=32)
    assert pal.mode == "P"
    path = tmp_path / "palette.png"
    pal.save(path)
    img = media.read_image(path)
    assert img.shape == (64, 80, 3)
    np.testing.assert_array_equal(to255(img), np.asarray(pal.convert("RGB")))


def test_read_16_bit_divides_by_65535(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb16 = rng.integers(0, 65536, size=(7, 9, 3), dtype=np.uint16)
    rgb16[0, 0] = (0, 65535, 1)
    path = tmp_path / "deep.png"
    assert cv2.imwrite(str(path), rgb16[:, :, ::-1])
    img = media.read_image(path)
    assert img.dtype == np.float32 and img.shape == (7, 9, 3)
    np.testing.assert_allclose(img, rgb16 / 65535.0, rtol=0, atol=1e-7)
    assert img[0, 0, 0] == 0.0 and img[0, 0, 1] == 1.0


def test_read_16_bit_grayscale(tmp_path: Path) -> None:
    gray16 = np.linspace(0, 65535, 20, dtype=np.uint16).reshape(4, 5)
    path = tmp_path / "gray16.png"
    assert cv2.imwrite(str(path), gray16)
    img = media.read_image(path)
    np.testing.assert_allclose(img[:, :, 2], gray16 / 65535.0, rtol=0, atol=1e-7)


def test_read_applies_exif_orientation(tmp_path: Path) -> None:
    picture = np.zeros((10, 20, 3), np.uint8)
    picture[:, :10] = 255  # white left half, black right half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    Image.fromarray(picture).save(path, exif=exif.tobytes(), quality=95)
    img = media.read_image(path)
    assert img.shape == (20, 10, 3)  # upright: portrait
    assert img[:8].mean() > 0.9 and img[12:].mean() < 0.1  # left half became the top


def test_read_missing_image(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="not found") as exc:
        media.read_image(tmp_path / "nope.png")
    _assert_one_line(exc)


def test_read_directory_as_image(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="folder") as exc:
        media.read_image(tmp_path)
    _assert_one_line(exc)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3, b"not an image at all"])
def test_read_corrupt_image(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(MediaError, match="cannot read image") as exc:
        media.read_image(path)
    _assert_one_line(exc)


# --------------------------------------------------------------------------- fit_frame, to_uint8


def test_fit_frame_passes_through_unchanged(astronaut: np.ndarray) -> None:
    img = astronaut[:256, :192].astype(np.float32) / 255
    out = media.fit_frame(img, (256, 192))
    assert out is img  # not resampled, not even copied


@pytest.mark.parametrize("size", [(100, 60), (60, 100), (700, 300), (300, 700)])
def test_fit_frame_resizes_non_square(astronaut: np.ndarray, size: tuple[int, int]) -> None:
    img = astronaut.astype(np.float32) / 255
    out = media.fit_frame(img, size)
    assert out.shape == (*size, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # Stretched, not cropped: the top-left and bottom-right corners stay where they were.
    np.testing.assert_allclose(out[0, 0], img[:4, :4].mean(axis=(0, 1)), atol=0.15)
    np.testing.assert_allclose(out[-1, -1], img[-4:, -4:].mean(axis=(0, 1)), atol=0.15)


def test_fit_frame_downscale_averages() -> None:
    checker = np.indices((64, 96)).sum(axis=0) % 2  # 1-pixel checkerboard
    img = np.repeat(checker[:, :, None], 3, axis=2).astype(np.float32)
    out = media.fit_frame(img, (16, 24))
    np.testing.assert_allclose(out, 0.5, atol=1e-6)  # INTER_AREA: no aliasing


def test_fit_frame_upscale_clips_overshoot() -> None:
    img = np.zeros((8, 8, 3), np.float32)
    img[:, 4:] = 1.0  # a hard edge makes bicubic ring past [0, 1]
    out = media.fit_frame(img, (32, 40))
    assert out.shape == (32, 40, 3)
    assert out.min() == 0.0 and out.max() == 1.0


def test_fit_frame_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        media.fit_frame(np.zeros((4, 4), np.float32), (2, 2))
    with pytest.raises(ValueError):
        media.fit_frame(np.zeros((4, 4, 3), np.float32), (0, 2))


def test_to_uint8_rounds_and_clips() -> None:
    frame = np.array([0.0, 1.0, 0.5, 2.5 / 255, 3.5 / 255, -0.3, 1.7, np.nan, 0.2], np.float32)
    out = media.to_uint8(frame)
    assert out.dtype == np.uint8
    # 0.5 * 255 = 127.5 -> 128 and 2.5 -> 2, 3.5 -> 4: round half to even, like torch.round.
    assert out.tolist() == [0, 255, 128, 2, 4, 0, 255, 0, 51]


def test_to_uint8_inverts_division_by_255() -> None:
    levels = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(media.to_uint8(levels.astype(np.float32) / np.float32(255)), levels)


# --------------------------------------------------------------------------- frame folders


def test_folder_zero_padded_order(tmp_path: Path) -> None:
    for i in (10, 2, 0, 1):
        _save_rgb(tmp_path / f"{i:05d}.png", np.full((6, 8, 3), i, np.uint8))
    source = media.open_frames(tmp_path)
    assert source.fps == media.FOLDER_FPS == 30.0
    assert source.frame_count == 4 and source.size == (6, 8) and source.audio_source is None
    assert [round(f[0, 0, 0] * 255) for f in source] == [0, 1, 2, 10]


def test_folder_natural_order_and_filtering(tmp_path: Path) -> None:
    for i in (10, 2, 1, 33):
        _save_rgb(tmp_path / f"frame{i}.png", np.full((5, 5, 3), i, np.uint8))
    _save_rgb(tmp_path / "Frame3.JPG", np.full((5, 5, 3), 3, np.uint8))  # upper-case name and extension
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / ".hidden.png").write_bytes(b"junk")  # dot files (e.g. macOS ._ files) are skipped
    (tmp_path / "sub.png").mkdir()  # a folder, whatever its name
    with media.open_frames(tmp_path) as source:
        levels = [round(float(f.mean()) * 255) for f in source]
    assert levels == [1, 2, 3, 10, 33]


def test_folder_mixed_image_kinds(tmp_path: Path, astronaut: np.ndarray) -> None:
    Image.fromarray(_photo(astronaut, 40, 30)).convert("L").save(tmp_path / "a0.png")
    Image.fromarray(_photo(astronaut, 40, 30)).save(tmp_path / "a1.jpg")
    frames = list(media.open_frames(tmp_path))
    assert len(frames) == 2 and all(f.shape == (40, 30, 3) and f.dtype == np.float32 for f in frames)


def test_folder_corrupt_frame_reported_with_its_name(tmp_path: Path) -> None:
    _save_rgb(tmp_path / "0.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "1.png").write_bytes(b"garbage")
    source = media.open_frames(tmp_path)
    next(source)
    with pytest.raises(MediaError, match="1.png"):
        next(source)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no images") as exc:
        media.open_frames(tmp_path)
    _assert_one_line(exc)
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(MediaError, match="no images"):
        media.open_frames(tmp_path)


def test_missing_driving_input(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="not found") as exc:
        media.open_frames(tmp_path / "driving.mp4")
    _assert_one_line(exc)


# --------------------------------------------------------------------------- videos


@pytest.mark.parametrize("content", [b"", os.urandom(4096)])
def test_corrupt_video(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "driving.mp4"
    path.write_bytes(content)
    with pytest.raises(MediaError, match="cannot read video") as exc:
        media.open_frames(path)
    _assert_one_line(exc)


@needs_ffmpeg
def test_video_round_trip(tmp_path: Path, astronaut: np.ndarray) -> None:
    base = _photo(astronaut, 96, 128).astype(np.float32) / 255
    frames = [np.roll(base, 3 * i, axis=1) for i in range(20)]
    out = tmp_path / "out.mp4"
    with media.VideoWriter(out, fps=12.5) as writer:
        assert writer.codec == "libx264"
        for frame in frames:
            writer.write(frame)
        assert not out.exists()  # atomic: nothing under the final name yet
    assert writer.frames_written == 20 and writer.size == (96, 128)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no partial left over

    with media.open_frames(out) as source:
        assert source.fps == 12.5 and source.size == (96, 128) and source.frame_count == 20
        assert source.audio_source is None
        back = list(source)
    assert len(back) == 20
    for got, want in zip(back, frames):
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.abs(got - want).mean() < 0.02
    assert media.probe_video(out) == {"frame_count": 20, "fps": 12.5, "size": (96, 128), "has_audio": False}


@needs_ffmpeg
def test_video_uint8_frames_and_odd_size(tmp_path: Path, astronaut: np.ndarray) -> None:
    photo = _photo(astronaut, 45, 33)  # odd both ways: padded to 46 x 34 for yuv420p
    out = tmp_path / "odd.mkv"
    with media.VideoWriter(out, 25) as writer:
        for _ in range(3):
            writer.write(photo)
    frames = list(media.open_frames(out))
    assert len(frames) == 3 and frames[0].shape == (46, 34, 3)
    # A tiny, detailed picture loses some colour to 4:2:0 subsampling; only gross errors fail.
    assert np.abs(to255(frames[0][:45, :33]).astype(int) - photo).mean() < 10
    # The padding repeats the edge instead of adding a black bar.
    assert np.abs(frames[0][45] - frames[0][44]).mean() < 0.05


def test_video_writer_rejects_mismatched_frames(tmp_path: Path) -> None:
    writer = media.VideoWriter(tmp_path / "x.mp4", 25)
    writer.write(_gray_frame(0))
    with pytest.raises(ValueError, match="differs"):
        writer.write(_gray_frame(1, h=50))
    with pytest.raises(ValueError):
        writer.write(np.zeros((48, 64), np.float32))
    with pytest.raises(TypeError):
        writer.write(np.zeros((48, 64, 3), np.int32))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


@needs_ffmpeg
def test_audio_passthrough(tmp_path: Path) -> None:
    source_video = tmp_path / "talk.mp4"
    subprocess.run(
        [
            FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(source_video),
        ],
        check=True,
    )  # fmt: skip
    with media.open_frames(source_video) as source:
        assert source.audio_source == source_video
        frames = list(source)
        fps = source.fps
    assert len(frames) == 25

    out = tmp_path / "puppet.mp4"
    with media.VideoWriter(out, fps, audio_from=source.audio_source) as writer:
        for frame in frames:
            writer.write(frame)
    assert writer.audio_muxed
    info = media.probe_video(out)
    assert info["has_audio"] is True and info["frame_count"] == 25 and info["fps"] == 25.0
    assert media.open_frames(out).audio_source == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["puppet.mp4", "talk.mp4"]

    # A longer video than its audio keeps every frame (no -shortest truncation).
    long_out = tmp_path / "long.mov"
    with media.VideoWriter(long_out, fps, audio_from=source_video) as writer:
        for frame in frames + frames:
            writer.write(frame)
    assert media.probe_video(long_out)["frame_count"] == 50


@needs_ffmpeg
def test_audio_from_silent_video_is_ignored(tmp_path: Path) -> None:
    silent = tmp_path / "silent.mp4"
    with media.VideoWriter(silent, 25) as writer:
        for i in range(3):
            writer.write(_gray_frame(i))
    with media.VideoWriter(tmp_path / "out.mp4", 25, audio_from=silent) as writer:
        writer.write(_gray_frame(0))
    assert not writer.audio_muxed
    assert media.probe_video(tmp_path / "out.mp4")["has_audio"] is False


@needs_ffmpeg
@posix_only
def test_encoder_dying_is_reported(tmp_path: Path) -> None:
    writer = media.VideoWriter(tmp_path / "out.mp4", 25)
    writer.write(_gray_frame(0))
    assert writer.encoder_pid is not None
    os.kill(writer.encoder_pid, signal.SIGKILL)  # as if the disk filled up or ffmpeg crashed
    with pytest.raises(MediaError, match="ffmpeg stopped") as exc:
        for i in range(200):  # the pipe buffers a few frames before the break shows
            writer.write(_gray_frame(i % 30))
    _assert_one_line(exc)
    assert list(tmp_path.iterdir()) == []


def test_audio_from_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="audio source not found"):
        media.VideoWriter(tmp_path / "out.mp4", 25, audio_from=tmp_path / "nope.mp4")


def test_abort_and_exceptions_leave_nothing(tmp_path: Path) -> None:
    writer = media.VideoWriter(tmp_path / "a.mp4", 25)
    for i in range(5):
        writer.write(_gray_frame(i))
    writer.abort()
    writer.abort()  # idempotent
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(RuntimeError, match="boom"):
        with media.VideoWriter(tmp_path / "b.mp4", 25) as writer:
            writer.write(_gray_frame(0))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(KeyboardInterrupt):
        with media.FrameFolderWriter(tmp_path / "frames") as folder_writer:
            folder_writer.write(_gray_frame(0))
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_existing_output_survives_abort(tmp_path: Path) -> None:
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"previous result")
    writer = media.VideoWriter(out, 25)
    writer.write(_gray_frame(0))
    writer.abort()
    assert out.read_bytes() == b"previous result"


def test_close_without_frames(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no frames"):
        with media.VideoWriter(tmp_path / "a.mp4", 25):
            pass
    with pytest.raises(MediaError, match="no frames"):
        with media.FrameFolderWriter(tmp_path / "frames"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_cv2_fallback_without_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "_ffmpeg_exe", lambda: None)
    out = tmp_path / "fallback.mp4"
    with media.VideoWriter(out, 12.5, audio_from=None) as writer:
        assert writer.codec == "mp4v"
        for i in range(6):
            writer.write(_gray_frame(i, h=31, w=41))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fallback.mp4"]
    info = media.probe_video(out)
    assert info["frame_count"] == 6 and info["fps"] == 12.5 and info["size"] == (32, 42)
    levels = _levels(out)  # MPEG-4 part 2 shifts levels a little (range conversion)
    assert all(abs(got - _level(i)) < 5 for i, got in enumerate(levels))


# --------------------------------------------------------------------------- fragmented recordings


def _run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _wait_gone(pid: int, timeout: float = 30.0) -> None:
    """Wait for a process that is not our child (an orphaned ffmpeg) to finish."""
    deadline = time.monotonic() + timeout
    stat = Path(f"/proc/{pid}/stat")
    while time.monotonic() < deadline:
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return
        if state == "Z":
            return
        time.sleep(0.05)
    raise AssertionError(f"ffmpeg (pid {pid}) still running after {timeout} s")


_CHILD_PRELUDE = """
    import os, signal, sys, time
    import numpy as np
    from livepuppet.media import VideoWriter

    out, n = sys.argv[1], int(sys.argv[2])
    writer = VideoWriter(out, 25, fragmented=True)
    for i in range(n):
        writer.write(np.full((48, 64, 3), (20 + 7 * i) / 255.0, np.float32))
"""


@needs_ffmpeg
@posix_only
def test_fragmented_recording_survives_killed_process(tmp_path: Path) -> None:
    out = tmp_path / "live.mp4"
    child = _run_child(
        _CHILD_PRELUDE
        + """
    print(writer.encoder_pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """,
        str(out),
        "20",
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    _wait_gone(int(child.stdout.split()[0]))  # ffmpeg outlives us and completes the file
    levels = _levels(out)
    assert len(levels) == 20
    assert all(abs(got - _level(i)) < 3 for i, got in enumerate(levels))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.mp4"]  # written in place


@needs_ffmpeg
@posix_only
def test_fragmented_recording_survives_killed_encoder(tmp_path: Path) -> None:
    """Even when ffmpeg dies too (power cut, OOM killer), frames already encoded are on disk."""
    out = tmp_path / "live.mp4"
    child = _run_child(
        _CHILD_PRELUDE
        + """
    import cv2
    def playable():
        cap = cv2.VideoCapture(out, cv2.CAP_FFMPEG)
        count = 0
        while cap.isOpened() and cap.grab():
            count += 1
        cap.release()
        return count
    deadline = time.monotonic() + 20
    while playable() < n - 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(writer.encoder_pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
    """,
        str(out),
        "30",
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    levels = _levels(out)
    assert len(levels) >= 29  # only the frame still waiting for its fragment can be lost
    assert all(abs(got - _level(i)) < 3 for i, got in enumerate(levels))


@needs_ffmpeg
def test_fragmented_writes_in_place_and_keeps_recording_on_error(tmp_path: Path) -> None:
    out = tmp_path / "rec.mp4"
    with pytest.raises(RuntimeError):
        with media.VideoWriter(out, 25, fragmented=True) as writer:
            assert out.exists()  # in place from the start
            for i in range(4):
                writer.write(_gray_frame(i))
            raise RuntimeError("camera unplugged")
    assert media.probe_video(out)["frame_count"] == 4

    writer = media.VideoWriter(out, 25, fragmented=True)  # over the existing file: written beside it
    writer.write(_gray_frame(0))
    writer.abort()  # an explicit abort discards even a recording, and leaves the earlier file alone
    assert list(tmp_path.iterdir()) == [out] and media.probe_video(out)["frame_count"] == 4
    out.unlink()
    writer = media.VideoWriter(out, 25, fragmented=True)
    writer.write(_gray_frame(0))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- frame folder writer


def test_frame_folder_writer(tmp_path: Path, astronaut: np.ndarray) -> None:
    target = tmp_path / "frames"
    frames = [np.roll(_photo(astronaut, 30, 40).astype(np.float32) / 255, i, axis=0) for i in range(3)]
    frames[1] = frames[1] + np.float32(0.7 / 255)  # not on the 8-bit grid: must round, not truncate
    with media.FrameFolderWriter(target) as writer:
        for frame in frames:
            writer.write(frame)
        assert not target.exists()
    assert writer.frames_written == 3
    assert sorted(p.name for p in target.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
    for i, frame in enumerate(frames):
        saved = np.asarray(Image.open(target / f"{i:05d}.png"))
        assert saved.dtype == np.uint8 and saved.shape == (30, 40, 3)
        np.testing.assert_array_equal(saved, media.to_uint8(frame))
    # And it reads back as a driving folder.
    assert len(list(media.open_frames(target))) == 3


def test_frame_folder_replaces_earlier_frames(tmp_path: Path) -> None:
    target = tmp_path / "frames"
    with media.FrameFolderWriter(target) as writer:
        for i in range(5):
            writer.write(_gray_frame(i, 4, 4))
    with media.FrameFolderWriter(target) as writer:
        for i in range(2):
            writer.write(_gray_frame(9, 4, 4))
    assert sorted(p.name for p in target.iterdir()) == ["00000.png", "00001.png"]  # no stale 00002-00004
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_frame_folder_existing_empty_folder(tmp_path: Path) -> None:
    target = tmp_path / "frames"
    target.mkdir()
    with media.FrameFolderWriter(target) as writer:
        writer.write(_gray_frame(0, 4, 4))
    assert [p.name for p in target.iterdir()] == ["00000.png"]


def test_frame_folder_refuses_foreign_content(tmp_path: Path) -> None:
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(MediaError, match="other files") as exc:
        media.FrameFolderWriter(target)
    _assert_one_line(exc)
    assert (target / "holiday.jpg").read_bytes() == b"precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(MediaError, match="is a file"):
        media.FrameFolderWriter(tmp_path / "file")


# --------------------------------------------------------------------------- open_writer, bad locations


def test_open_writer_dispatch(tmp_path: Path) -> None:
    folder_writer = media.open_writer(f"{tmp_path}/frames/", 25)
    assert isinstance(folder_writer, media.FrameFolderWriter)
    assert folder_writer.path == tmp_path / "frames"
    folder_writer.abort()

    existing = tmp_path / "existing"
    existing.mkdir()
    writer = media.open_writer(str(existing), 25)
    assert isinstance(writer, media.FrameFolderWriter)
    writer.abort()

    for name in ("a.mp4", "b.MOV", "c.mkv", "d.avi"):
        writer = media.open_writer(str(tmp_path / name), 25)
        assert isinstance(writer, media.VideoWriter)
        writer.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


@pytest.mark.parametrize("name", ["out.gif", "out.png", "out"])
def test_open_writer_rejects_unknown_extension(tmp_path: Path, name: str) -> None:
    with pytest.raises(MediaError, match="not a supported video type") as exc:
        media.open_writer(str(tmp_path / name), 25)
    _assert_one_line(exc)
    with pytest.raises(MediaError):
        media.VideoWriter(tmp_path / name, 25)


def test_unwritable_locations(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="does not exist") as exc:
        media.open_writer(str(tmp_path / "missing" / "out.mp4"), 25)
    _assert_one_line(exc)
    (tmp_path / "file").write_text("x")
    with pytest.raises(MediaError, match="not a folder"):
        media.open_writer(str(tmp_path / "file" / "out.mp4"), 25)
    with pytest.raises(MediaError, match="not a folder"):
        media.open_writer(str(tmp_path / "file" / "frames") + "/", 25)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(MediaError, match="folder of that name"):
        media.VideoWriter(tmp_path / "dir.mp4", 25)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(MediaError, match="cannot write"):
            media.open_writer(str(locked / "out.mp4"), 25)
        with pytest.raises(MediaError, match="cannot write"):
            media.open_writer(str(locked / "frames") + "/", 25)
    finally:
        locked.chmod(0o755)
