"""Issue 22: remote rendering. `livepuppet serve` renders, `run/animate --remote` send only keypoints.

On the SMALL 64x64 model (tests/test_convert.py's session cache), with the
server on a thread of this process (tests/remote_kit.py) or, where a kill
must be real, in a subprocess. Speed bars are in benchmarks/remote_loopback.py;
here: what goes over the wire, what comes back, what happens when the server
goes away, and that no message can end the server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from livepuppet.cli import main
from livepuppet.remote import protocol as P
from livepuppet.remote.client import RemoteClient, RemoteRefused
from livepuppet.remote.server import ServerPolicy
from livepuppet.runtime.choose import open_engine
from livepuppet.runtime.pipeline import Pipeline
from tests.remote_kit import Relay, levels, portrait_and_frames, raw_session, remote_pipeline, serving
from tests.test_convert import SmallModels

MODEL = "legacy-fp32-b1"


@pytest.fixture(scope="module")
def model(small: SmallModels) -> Path:
    return small.model(MODEL)


@pytest.fixture(scope="module")
def served(model: Path):
    with serving(model) as s:
        yield s


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fetched keypoint models go to a private cache, never the user's."""
    monkeypatch.setenv("LIVEPUPPET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _local(model: Path, source: np.ndarray, driving: np.ndarray) -> np.ndarray:
    pipe = Pipeline(open_engine(model, "tflite", threads=1))
    pipe.set_source(source)
    return pipe.animate(driving)


# --------------------------------------------------------------------------- what goes up and comes down


def test_lossless_remote_frames_equal_local_ones(model: Path, served) -> None:
    """--remote-format png: the server's avatar is the local engine's to 1 level (the portrait goes up as a
    16-bit PNG)."""
    source, driving = portrait_and_frames(64, 6)
    pipe, engine = remote_pipeline(served.url, model, "png")
    try:
        pipe.set_source(source)
        remote = pipe.animate(driving)
    finally:
        engine.close()
    err = levels(remote, _local(model, source, driving))
    print(f"\nlossless remote vs local: max {err.max()} levels, mean {err.mean():.4f}")
    assert err.max() <= 1
    assert engine.counts == {"remote": 6, "local": 0, "held": 0}
    assert levels(remote[0], remote[-1]).mean() > 0.5  # the frames moved the avatar


def test_after_the_portrait_at_most_2_kb_a_frame_go_up(model: Path, served) -> None:
    """Counted as TCP bytes through a relay between client and server (WebSocket framing and pings included)."""
    relay = Relay(served.port)
    source, driving = portrait_and_frames(64, 40, seed=3)
    pipe, engine = remote_pipeline(f"ws://127.0.0.1:{relay.port}", model, "jpeg")
    try:
        pipe.set_source(source)
        up0, down0 = relay.counts()
        for frame in driving:  # one frame a call, as the live loop sends them
            pipe.animate(frame[None])
        up, down = relay.counts()
    finally:
        engine.close()
        relay.close()
    per_up, per_down = (up - up0) / len(driving), (down - down0) / len(driving)
    print(f"\nper frame through the relay: {per_up:.0f} B up, {per_down:.0f} B down (JPEG q90, 64x64); "
          f"portrait and hello {up0} B up")
    assert per_up <= 2048
    assert per_up >= 8 + 24 * 5  # the keypoints did go up
    assert up0 > 1000  # the portrait went up once, before the frames


def test_cli_animate_and_run_remote_fetch_keypoint_models_once(model: Path, served, tmp_path: Path,
                                                              cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a local model the client fetches the server's two keypoint models into the cache (checked by hash),
    and the output is the local one's; `run --remote` records frames rendered there."""
    source, driving = portrait_and_frames(64, 5, seed=5)
    face, clip = tmp_path / "face.png", tmp_path / "frames"
    clip.mkdir()
    cv2.imwrite(str(face), cv2.cvtColor((source * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR))
    for i, frame in enumerate(driving):
        cv2.imwrite(str(clip / f"{i:03d}.png"), cv2.cvtColor((frame * 255).round().astype(np.uint8),
                                                             cv2.COLOR_RGB2BGR))
    assert main(["animate", "--source", str(face), "--driving", str(clip), "--output", f"{tmp_path / 'remote'}/",
                 "--remote", served.url, "--remote-format", "png"]) == 0
    out = capsys.readouterr().err
    assert "5 frames rendered remotely" in out
    fetched = sorted(p.name for p in cache.rglob("*") if p.is_file())
    assert fetched == ["kp_detector.tflite", "kp_processing.tflite", "manifest.json"]
    assert main(["animate", "--source", str(face), "--driving", str(clip), "--output", f"{tmp_path / 'local'}/",
                 "--model", str(model), "--engine", "tflite"]) == 0
    for name in sorted(os.listdir(tmp_path / "local")):
        a, b = (cv2.imread(str(tmp_path / d / name)).astype(int) for d in ("remote", "local"))
        assert np.abs(a - b).max() <= 1, name
    record = tmp_path / "out.mp4"
    assert main(["run", "--source", str(face), "--camera", str(clip / "000.png"), "--no-preview", "--record",
                 str(record), "--remote", served.url, "--frames", "1"]) == 0
    out = capsys.readouterr().err
    assert "1 frames rendered remotely" in out and "reconnects" in out and record.stat().st_size > 0
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == fetched  # taken from the cache this time


# --------------------------------------------------------------------------- sessions


def test_four_sessions_at_once_each_get_their_own_avatar_and_a_fifth_hears_busy(model: Path) -> None:
    with serving(model, ServerPolicy(max_sessions=4)) as served:
        results: dict[int, np.ndarray] = {}
        inputs = {i: portrait_and_frames(64, 4, seed=10 + i) for i in range(4)}
        pipes = [remote_pipeline(served.url, model, "png") for _ in range(4)]
        try:
            extra = RemoteClient(served.url)
            assert not extra.start(wait=5)
            assert "busy" in extra.reason
            extra.close()

            def session(i: int) -> None:
                pipe, _ = pipes[i]
                pipe.set_source(inputs[i][0])
                results[i] = pipe.animate(inputs[i][1])

            threads = [threading.Thread(target=session, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
        finally:
            for _, engine in pipes:
                engine.close()
        for i, (source, driving) in inputs.items():
            assert levels(results[i], _local(model, source, driving)).max() <= 1, f"session {i} got another avatar"
        assert "busy" in served.said()


# --------------------------------------------------------------------------- bad input never ends the server


def _png(w: int, h: int, depth: int = 16) -> bytes:
    """A random picture: a hash the server has never seen, so it always asks for the bytes."""
    image = np.random.default_rng().integers(0, 2**depth, (h, w, 3)).astype(np.uint16 if depth == 16 else np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def _huge_header_png() -> bytes:
    """A PNG whose header claims 20000x20000 (400 megapixels), a few hundred bytes long."""
    png = bytearray(_png(64, 64))
    png[16:24] = (20000).to_bytes(4, "big") * 2
    return bytes(png)


def _portrait(png: bytes) -> list:
    return [P.text("portrait", sha256=P.sha256_hex(png)), bytes([P.PORTRAIT, 0, 0, 0]) + png]


def _kp(frame_id: int, k: int = 5, value: float = 0.1) -> bytes:
    return P.keypoints_message(frame_id, np.full((k, 2), value, np.float32), np.tile(np.eye(2, dtype=np.float32),
                                                                                     (k, 1, 1)))


GOOD = "a good portrait, fresh each time"
HOSTILE = {  # name: (messages after the hello, close code, words of the reason)
    "not json": (["{oops"], P.CLOSE_BAD_MESSAGE, "not JSON"),
    "deep json": (["[" * 2000 + "]" * 2000], P.CLOSE_BAD_MESSAGE, "not JSON"),
    "long text": (["x" * 5000], P.CLOSE_TOO_BIG, "text message"),
    "unknown type": ([P.text("launch")], P.CLOSE_BAD_MESSAGE, "expected"),
    "unknown binary": ([b"\x55abc"], P.CLOSE_BAD_MESSAGE, "unknown kind"),
    "empty binary": ([b""], P.CLOSE_BAD_MESSAGE, "unknown kind"),
    "keypoints first": ([_kp(1)], P.CLOSE_BAD_MESSAGE, "before the portrait"),
    "truncated keypoints": ([GOOD, _kp(1)[:-3]], P.CLOSE_BAD_MESSAGE, "bytes"),
    "wrong keypoint count": ([GOOD, _kp(1, k=6)], P.CLOSE_BAD_MESSAGE, "bytes"),
    "frame ids going back": ([GOOD, _kp(5), _kp(5)], P.CLOSE_BAD_MESSAGE, "must increase"),
    "nan keypoints": ([GOOD, _kp(1, value=float("nan"))], P.CLOSE_BAD_MESSAGE, "not finite"),
    "portrait not announced": ([_portrait(_png(64, 64))[1]], P.CLOSE_BAD_MESSAGE, "not announced"),
    "portrait not png": (_portrait(b"GIF89a" + b"\0" * 100), P.CLOSE_BAD_MESSAGE, "not a PNG"),
    "portrait of another size": (_portrait(_png(65, 64)), P.CLOSE_BAD_MESSAGE, "65x64"),
    "portrait of 400 megapixels": (_portrait(_huge_header_png()), P.CLOSE_BAD_MESSAGE, "20000x20000"),
    "portrait corrupt": (_portrait(_png(64, 64)[:60]), P.CLOSE_BAD_MESSAGE, "does not decode"),
    "portrait bytes of another hash": ([_portrait(_png(64, 64))[0], bytes([P.PORTRAIT, 0, 0, 0]) + _png(64, 64, 8)],
                                       P.CLOSE_BAD_MESSAGE, "do not match"),
    "portrait hash malformed": ([P.text("portrait", sha256="../etc")], P.CLOSE_BAD_MESSAGE, "sha256"),
    "oversized message": ([b"\x02" + b"\0" * 200_000], P.CLOSE_TOO_BIG, ""),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_message_ends_its_session_with_a_reason_never_the_server(served, case: str) -> None:
    from websockets.exceptions import ConnectionClosed

    messages, code, words = HOSTILE[case]
    conn = raw_session(served.url)
    replies = []
    with pytest.raises(ConnectionClosed) as closed:
        for message in messages:
            for part in (_portrait(_png(64, 64)) if message is GOOD else [message]):
                conn.send(part)
        for _ in range(20):
            replies.append(conn.recv(timeout=10))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code, replies
    if words:
        errors = [json.loads(r) for r in replies if isinstance(r, str) and '"error"' in r]
        assert errors and words in errors[-1]["reason"], replies
    # The server is still there for the next session, which animates.
    conn = raw_session(served.url)
    for message in [*_portrait(_png(64, 64)), _kp(1)]:
        conn.send(message)
    frames = [m for m in (conn.recv(timeout=10) for _ in range(3)) if isinstance(m, bytes)]
    assert P.parse_frame(frames[0], (64, 64)).frame_id == 1
    conn.close()


def test_no_hello_first_and_a_wrong_protocol_are_refused(served) -> None:
    from websockets.exceptions import ConnectionClosed

    for first, code in ((b"\x01binary", P.CLOSE_BAD_MESSAGE), (json.dumps({"type": "hello", "protocol": 99}),
                                                               P.CLOSE_VERSION)):
        conn = raw_session(served.url, hello=False)
        conn.send(first)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                conn.recv(timeout=10)
        assert closed.value.rcvd.code == code


def test_an_idle_session_is_closed(model: Path) -> None:
    from websockets.exceptions import ConnectionClosed

    with serving(model, ServerPolicy(idle_timeout=1)) as served:
        conn = raw_session(served.url)
        start = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                conn.recv(timeout=10)
        assert closed.value.rcvd.code == P.CLOSE_IDLE and time.monotonic() - start < 5
        assert "idle for 1 s" in served.said()


# --------------------------------------------------------------------------- security


def test_token_compared_and_a_wrong_one_refused_in_one_line_on_both_sides(model: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    token = "correct-horse-battery-staple"
    with serving(model, ServerPolicy(token=token)) as served:
        with pytest.raises(RemoteRefused, match="wrong token"):
            RemoteClient(served.url, "wrong-token-wrong-token").start()
        assert RemoteClient(served.url, token).start()
        face = tmp_path / "face.png"
        cv2.imwrite(str(face), np.full((64, 64, 3), 128, np.uint8))
        capsys.readouterr()
        assert main(["run", "--source", str(face), "--camera", str(face), "--no-preview", "--remote", served.url,
                     "--token", "not-the-token-at-all", "--frames", "1"]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and "refused" in err[0] and "wrong token" in err[0], err
        said = [line for line in served.said().splitlines() if "wrong token" in line]
        assert len(said) == 2 and all("refused a session from 127.0.0.1" in line for line in said)
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as denied:  # the keypoint models need the token too
            urllib.request.urlopen(f"http://127.0.0.1:{served.port}{P.MODELS_PATH}manifest.json", timeout=10)
        assert denied.value.code == 401
        request = urllib.request.Request(f"http://127.0.0.1:{served.port}{P.MODELS_PATH}manifest.json",
                                         headers={"Authorization": f"Bearer {token}"})
        listed = json.loads(urllib.request.urlopen(request, timeout=10).read())["variants"]
        assert sorted(v["network"] for v in listed) == ["kp_detector", "kp_processing"]  # nothing else


@pytest.mark.parametrize("argv, words", [
    (["--host", "0.0.0.0"], "needs a token"),
    (["--token", "short"], "at least 16"),
    (["--certfile", "cert.pem"], "both --certfile and --keyfile"),
    (["--port", "70000"], "out of range"),
])
def test_serve_refuses_unsafe_or_broken_settings_in_one_line(model: Path, capsys: pytest.CaptureFixture[str],
                                                             argv: list[str], words: str) -> None:
    capsys.readouterr()
    assert main(["serve", "--model", str(model), "--engine", "tflite", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words in err, err


def test_origin_allow_list_and_host_check(model: Path) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with serving(model, ServerPolicy(allow_origins=("https://puppets.example",))) as served:
        url = served.url + P.PATH
        for origin in ("https://puppets.example", "http://127.0.0.1:8765", "http://localhost:3000", None):
            # allowed: listed, a page on this machine, no browser
            connect(url, origin=origin, open_timeout=5, legacy=True).close()
        with pytest.raises(InvalidStatus) as refused:
            connect(url, origin="https://evil.example", open_timeout=5, legacy=True)
        assert refused.value.response.status_code == 403
        assert "origin https://evil.example is not allowed" in served.said()
        with pytest.raises(InvalidStatus) as rebound:  # DNS rebinding: a foreign name that resolves here
            connect(url, additional_headers={"Host": f"evil.example:{served.port}"}, open_timeout=5, legacy=True)
        assert rebound.value.response.status_code == 400


# --------------------------------------------------------------------------- the server away


def test_unreachable_at_start_without_a_local_model_is_one_line(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setenv("LIVEPUPPET_HOME", str(tmp_path / "home"))  # no default model here
    port = socket.create_server(("127.0.0.1", 0)).getsockname()[1]  # closed at once: nobody listens there
    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.full((64, 64, 3), 128, np.uint8))
    capsys.readouterr()
    assert main(["animate", "--source", str(face), "--driving", str(face), "--output", str(tmp_path / "o.mp4"),
                 "--remote", f"ws://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cannot reach a livepuppet server" in err and "--model" in err, err


def test_without_a_local_model_the_last_frame_is_held_and_remote_comes_back(model: Path) -> None:
    """Server stopped under a session: frames keep coming (the last one, held, with a notice); restarted on the
    same port: the client reconnects, sends the portrait again and frames are rendered there again."""
    from tests.remote_kit import Served

    source, driving = portrait_and_frames(64, 3, seed=7)
    first = Served(model)
    pipe, engine = remote_pipeline(first.url, model, "png")
    try:
        pipe.set_source(source)
        before = pipe.animate(driving[:1])
        first.stop()
        assert engine.client.wait_until(lambda: not engine.client.up, 10)
        assert engine.notice == "server away: holding the last frame; reconnecting..."
        held = pipe.animate(driving[1:3])
        assert np.array_equal(held[0], before[0]) and np.array_equal(held[1], before[0])
        second = Served(model, port=first.port)
        try:
            assert engine.client.wait_up(10)
            again = pipe.animate(driving[2:3])
            assert engine.counts == {"remote": 2, "local": 0, "held": 2}
            assert levels(again, _local(model, source, driving)[2:3]).max() <= 1  # the portrait went up again
            assert engine.client.reconnects == 1 and engine.notice is None
        finally:
            second.stop()
    finally:
        engine.close()


def test_server_killed_mid_run_and_restarted_5_s_later(model: Path, tmp_path: Path) -> None:
    """The issue's bar: the live loop keeps writing frames (rendered locally meanwhile), the client comes back
    by itself, and the run ends normally. Waits on events (frame counts, the client's state), bounded."""
    from livepuppet.live import FaceFramer, open_camera, run_live
    from tests.test_live import FakeCamera, quiet

    port, server = _spawn_server(model)
    pipe, engine = remote_pipeline(f"ws://127.0.0.1:{port}", model, "jpeg", fallback=True)
    sink, quitter = _Counting(), _Quitter()
    capture = open_camera(0, opener=FakeCamera(interval=0.02), live=True, lister=lambda: [])
    console, _ = quiet()
    source, _ = portrait_and_frames(64, 1, seed=9)
    times: dict[str, float] = {}
    result: dict = {}

    def live() -> None:
        result["stats"] = run_live(pipe, capture, FaceFramer(enabled=False), [sink, quitter], sources=[source],
                                   console=console)

    runner = threading.Thread(target=live)
    runner.start()
    try:
        assert sink.wait(lambda: engine.counts["remote"] >= 10, 30)
        server.kill()
        server.wait(timeout=10)
        times["killed"] = time.monotonic()
        assert sink.wait(lambda: engine.counts["local"] >= 5, 30)  # frames go on, rendered here
        notice_while_away = pipe.notice
        out_while_away = sink.count
        time.sleep(max(0.0, 5.0 - (time.monotonic() - times["killed"])))  # the scenario: restarted 5 s later
        assert sink.count > out_while_away  # still writing frames all along
        port, server = _spawn_server(model, port)
        times["restarted"] = time.monotonic()
        remote_before = engine.counts["remote"]
        assert sink.wait(lambda: engine.counts["remote"] >= remote_before + 10, 30)
        times["remote again"] = time.monotonic()
        notice_after = pipe.notice
    finally:
        quitter.quit = True
        runner.join(timeout=30)
        server.kill()
        server.wait(timeout=10)
        engine.close()
    stats = result["stats"]
    print(f"\nkilled -> restarted {times['restarted'] - times['killed']:.1f} s; restarted (process start, model "
          f"load, listening) -> remote frames again {times['remote again'] - times['restarted']:.1f} s; "
          f"{engine.summary()}; {stats.summary()}")
    assert not runner.is_alive() and stats.stop_reason == "quit"
    assert notice_while_away == "server away: rendering locally; reconnecting..." and notice_after is None
    assert engine.client.reconnects == 1


class _Quitter:
    """A preview that shows nothing and presses q when the test says so: how a user ends a run."""

    def __init__(self) -> None:
        self.quit = False

    def show(self, view) -> None:
        pass

    def poll_key(self) -> str | None:
        return "q" if self.quit else None

    def close(self) -> None:
        pass


class _Counting:
    """An output sink that counts frames and lets a test wait for a condition, woken at every frame."""

    def __init__(self) -> None:
        self.count = 0
        self.cond = threading.Condition()

    def send(self, frame: np.ndarray) -> None:
        with self.cond:
            self.count += 1
            self.cond.notify_all()

    def close(self) -> None:
        pass

    def wait(self, predicate, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


def _spawn_server(model: Path, port: int = 0) -> tuple[int, subprocess.Popen]:
    """`livepuppet serve` in a subprocess; returns its port once it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "livepuppet.cli", "serve", "--model", str(model), "--engine",
                             "tflite", "--threads", "1", "--port", str(port)], stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    found = re.search(r"ws://127\.0\.0\.1:(\d+)", line)
    assert found, line + proc.stderr.read() if proc.poll() is not None else line
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its pipe from filling
    return int(found.group(1)), proc


def test_a_second_frame_in_flight_only_where_it_overlaps_something() -> None:
    """Two in flight hide the network and the client's own work; with the server the only bottleneck a second
    frame would just wait behind the first (a frame more of latency), so then it is one."""
    client = RemoteClient("ws://127.0.0.1:1")
    client.in_flight.recent_ms.update(server=55.0, network=1.5, client=6.0)   # loopback, the server on the same CPU
    assert client.in_flight.limit() == 1
    client.in_flight.recent_ms.update(server=10.0, network=2.0, client=15.0)  # a GPU server: keypoints here take longer
    assert client.in_flight.limit() == 2
    client.in_flight.recent_ms.update(server=55.0, network=30.0, client=6.0)  # a far server: the network counts
    assert client.in_flight.limit() == 2


def test_idle_only_once_every_answered_frame_reached_its_caller() -> None:
    """The end of a run waits (drain) for frames out at the server; a frame taken out of flight is handed to its
    caller outside the lock, so idle must wait for that too, or the run ends with the last frame unrecorded."""
    client = RemoteClient("ws://127.0.0.1:1")
    inside, release, got = threading.Event(), threading.Event(), []

    def on_frame(frame: P.Frame | None, rtt: float) -> None:
        inside.set()
        release.wait(10)
        got.append(frame)

    with client.cond:
        frame_id = client.in_flight.add(on_frame)
    image = np.zeros((8, 8, 3), np.uint8)
    link = threading.Thread(target=lambda: RemoteLinkStandIn(client).frame(P.Frame(frame_id, 1.0, image)))
    link.start()
    assert inside.wait(10)
    assert not client.in_flight.wait_idle(0.2), "idle while the caller had not been handed its frame"
    release.set()
    assert client.in_flight.wait_idle(10) and len(got) == 1
    link.join(10)
    with client.cond:
        client.in_flight.add(lambda frame, rtt: got.append(frame))
    client.lose(None)  # a lost frame's caller is told before idle too
    assert client.in_flight.wait_idle(0) and got[-1] is None


class RemoteLinkStandIn:
    """The link thread's frame handling (livepuppet.remote.link), without a socket."""

    def __init__(self, client: RemoteClient) -> None:
        from livepuppet.remote.link import Link
        self.link = Link.__new__(Link)
        self.link.client = client

    def frame(self, frame: P.Frame) -> None:
        self.link._frame(frame)


def test_tls_with_certfile_and_keyfile(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """wss:// with a self-signed certificate the client is told to trust (SSL_CERT_FILE): frames come back;
    a client that does not trust it is refused by TLS, not by a traceback."""
    import shutil

    from livepuppet.web.server import AsgiServer
    from tests.remote_kit import Served

    if not shutil.which("openssl"):
        pytest.fail("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    plain = Served(model)
    plain.stop()  # its state, served again over TLS
    server = AsgiServer(plain.state.app(), "127.0.0.1", 0, certfile=cert, keyfile=key)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"wss://127.0.0.1:{server.port}"
        untrusting = RemoteClient(url)
        assert not untrusting.start(wait=5) and "CERTIFICATE_VERIFY_FAILED" in untrusting.reason
        untrusting.close()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        source, driving = portrait_and_frames(64, 2, seed=11)
        pipe, engine = remote_pipeline(url, model, "png")
        try:
            pipe.set_source(source)
            assert levels(pipe.animate(driving), _local(model, source, driving)).max() <= 1
        finally:
            engine.close()
    finally:
        server.shutdown()
        server.server_close()
