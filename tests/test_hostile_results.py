"""Unbounded work and silent wrong results: each hostile input here is refused or reported, never taken.

Huge images (a header claiming 20000x20000), NaN pixels, a driving video cut mid-file, NaN weights,
keypoints on a line (hull area 0), a broken reduced-precision model, a long run's timing history, and
the leftovers of a killed convert.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from livepuppet import cli, media, paths
from livepuppet.fomm.checkpoint import Checkpoint, check_finite
from livepuppet.errors import CheckpointError, MediaError
from livepuppet.runtime.pipeline import HISTORY_LENGTH, Pipeline, degenerate_hull


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a tiny compressed body: about 1 KB on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(4096))) + chunk(b"IEND", b"")


def _jpeg_header(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + bytes(9)
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


# --- 4. a pixel limit -------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [_png_header, _jpeg_header], ids=["png", "jpeg"])
def test_huge_image_is_refused_before_decoding(tmp_path: Path, make) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(make(20000, 20000))
    tracemalloc.start()
    try:
        with pytest.raises(MediaError) as info:
            media.read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "20000x20000" in str(info.value) and "megapixels" in str(info.value)
    assert peak < 16 << 20


def test_animate_with_a_huge_source_exits_2(tmp_path: Path, capsys) -> None:
    source = tmp_path / "huge.png"
    source.write_bytes(_png_header(20000, 20000))
    assert cli.main(["animate", "--source", str(source), "--driving", str(source),
                     "--output", str(tmp_path / "out.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "megapixels" in err and "Traceback" not in err


def test_a_jpeg_size_past_the_first_bytes_is_read_before_decoding(tmp_path: Path, monkeypatch) -> None:
    """Two 64 KB comment segments before the frame header: the size is found by skipping segments, not by
    decoding 9000x9000 pixels (imdecode is never reached)."""
    comments = (b"\xff\xfe" + struct.pack(">H", 65535) + bytes(65533)) * 2
    path = tmp_path / "huge.jpg"
    jpeg = _jpeg_header(9000, 9000)
    path.write_bytes(jpeg[:2] + comments + jpeg[2:])
    monkeypatch.setattr(media.cv2, "imdecode", lambda *a: pytest.fail("decoded before the size was checked"))
    with pytest.raises(MediaError, match="9000x9000 .81 megapixels"):
        media.read_image(path)


def _bmp_header(width: int, height: int) -> bytes:
    """A BMP whose header claims width x height (a format whose header livepuppet does not read itself)."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + info + bytes(64)


_OPENCV_LIMIT = """
import sys
import livepuppet.live.sinks  # any livepuppet module that imports cv2: the limit must already be set
import cv2
import numpy as np
from livepuppet import media
try:
    cv2.imdecode(np.frombuffer(open(sys.argv[1], "rb").read(), np.uint8), cv2.IMREAD_COLOR)
    print("decoded")
except cv2.error as exc:
    print("refused by OpenCV" if "CV_IO_MAX_IMAGE_PIXELS" in str(exc) else exc)
try:
    media.read_image(sys.argv[1])
except media.MediaError as exc:
    print(exc)
"""


def test_opencv_pixel_limit_is_set_before_cv2_loads(tmp_path: Path) -> None:
    path = tmp_path / "huge.bmp"
    path.write_bytes(_bmp_header(9000, 9000))
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    result = subprocess.run([sys.executable, "-c", _OPENCV_LIMIT, str(path)], capture_output=True, text=True,
                            timeout=60, env=env)
    lines = result.stdout.splitlines()
    assert lines[0] == "refused by OpenCV", result.stdout + result.stderr
    assert "above livepuppet's limit of 64 megapixels" in lines[1]


@pytest.mark.parametrize("kind", ["fifo", "device", "oversized"])
def test_an_image_that_is_no_regular_file_is_refused_unread(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "face.png"
    if kind == "fifo":
        os.mkfifo(path)  # reading waits for a writer that never comes
    elif kind == "device":
        path.symlink_to("/dev/zero")  # reading never ends
    else:
        with open(path, "wb") as f:
            f.write(_png_header(64, 64))
            f.truncate(300_000_000)  # sparse: nothing on disk, 300 MB to read
    code = "import sys\nfrom livepuppet import media\ntry:\n    media.read_image(sys.argv[1])\n" \
           "except media.MediaError as exc:\n    print(exc)"
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=30)
    expected = "more than the 256 MB" if kind == "oversized" else "not a regular file"
    assert expected in result.stdout, result.stdout + result.stderr[-2000:]


@pytest.fixture(scope="module")
def huge_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One black 8200x8200 frame (67 megapixels) as Motion JPEG: 0.8 MB on disk, 200 MB decoded, 800 MB as floats."""
    exe = media._ffmpeg_exe()
    if exe is None:
        pytest.skip("no ffmpeg binary to make the test video (install imageio-ffmpeg)")
    path = tmp_path_factory.mktemp("huge") / "huge.avi"
    subprocess.run([exe, "-v", "error", "-f", "lavfi", "-i", "color=black:s=8200x8200:d=0.04:r=25", "-c:v", "mjpeg",
                    str(path)], check=True, timeout=120)
    return path


_PEAK = """
import sys
from livepuppet.commands.run import peak_memory_mb
try:
    {call}
except Exception as exc:
    print(type(exc).__name__, exc)
print("peak", peak_memory_mb())
"""


@pytest.mark.parametrize("call", ["from livepuppet.cli import main; sys.exit(main(sys.argv[1:]))",
                                  "from livepuppet.live.capture import open_camera; open_camera(sys.argv[5])"],
                         ids=["animate-driving", "camera"])
def test_video_frames_over_the_limit_are_refused_by_their_declared_size(huge_video: Path, tmp_path: Path,
                                                                        call: str) -> None:
    source = tmp_path / "face.png"
    cv2.imwrite(str(source), np.zeros((64, 64, 3), np.uint8))
    args = ["animate", "--source", str(source), "--driving", str(huge_video), "--output", str(tmp_path / "o.mp4"),
            "--model", str(tmp_path / "model")]
    code = _PEAK.format(call=call.replace("sys.exit(main(sys.argv[1:]))", "main(sys.argv[1:])"))
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert "8200x8200 (67 megapixels), above livepuppet's limit" in output, output[-2000:]
    peak = float(result.stdout.split("peak")[-1])
    print(f"\npeak memory refusing an 8200x8200 video: {peak:.0f} MB")
    assert peak < 400  # one decoded frame alone would be 200 MB, and 800 MB as floats


def test_an_ordinary_photo_is_within_the_limit() -> None:
    assert media.header_size(_png_header(4000, 3000)) == (4000, 3000)
    assert 4000 * 3000 < media.MAX_PIXELS


# --- 5. silent wrong results --------------------------------------------------------------------------------


def test_nan_pixels_are_refused(tmp_path: Path) -> None:
    image = np.full((32, 32, 3), 0.5, np.float32)
    image[3, 4, 1] = np.nan
    path = tmp_path / "nan.tiff"
    assert cv2.imwrite(str(path), image)
    with pytest.raises(MediaError, match="NaN or infinite pixels"):
        media.read_image(path)


@pytest.mark.skipif(media._ffmpeg_exe() is None, reason="no ffmpeg binary (install imageio-ffmpeg)")
def test_truncated_driving_video_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "drive.mp4"
    rng = np.random.default_rng(0)
    with media.VideoWriter(path, 25) as writer:
        for _ in range(60):
            writer.write(rng.random((64, 64, 3), dtype=np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # moov is at the front (faststart): the rest plays up to the cut
    with media.open_frames(path) as source:
        assert source.frame_count == 60
        got = sum(1 for _ in source)
        notices = list(source.notices)
    assert 0 < got < 60
    assert notices and f"after {got} of its 60 frames" in notices[0]


def test_nan_weights_name_the_tensor(tmp_path: Path) -> None:
    weight = np.ones((4, 3), np.float32)
    weight[1, 2] = np.inf
    ckpt = Checkpoint({"ok": np.ones(3, np.float32), "dense.weight": weight}, {}, tmp_path / "x.pth", "0")
    with pytest.raises(CheckpointError) as info:
        check_finite(ckpt)
    assert "generator['dense.weight'] holds 1 NaN or infinite values of 12" in str(info.value)
    check_finite(Checkpoint({"n": np.array([3], np.int64)}, {"k": np.zeros(2, np.float16)}, ckpt.path, "0"))


def test_convert_of_nan_weights_exits_2_naming_the_tensor(tmp_path: Path, capsys) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "nan.pth.tar"
    torch.save({"generator": {"first.conv.weight": torch.full((2, 2), float("nan"))}, "kp_detector": {}}, path)
    assert cli.main(["convert", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "first.conv.weight" in err and "report this" not in err, err


def test_degenerate_hull_gives_scale_one() -> None:
    tf = pytest.importorskip("tensorflow")
    from livepuppet.fomm.modules.kp_processing import movement_scale

    line = np.stack([np.linspace(-0.5, 0.5, 5), np.linspace(-0.2, 0.2, 5)], -1)[None].astype(np.float32)
    square = np.array([[[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5], [0, 0]]], np.float32)
    for source, initial in ((square, line), (line, square), (line, line)):
        scale = float(movement_scale(tf.constant(source), tf.constant(initial)))
        assert scale == 1.0
    assert math.isclose(float(movement_scale(tf.constant(square), tf.constant(square * 0.5))), 2.0, rel_tol=1e-5)
    assert degenerate_hull(line) and not degenerate_hull(square) and degenerate_hull(square * np.nan)


class _StubEngine:
    """Just enough of an Engine for Pipeline's own bookkeeping: keypoints on a line, frames echoed."""

    frame_size = (8, 8)

    def __init__(self, value: np.ndarray) -> None:
        self.value = value

    def encode_source(self, image):
        return SimpleNamespace(keypoints=SimpleNamespace(value=self.value))

    def detect_keypoints(self, frames):
        return _Indexable(self.value, len(frames))

    def process_keypoints(self, *args):
        return None

    def generate(self, norm, source):
        return np.zeros((1, 8, 8, 3), np.float32)


class _Indexable:
    def __init__(self, value: np.ndarray, n: int) -> None:
        self.value = np.repeat(value, n, 0)

    def __getitem__(self, i):
        return SimpleNamespace(value=self.value[i:i + 1])


def test_degenerate_calibration_is_reported_once() -> None:
    line = np.stack([np.linspace(-0.5, 0.5, 5), np.zeros(5)], -1)[None].astype(np.float32)
    pipe = Pipeline(_StubEngine(line))
    pipe.set_source(np.zeros((8, 8, 3), np.float32))
    for _ in range(3):
        pipe.animate(np.zeros((1, 8, 8, 3), np.float32))
    assert len(pipe.notices) == 1 and "scale 1" in pipe.notices[0]


# --- 4. a long run's bookkeeping stays bounded -------------------------------------------------------------


def test_pipeline_history_is_bounded() -> None:
    square = np.array([[[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5], [0, 0]]], np.float32)
    pipe = Pipeline(_StubEngine(square))
    pipe.set_source(np.zeros((8, 8, 3), np.float32))
    frame = np.zeros((1, 8, 8, 3), np.float32)
    for _ in range(HISTORY_LENGTH + 500):
        pipe.animate(frame)
    assert {len(v) for k, v in pipe.history.items() if k != "source"} == {HISTORY_LENGTH}
    assert not pipe.notices


# --- 4. a killed convert's leftovers are cleaned ------------------------------------------------------------


def test_stale_partial_folders_are_removed(tmp_path: Path) -> None:
    from livepuppet.outputs import partial_folder

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "model"
    stale = tmp_path / f".model.partial-{int(dead.stdout)}-abcdef"
    stale.mkdir()
    (stale / "generator.tflite").write_bytes(bytes(1000))
    live = paths.partial_name(out)  # this process is alive: its work is left alone
    live.mkdir()
    assert paths.stale_partials(out) == [stale]
    fresh = partial_folder(out)
    assert not stale.exists() and live.exists() and fresh.exists()


# --- 5. reduced-precision models are verified too ---------------------------------------------------------


@pytest.mark.parametrize("precision,error", [("fp16", float("nan")), ("int8", 5.0), ("fp16", 0.5)])
def test_broken_reduced_precision_model_is_not_written(precision: str, error: float) -> None:
    from livepuppet.conversion import export
    from livepuppet.conversion.job import Check
    from livepuppet.conversion.targets.tflite import REDUCED_TOLERANCE

    label = f"generator (tflite, xnnpack graph, {precision})"
    with pytest.raises(export.VerificationError, match=f"converted generator .*{precision}.*--precision fp32"):
        export.enforce([Check(label, error, REDUCED_TOLERANCE[precision])])
    export.enforce([Check(label, REDUCED_TOLERANCE[precision] / 2, REDUCED_TOLERANCE[precision])])


# --- 6. one float -> uint8 rule -------------------------------------------------------------------------------


def test_live_and_animate_round_frames_alike() -> None:
    from livepuppet.live.sinks import to_uint8 as live

    edges = (np.arange(256, dtype=np.float32) + 0.5) / 255  # exactly between two levels
    frame = np.concatenate([edges, [np.nan, -1.0, 2.0, np.inf]]).astype(np.float32).reshape(1, -1, 1).repeat(3, 2)
    np.testing.assert_array_equal(live(frame), media.to_uint8(frame))
    assert list(live(frame)[0, -4:, 0]) == [0, 0, 255, 255]


# --- 8. users never see TensorFlow's start-up noise ----------------------------------------------------------


def test_tensorflow_start_up_is_quiet(tmp_path: Path) -> None:
    """In a fresh process (TensorFlow not yet imported): no absl, cuInit or oneDNN lines reach stderr."""
    code = ("from livepuppet.quiet import import_tensorflow\n"
            "tf = import_tensorflow()\n"
            "print(float(tf.reduce_sum(tf.ones([3]))))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "3.0", result.stderr
    for noise in ("absl", "cuInit", "oneDNN", "cuda", "E0000", "I0000"):
        assert noise not in result.stderr, result.stderr


def test_fps_summary_of_a_single_batch() -> None:
    from livepuppet.live.loop import LiveStats

    one_batch = LiveStats(frames=4, seconds=0.0005, batch=4, stop_reason="frames")
    assert one_batch.fps == 0 and "4 avatar frames in one batch" in one_batch.summary()
    assert "5317" not in one_batch.summary() and " fps " not in one_batch.summary()
    several = LiveStats(frames=9, seconds=2.0, batch=4, stop_reason="frames")
    assert several.summary().startswith("9 avatar frames at 4.0 fps")
