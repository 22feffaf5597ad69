"""Nothing of the user's is lost, and no server or disk can make livepuppet work without end.

Hostile servers (endless body, a byte at a time, a redirect to ftp://), a full disk (RLIMIT_FSIZE in a
child process: writes fail with EFBIG as on a full disk), two downloads at once, recordings over an
existing file, and outputs that name an input.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest

from livepuppet import cli, media
from livepuppet.hub.download import download
from livepuppet.errors import DownloadError, MediaError
from livepuppet.hub.registry import ModelEntry
from tests.test_download import serving

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = random.Random(7).randbytes(200_000)
FILENAME = "model.pth.tar"
needs_ffmpeg = pytest.mark.skipif(media._ffmpeg_exe() is None, reason="no ffmpeg binary (install imageio-ffmpeg)")


class _Hostile(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_GET(self):
        mode = self.path.strip("/").split("/")[0]
        self.server.hits.append(mode)
        if mode == "ftp":
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/model.pth.tar")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        if mode == "ok" or mode == "gate":
            self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        try:
            if mode == "endless":  # no length, never ends
                block = bytes(64 * 1024)
                while not self.server.stop.is_set():
                    self.wfile.write(block)
            elif mode == "trickle":  # a byte now and then: never trips a read timeout
                while not self.server.stop.wait(0.02):
                    self.wfile.write(b"x")
                    self.wfile.flush()
            elif mode == "gate":  # half, then the rest once the test opens the gate
                self.wfile.write(PAYLOAD[:1000])
                self.wfile.flush()
                self.server.started.set()
                self.server.gate.wait(30)
                self.wfile.write(PAYLOAD[1000:])
            else:
                self.wfile.write(PAYLOAD)
        except OSError:
            pass  # the client gave up, as it should


@contextlib.contextmanager
def _serving():
    with serving(PAYLOAD, _Hostile) as srv:
        srv.hits, srv.stop, srv.gate, srv.started = [], threading.Event(), threading.Event(), threading.Event()
        try:
            yield srv
        finally:
            srv.stop.set()
            srv.gate.set()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with _serving() as srv:
        yield srv


def _entry(url: str, size: int | None = len(PAYLOAD)) -> ModelEntry:
    return ModelEntry(name="t", filename=FILENAME, preset="vox-adv", urls=(url,),
                      md5=None, sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=size)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    # DownloadError's "every URL failed" message has a second line on purpose: where to get the file by hand
    first = str(exc.value).splitlines()[0]
    assert len(first) < 300
    return str(exc.value)


# --- 4. unbounded downloads ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [len(PAYLOAD), None], ids=["size-known", "size-unknown"])
def test_endless_body_is_cut_at_the_files_size(server, tmp_path: Path, monkeypatch, size) -> None:
    monkeypatch.setattr("livepuppet.hub.download.MAX_UNKNOWN_SIZE", 1 << 20)
    with pytest.raises(DownloadError) as info:
        download(_entry(f"{server.base}/endless/{FILENAME}", size), tmp_path, progress=False)
    assert "more than the" in _one_line(info)
    partial = tmp_path / (FILENAME + ".partial")
    assert (partial.stat().st_size if partial.exists() else 0) <= (size or 1 << 20) + 256 * 1024
    assert not (tmp_path / FILENAME).exists()


def test_trickling_server_is_a_stall(server, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download(_entry(f"{server.base}/trickle/{FILENAME}"), tmp_path, progress=False, timeout=0.5)
    assert "stalled" in _one_line(info)
    assert time.monotonic() - started < 10


def test_overall_deadline(server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as info:
        download(_entry(f"{server.base}/trickle/{FILENAME}"), tmp_path, progress=False, timeout=30, deadline=0.3)
    assert "deadline" in _one_line(info)


def test_redirect_to_ftp_is_refused(server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as info:
        download(_entry(f"{server.base}/ftp/{FILENAME}"), tmp_path, progress=False)
    assert "refused a redirect to ftp://" in _one_line(info)


# --- 3. two downloads of one file at once ---------------------------------------------------------------


def test_concurrent_downloads_are_serialised(server, tmp_path: Path) -> None:
    entry = _entry(f"{server.base}/gate/{FILENAME}")
    results: dict[str, object] = {}

    def fetch(name: str) -> None:
        try:
            results[name] = download(entry, tmp_path, progress=False)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[name] = exc

    first = threading.Thread(target=fetch, args=("first",))
    first.start()
    assert server.started.wait(10)  # the first holds the folder and is mid-file
    second = threading.Thread(target=fetch, args=("second",))
    second.start()
    second.join(0.5)
    assert second.is_alive() and server.hits == ["gate"]  # waiting for the lock, not downloading
    server.gate.set()
    first.join(30)
    second.join(30)
    assert results["first"] == results["second"] == tmp_path / FILENAME, results
    assert (tmp_path / FILENAME).read_bytes() == PAYLOAD
    assert server.hits == ["gate"]  # the second found the finished file
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILENAME]


# --- 3. a full disk -------------------------------------------------------------------------------------

_FULL_DISK = """
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, like ENOSPC
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
"""


def _child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(_FULL_DISK) + textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_download_on_a_full_disk_is_one_line(server, tmp_path: Path) -> None:
    code = """
    from livepuppet.hub.download import download
    from livepuppet.errors import DownloadError
    from livepuppet.hub.registry import ModelEntry
    entry = ModelEntry(name="t", filename="m.pth", preset="vox-adv", urls=(sys.argv[1],), md5=None, sha256=None,
                       size=None)
    try:
        download(entry, sys.argv[3], progress=False)
    except DownloadError as e:
        print("ERROR", e)
    """
    result = _child(code, f"{server.base}/ok/{FILENAME}", "50000", str(tmp_path))
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout.startswith("ERROR cannot write") and result.stdout.count("\n") == 1, result.stdout
    assert not (tmp_path / "m.pth").exists()


@needs_ffmpeg
def test_full_disk_during_recording_keeps_what_was_recorded(tmp_path: Path) -> None:
    code = """
    import numpy as np
    from livepuppet.media import VideoWriter
    from livepuppet.errors import MediaError
    writer = VideoWriter(sys.argv[1], 25, fragmented=True)
    rng = np.random.default_rng(0)
    try:
        for i in range(2000):
            writer.write(rng.random((64, 64, 3), dtype=np.float32))
    except MediaError as e:
        print("STOPPED", writer.frames_written, e)
    writer.close()
    """
    out = tmp_path / "rec.mp4"
    result = _child(code, str(out), "300000")
    assert result.stdout.startswith("STOPPED") and "kept in" in result.stdout, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    frames = media.probe_video(out)["frame_count"]
    assert frames and frames > 10  # what was recorded before the disk filled is still there


# --- 3. recordings never destroy an existing file; an input is never an output ------------------------------


@needs_ffmpeg
def test_recording_over_an_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"the user's earlier video")
    writer = media.VideoWriter(out, 25, fragmented=True)
    writer.abort()  # a run that stopped before its first frame
    assert out.read_bytes() == b"the user's earlier video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]
    with media.VideoWriter(out, 25, fragmented=True) as writer:
        for _ in range(3):
            writer.write(np.zeros((32, 32, 3), np.float32))
    assert media.probe_video(out)["frame_count"] == 3  # replaced only by a recording with frames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]


def test_animate_refuses_its_input_as_output(tmp_path: Path, capsys) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"precious")
    link = tmp_path / "link.mp4"
    link.symlink_to(video)
    for output, driving in ((video, video), (link, video), (tmp_path / "." / "clip.mp4", video)):
        assert cli.main(["animate", "--source", str(video), "--driving", str(driving),
                         "--output", str(output), "--model", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is also an input" in err, err
    assert video.read_bytes() == b"precious"


def test_run_refuses_to_record_over_its_camera_file(tmp_path: Path, capsys) -> None:
    video = tmp_path / "cam.mp4"
    video.write_bytes(b"precious")
    face = tmp_path / "face.png"
    face.write_bytes(b"")
    assert cli.main(["run", "--source", str(face), "--camera", str(video), "--record", str(video),
                     "--no-preview", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is also an input" in err, err
    assert video.read_bytes() == b"precious"


def test_convert_on_a_full_disk_is_one_line(small, tmp_path: Path) -> None:
    """TensorFlow's own error for the failed write becomes one line; the partial folder is removed."""
    code = """
    from livepuppet.cli import main
    sys.exit(main(["convert", sys.argv[1], "--out", sys.argv[3], "--size", "64x64"]))
    """
    result = _child(code, str(small.checkpoint("legacy")), "400000", str(tmp_path / "out"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("livepuppet: error:")]
    assert result.returncode == 2 and len(errors) == 1 and "disk is full" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(errors[0]) < 300
    assert list(tmp_path.iterdir()) == []  # no half-made model, no partial folder
