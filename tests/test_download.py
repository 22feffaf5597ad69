"""Downloads against a local HTTP server, the model registry, and the project folders."""

from __future__ import annotations

import contextlib

import hashlib
import random
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from livepuppet import paths
from livepuppet.hub.download import download, ensure_checkpoint
from livepuppet.errors import DownloadError, LivepuppetError
from livepuppet.hub.registry import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    ModelEntry,
    get_entry,
    load_registry,
)

FILENAME = "model.pth.tar"
PAYLOAD = random.Random(1234).randbytes(300_000)
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
HALF = len(PAYLOAD) // 2


# --------------------------------------------------------------------------
# a small HTTP server with Range support; the first path segment picks a mode:
#   /ok/...       serves the file, honouring "Range: bytes=N-" (206, or 416 past the end)
#   /drop/...     like /ok, but the first request is cut off after half the bytes
#   /norange/...  ignores Range and always answers 200 with the whole file
#   /slow/...     never answers until the server shuts down (an event, not a sleep)
#   /nolength/... like /ok, without a Content-Length (the end of the file is the end of the connection)
#   /404/...      404 Not Found




class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # keep the test output quiet
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        mode = self.path.strip("/").split("/")[0]

        if mode == "404":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "slow":
            srv.release.wait(60)

        body = srv.payload
        start = 0
        wanted = self.headers.get("Range")
        if wanted and mode != "norange":
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        data = body[start:]
        self.send_header("Content-Type", "application/octet-stream")
        if mode != "nolength":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()

        if mode == "drop" and not srv.dropped:
            srv.dropped = True
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # do not wait for a /slow/ handler nobody listens to any more

    def handle_error(self, request, client_address):  # a client gave up: expected here
        pass


@contextlib.contextmanager
def serving(payload: bytes, handler: type[BaseHTTPRequestHandler] = _Handler):
    """A _Server on a free 127.0.0.1 port serving ``payload``, shut down on exit (test_first_run and
    test_hostile_io use it too, the latter with a handler of its own)."""
    srv = _Server(("127.0.0.1", 0), handler)
    srv.payload = payload
    srv.requests = []
    srv.dropped = False
    srv.release = threading.Event()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def server():
    with serving(PAYLOAD) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No user registry, mirrors, home or proxy leaks into a test."""
    for name in ("LIVEPUPPET_HOME", "LIVEPUPPET_REGISTRY", "LIVEPUPPET_MIRRORS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{FILENAME}"


def _entry(*urls: str, md5: str | None = PAYLOAD_MD5, sha256: str | None = None) -> ModelEntry:
    return ModelEntry(
        name="test-model",
        filename=FILENAME,
        preset="vox-adv",
        urls=tuple(urls),
        md5=md5,
        sha256=sha256,
        size=None,
    )


# --------------------------------------------------------------------------
# downloads


def test_complete_download(server, tmp_path):
    dest = tmp_path / "checkpoint"
    entry = _entry(f"{server.base}/ok/{FILENAME}", sha256=PAYLOAD_SHA256)
    path = download(entry, dest, progress=True)
    assert path == dest / FILENAME
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.iterdir()) == [FILENAME]  # no .partial left
    assert server.requests == [(f"/ok/{FILENAME}", None)]


def test_download_without_content_length(server, tmp_path):
    path = download(_entry(f"{server.base}/nolength/{FILENAME}"), tmp_path, progress=True)
    assert path.read_bytes() == PAYLOAD


def test_present_file_is_returned_without_a_request(server, tmp_path):
    (tmp_path / FILENAME).write_bytes(b"placed by hand")
    path = download(_entry(f"{server.base}/ok/{FILENAME}"), tmp_path, progress=False)
    assert path == tmp_path / FILENAME
    assert path.read_bytes() == b"placed by hand"
    assert server.requests == []


def test_dropped_connection_then_resume(server, tmp_path):
    entry = _entry(f"{server.base}/drop/{FILENAME}")
    with pytest.raises(DownloadError) as info:
        download(entry, tmp_path, progress=False)
    partial = tmp_path / (FILENAME + ".partial")
    assert partial.stat().st_size == HALF
    assert not (tmp_path / FILENAME).exists()
    assert "resumes" in str(info.value)

    path = download(entry, tmp_path, progress=False)
    assert server.requests[-1] == (f"/drop/{FILENAME}", f"bytes={HALF}-")
    assert path.read_bytes() == PAYLOAD
    assert not partial.exists()


def test_dropped_connection_resumes_from_the_next_url(server, tmp_path):
    entry = _entry(f"{server.base}/drop/{FILENAME}", f"{server.base}/ok/{FILENAME}")
    path = download(entry, tmp_path, progress=False)
    assert server.requests == [(f"/drop/{FILENAME}", None), (f"/ok/{FILENAME}", f"bytes={HALF}-")]
    assert path.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    (tmp_path / (FILENAME + ".partial")).write_bytes(PAYLOAD[:1000])
    path = download(_entry(f"{server.base}/norange/{FILENAME}"), tmp_path, progress=False)
    assert server.requests == [(f"/norange/{FILENAME}", "bytes=1000-")]
    assert path.read_bytes() == PAYLOAD


def test_complete_partial_answered_416_is_verified_and_kept(server, tmp_path):
    (tmp_path / (FILENAME + ".partial")).write_bytes(PAYLOAD)
    path = download(_entry(f"{server.base}/ok/{FILENAME}"), tmp_path, progress=False)
    assert server.requests == [(f"/ok/{FILENAME}", f"bytes={len(PAYLOAD)}-")]
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILENAME]


def test_wrong_checksum_is_rejected_and_nothing_kept(server, tmp_path):
    dest = tmp_path / "checkpoint"
    wrong = "0" * 32
    with pytest.raises(DownloadError) as info:
        download(_entry(f"{server.base}/ok/{FILENAME}", md5=wrong), dest, progress=False)
    message = str(info.value)
    assert "did not match" in message and "nothing was kept" in message
    assert wrong in message and PAYLOAD_MD5 in message
    assert "\n" not in message
    assert list(dest.iterdir()) == []


def test_wrong_sha256_is_rejected(server, tmp_path):
    with pytest.raises(DownloadError, match="sha256"):
        download(_entry(f"{server.base}/ok/{FILENAME}", sha256="f" * 64), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_mismatch_after_resume_starts_over_once(server, tmp_path):
    # A stale partial from another file: resuming it gives a bad checksum,
    # so the download runs again from zero.
    (tmp_path / (FILENAME + ".partial")).write_bytes(b"\x00" * 5000)
    path = download(_entry(f"{server.base}/ok/{FILENAME}"), tmp_path, progress=False)
    assert server.requests == [(f"/ok/{FILENAME}", "bytes=5000-"), (f"/ok/{FILENAME}", None)]
    assert path.read_bytes() == PAYLOAD


def test_404_on_first_url_then_second_url(server, tmp_path, capsys):
    entry = _entry(f"{server.base}/404/{FILENAME}", f"{server.base}/ok/{FILENAME}")
    path = download(entry, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [p for p, _ in server.requests] == [f"/404/{FILENAME}", f"/ok/{FILENAME}"]
    err = capsys.readouterr().err
    assert "404" in err and "trying the next URL" in err


def test_timeout_moves_on_to_the_next_url(server, tmp_path):
    entry = _entry(f"{server.base}/slow/{FILENAME}", f"{server.base}/ok/{FILENAME}")
    path = download(entry, tmp_path, progress=False, timeout=0.2)  # /slow/ answers only at teardown
    assert [p for p, _ in server.requests] == [f"/slow/{FILENAME}", f"/ok/{FILENAME}"]
    assert path.read_bytes() == PAYLOAD


def test_every_url_failing_says_how_to_get_the_file_by_hand(server, tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEPUPPET_HOME", str(tmp_path / "home"))
    refused = _closed_port_url()
    missing = f"{server.base}/404/{FILENAME}"
    with pytest.raises(DownloadError) as info:
        download(_entry(refused, missing), progress=False, timeout=5)
    message = str(info.value)
    folder = paths.checkpoint_dir()
    assert folder.is_absolute()
    assert PAYLOAD_MD5 in message
    assert str(folder) in message
    assert refused in message and missing in message
    assert "connection refused" in message and "404" in message
    assert len(message.splitlines()) <= 6
    assert list(folder.iterdir()) == []
    assert isinstance(info.value, LivepuppetError) and info.value.exit_code == 2


def test_entry_without_urls(tmp_path):
    with pytest.raises(DownloadError, match=re.escape(str(tmp_path))):
        download(_entry(), tmp_path, progress=False)


def test_ensure_checkpoint_prefers_the_placed_file(server, tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEPUPPET_HOME", str(tmp_path))
    entry = _entry(f"{server.base}/ok/{FILENAME}")
    assert ensure_checkpoint(entry, progress=False).read_bytes() == PAYLOAD
    assert len(server.requests) == 1
    assert ensure_checkpoint(entry, progress=False) == tmp_path / "checkpoint" / FILENAME
    assert len(server.requests) == 1


# --------------------------------------------------------------------------
# registry


def test_builtin_default_model():
    entry = get_entry()
    assert DEFAULT_MODEL == "vox-adv" == entry.name
    assert entry.filename == "vox-adv-cpk.pth.tar"
    assert entry.preset == "vox-adv"
    assert entry.md5 == "8a45a24037871c045fbb8a6a8aa95ebc"
    assert entry.urls == ("https://openavatarify.s3-avatarify.com/weights/vox-adv-cpk.pth.tar",)
    assert load_registry() == BUILTIN_MODELS


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(DownloadError, match="unknown model 'nope'.*vox-adv"):
        get_entry("nope")


def test_registry_file_merges_and_adds(tmp_path, monkeypatch):
    config = tmp_path / "models.yaml"
    config.write_text(
        "models:\n"
        "  vox-adv:\n"
        "    urls: [https://mirror.example/vox-adv-cpk.pth.tar]\n"
        f"    md5: {'A' * 32}\n"
        "  my-faces:\n"
        "    filename: my-faces.pth.tar\n"
        "    preset: vox\n"
        "    urls: https://example.org/my-faces.pth.tar\n"
        f"    sha256: {PAYLOAD_SHA256}\n"
    )
    monkeypatch.setenv("LIVEPUPPET_REGISTRY", str(config))
    entries = load_registry()
    vox = entries["vox-adv"]
    builtin = BUILTIN_MODELS["vox-adv"]
    assert vox.urls == ("https://mirror.example/vox-adv-cpk.pth.tar",) + builtin.urls
    assert vox.md5 == "a" * 32
    assert (vox.filename, vox.preset) == (builtin.filename, builtin.preset)
    mine = entries["my-faces"]
    assert mine.filename == "my-faces.pth.tar" and mine.preset == "vox"
    assert mine.urls == ("https://example.org/my-faces.pth.tar",)
    assert mine.md5 is None and mine.sha256 == PAYLOAD_SHA256
    assert get_entry("my-faces") == mine


def test_registry_url_only_merge_keeps_the_checksum(tmp_path):
    config = tmp_path / "models.yaml"
    config.write_text("models:\n  vox-adv:\n    urls: [http://lan.local/v.tar]\n")
    vox = load_registry(config)["vox-adv"]
    assert vox.urls[0] == "http://lan.local/v.tar"
    assert vox.md5 == BUILTIN_MODELS["vox-adv"].md5


def test_default_registry_path_is_read(tmp_path):
    config = tmp_path / "xdg-config" / "livepuppet" / "models.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("models:\n  vox-adv:\n    md5: null\n")
    assert load_registry()["vox-adv"].md5 is None


def test_mirrors_env_comes_first(tmp_path, monkeypatch):
    config = tmp_path / "models.yaml"
    config.write_text("models:\n  vox-adv:\n    urls: [https://mirror.example/v.tar]\n")
    monkeypatch.setenv("LIVEPUPPET_MIRRORS", "https://a.example/w/  http://b.example")
    vox = load_registry(config)["vox-adv"]
    assert vox.urls == (
        "https://a.example/w/vox-adv-cpk.pth.tar",
        "http://b.example/vox-adv-cpk.pth.tar",
        "https://mirror.example/v.tar",
    ) + BUILTIN_MODELS["vox-adv"].urls


@pytest.mark.parametrize(
    "text, words",
    [
        ("models: [1, 2\n", "not valid YAML"),
        ("- just a list\n", "mapping"),
        ("modles: {}\n", "modles"),
        ("models:\n  x:\n    preset: vox\n", "filename"),
        ("models:\n  vox-adv:\n    md5: xyz\n", "md5"),
        ("models:\n  vox-adv:\n    urls: [ftp://x/y]\n", "ftp://x/y"),
        ("models:\n  vox-adv:\n    checksum: abc\n", "checksum"),
        ("models:\n  x:\n    filename: ../evil\n    preset: vox\n", "plain file name"),
    ],
)
def test_malformed_registry_is_one_line_naming_the_file(tmp_path, monkeypatch, text, words):
    config = tmp_path / "models.yaml"
    config.write_text(text)
    monkeypatch.setenv("LIVEPUPPET_REGISTRY", str(config))
    with pytest.raises(DownloadError) as info:
        load_registry()
    message = str(info.value)
    assert str(config) in message and words in message
    assert "\n" not in message


def test_missing_named_registry_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEPUPPET_REGISTRY", str(tmp_path / "absent.yaml"))
    with pytest.raises(DownloadError, match="absent.yaml"):
        load_registry()


def test_bad_mirror_env(monkeypatch):
    monkeypatch.setenv("LIVEPUPPET_MIRRORS", "not-a-url")
    with pytest.raises(DownloadError, match="LIVEPUPPET_MIRRORS"):
        load_registry()


# --------------------------------------------------------------------------
# project folders


def test_folders_default_to_the_per_user_data_folder(tmp_path, monkeypatch):
    """Run from a folder outside the checkout: the per-user data folder, wherever the command runs."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for where in (tmp_path, tmp_path / "elsewhere"):
        where.mkdir(exist_ok=True)
        monkeypatch.chdir(where)
        assert paths.checkpoint_dir() == tmp_path / "data" / "livepuppet" / "checkpoint"
        assert paths.models_dir() == tmp_path / "data" / "livepuppet" / "models"
    assert "per-user" in paths.home_and_reason()[1]


def test_folders_inside_the_checkout_are_the_checkouts(monkeypatch):
    root = paths.Path(paths.__file__).resolve().parent.parent
    monkeypatch.chdir(root / "tests")  # anywhere inside the clone
    assert paths.models_dir() == root / "models" and paths.checkpoint_dir() == root / "checkpoint"
    assert "checkout" in paths.home_and_reason()[1]


def test_livepuppet_home_moves_the_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEPUPPET_HOME", str(tmp_path / "lp"))
    assert paths.checkpoint_dir() == tmp_path / "lp" / "checkpoint"
    assert paths.models_dir() == tmp_path / "lp" / "models"


def test_find_checkpoint_uses_a_hand_placed_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEPUPPET_HOME", str(tmp_path))
    entry = get_entry("vox-adv")
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    assert paths.find_checkpoint(entry) is None

    (folder / (entry.filename + ".partial")).write_bytes(b"half a download")
    assert paths.find_checkpoint(entry) is None  # unfinished downloads never count

    (folder / entry.filename).write_bytes(b"")
    assert paths.find_checkpoint(entry) is None  # nor do empty files

    (folder / entry.filename).write_bytes(b"any copy, checksum not enforced")
    assert paths.find_checkpoint(entry) == folder / entry.filename
