"""Nothing of the user's is lost, and no server or disk can make livepuppet work without end.

Hostile servers (endless body, a byte at a time, a redirect to ftp://), a full disk (RLIMIT_FSIZE in a
child process: writes fail with EFBIG as on a full disk), two downloads at once, recordings over an
existing file, and outputs that name an input.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
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
        if mode.startswith("drip-"):
            self._drip(mode)
            return
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


    def _drip(self, mode: str) -> None:
        """A byte every 20 ms, never ending: of the status line, or of the headers after a prompt status line."""
        self.close_connection = True
        try:
            if mode == "drip-headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                self.wfile.flush()
            for byte in itertools.chain(b"HTTP/1.1 200 OK" if mode == "drip-status" else b"", itertools.repeat(75)):
                if self.server.stop.wait(0.02):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
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


def _download_within(seconds: float, *args, **kwargs) -> str:
    """The one-line error of a download that must fail within ``seconds`` (run on a thread: a hang fails the test)."""
    result: dict[str, object] = {}

    def attempt() -> None:
        try:
            download(*args, **kwargs)
        except DownloadError as exc:
            result["error"] = str(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"download still running after {seconds} s"
    assert "error" in result
    print(f"\nfailed after {time.monotonic() - started:.2f} s: {str(result['error']).splitlines()[1]}")
    return str(result["error"])


@pytest.mark.parametrize("mode", ["drip-status", "drip-headers"])
def test_a_server_dripping_its_answer_is_a_stall(server, tmp_path: Path, mode: str) -> None:
    """Each byte comes well within the read timeout; the connection, status line and headers together may
    take one stall window (the timeout), not forever."""
    error = _download_within(8, _entry(f"{server.base}/{mode}/{FILENAME}"), tmp_path, progress=False, timeout=0.5)
    assert "no status line and headers within 0.5 s" in error
    assert not (tmp_path / FILENAME).exists()


def test_the_deadline_covers_the_headers_too(server, tmp_path: Path) -> None:
    error = _download_within(8, _entry(f"{server.base}/drip-headers/{FILENAME}"), tmp_path, progress=False,
                             timeout=30, deadline=0.3)
    assert "deadline" in error


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


_MOUNT_A_SMALL_DISK = """
    set -e
    stash=$(mktemp -d)
    cp -a "$DISK/." "$stash/"
    mount -t tmpfs -o "size=$SIZE" tmpfs "$DISK"
    cp -a "$stash/." "$DISK/"
    rm -rf "$stash"
    set +e
    "$PYTHON" -c "$CODE" "$@"
    rc=$?
    cp -a "$DISK/." "$AFTER/"
    exit $rc
"""


@functools.lru_cache(maxsize=1)
def _small_disks() -> bool:
    """Whether a tmpfs can be mounted here, in a private user and mount namespace (no root needed)."""
    if not shutil.which("unshare"):
        return False
    with tempfile.TemporaryDirectory() as where:
        probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", where],
                               capture_output=True, timeout=30)
    return probe.returncode == 0


def _on_a_full_disk(code: str, disk: Path, room: int, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (argv[1] is ``disk``) where ``disk`` is on a disk with ``room`` bytes free beyond what it
    holds: a real one (a tmpfs of that size, mounted over it in a private namespace: writes fail with ENOSPC),
    or, where namespaces are not allowed, a file-size limit (EFBIG). ``disk`` holds what was left afterwards."""
    code = textwrap.dedent(code)
    if not _small_disks():
        return _child(code, str(disk), str(room), *args)
    used = sum(-(-p.stat().st_size // 4096) * 4096 for p in disk.rglob("*") if p.is_file())
    after = disk.with_name(disk.name + "-after")
    after.mkdir()
    env = {**os.environ, "DISK": str(disk), "AFTER": str(after), "SIZE": str(used + room),
           "PYTHON": sys.executable, "CODE": "import sys\n" + code}
    result = subprocess.run(["unshare", "-rm", "sh", "-c", textwrap.dedent(_MOUNT_A_SMALL_DISK), "sh", str(disk),
                             str(room), *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    shutil.rmtree(disk)
    after.rename(disk)
    return result


_RECORD_UNTIL_FULL = """
    import json
    import numpy as np
    from livepuppet.media import VideoWriter
    from livepuppet.errors import MediaError
    writer = VideoWriter(sys.argv[1] + "/rec.mp4", 25, fragmented=True)
    rng = np.random.default_rng(0)
    try:
        for i in range(3000):
            writer.write(rng.random((96, 96, 3), dtype=np.float32))
        writer.close()
    except MediaError as e:
        print(json.dumps({"error": str(e), "handed": writer.frames_written, "saved": writer.frames_saved}))
"""


def _existing_recording(disk: Path) -> bytes:
    disk.mkdir()
    with media.VideoWriter(disk / "rec.mp4", 25) as writer:
        for i in range(3):
            writer.write(np.full((32, 32, 3), i / 4, np.float32))
    return (disk / "rec.mp4").read_bytes()


def _stopped(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    report = json.loads(result.stdout)
    print(f"\n{report}")
    assert "\n" not in report["error"] and len(report["error"].split("(ffmpeg:")[0]) < 300, report
    return report


@needs_ffmpeg
def test_full_disk_during_recording_keeps_what_was_recorded(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    report = _stopped(_on_a_full_disk(_RECORD_UNTIL_FULL, disk, 200_000))
    assert f"the {report['saved']} frames on disk are kept" in report["error"]
    assert 10 < report["saved"] <= report["handed"]
    assert media.frames_on_disk(disk / "rec.mp4") == media.probe_video(disk / "rec.mp4")["frame_count"] \
        == report["saved"]  # the count said is of frames that play, not of frames handed to the encoder
    assert sorted(p.name for p in disk.iterdir()) == ["rec.mp4"]


@needs_ffmpeg
def test_full_disk_never_replaces_an_existing_recording(tmp_path: Path) -> None:
    """The cut-off recording is kept beside the existing one, which stays as it was."""
    disk = tmp_path / "disk"
    before = _existing_recording(disk)
    report = _stopped(_on_a_full_disk(_RECORD_UNTIL_FULL, disk, 200_000))
    assert (disk / "rec.mp4").read_bytes() == before
    assert "rec.unfinished.mp4" in report["error"] and "is untouched" in report["error"]
    assert media.probe_video(disk / "rec.unfinished.mp4")["frame_count"] == report["saved"] > 10
    assert sorted(p.name for p in disk.iterdir()) == ["rec.mp4", "rec.unfinished.mp4"]


@needs_ffmpeg
def test_a_disk_too_full_for_one_frame_leaves_the_existing_recording(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    before = _existing_recording(disk)
    report = _stopped(_on_a_full_disk(_RECORD_UNTIL_FULL, disk, 3_000))
    assert report["handed"] > 0 and report["saved"] == 0  # frames went to the encoder; none reached the disk
    assert "nothing was saved" in report["error"] and "is untouched" in report["error"]
    assert (disk / "rec.mp4").read_bytes() == before
    assert sorted(p.name for p in disk.iterdir()) == ["rec.mp4"]


@needs_ffmpeg
def test_a_killed_recording_is_kept_by_the_next_one(tmp_path: Path) -> None:
    """A run killed while recording beside an existing file leaves its work file; the next recording to that
    name keeps it under a visible name and says so, instead of deleting it."""
    before = _existing_recording(tmp_path / "disk")
    out = tmp_path / "disk" / "rec.mp4"
    code = """
        import os, signal, sys
        import numpy as np
        from livepuppet.media import VideoWriter
        writer = VideoWriter(sys.argv[1], 25, fragmented=True)
        for i in range(12):
            writer.write(np.full((48, 64, 3), i / 12, np.float32))
        os.kill(os.getpid(), signal.SIGKILL)
    """
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(out)], capture_output=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    work = next(out.parent.glob(".rec.mp4.partial-*"))
    deadline = time.monotonic() + 30
    while media.frames_on_disk(work) < 12 and time.monotonic() < deadline:  # ffmpeg finishes the file on its own
        time.sleep(0.05)
    writer = media.VideoWriter(out, 25, fragmented=True)
    assert writer.notices == [f"an earlier recording to rec.mp4 was cut off (its process is gone); its 12 frames "
                              f"are kept in {out.parent / 'rec.unfinished.mp4'}"]
    writer.write(np.zeros((32, 32, 3), np.float32))
    writer.close()
    assert writer.frames_saved == media.probe_video(out)["frame_count"] == 1
    assert media.probe_video(out.parent / "rec.unfinished.mp4")["frame_count"] == 12
    assert sorted(p.name for p in out.parent.iterdir()) == ["rec.mp4", "rec.unfinished.mp4"]
    assert before != out.read_bytes()  # replaced by the finished recording, and only by it


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
