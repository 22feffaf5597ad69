"""What the remote-rendering tests share: a server in a thread, a byte-counting relay, a client pipeline, frames."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from rich.console import Console

from livepuppet.remote import protocol as P
from livepuppet.remote.client import RemoteClient
from livepuppet.remote.server import RemoteServer, ServerPolicy, build
from livepuppet.runtime.choose import open_engine
from livepuppet.runtime.engines.remote import RemoteEngine
from livepuppet.runtime.pipeline import Pipeline
from livepuppet.web.server import AsgiServer


class Served:
    """A ``livepuppet serve`` app on a thread of this process: ``url``, its state, what it printed."""

    def __init__(self, model: Path, options: ServerPolicy | None = None, port: int = 0) -> None:
        import io

        self.log = io.StringIO()
        self.state: RemoteServer = build(model, open_engine(model, "tflite", threads=1), options,
                                         Console(file=self.log, width=300))
        self.server = AsgiServer(self.state.app(), "127.0.0.1", port,
                                 ws_max_size=self.state.welcome["limits"]["portrait_bytes"])
        self.port = self.server.port
        self.url = f"ws://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def said(self) -> str:
        return self.log.getvalue()


@contextlib.contextmanager
def serving(model: Path, options: ServerPolicy | None = None) -> Iterator[Served]:
    served = Served(model, options)
    try:
        yield served
    finally:
        served.stop()


class Relay:
    """A TCP relay between a client and a server that counts the bytes each way and can cut the link."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.up = self.down = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.links: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.links += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, "up"), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, "down"), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        try:
            while data := src.recv(65536):
                with self.lock:
                    setattr(self, way, getattr(self, way) + len(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.up, self.down

    def close(self) -> None:
        self.listener.close()
        for s in self.links:
            with contextlib.suppress(OSError):
                s.close()


def remote_pipeline(url: str, model: Path, fmt: str = "png", fallback: bool = False, token: str | None = None,
                    ) -> tuple[Pipeline, RemoteEngine]:
    """A Pipeline on a RemoteEngine whose keypoints run on ``model`` here (and renders there while away)."""
    client = RemoteClient(url, token, fmt, 90)
    assert client.start(), client.reason
    local = open_engine(model, "tflite", threads=1)
    engine = RemoteEngine(client, local, local if fallback else None)
    return Pipeline(engine), engine


def portrait_and_frames(size: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random portrait and ``n`` driving frames that move, float32 in [0, 1]."""
    from tests.reference import random_frames, random_video

    return random_frames(1, size, size, seed=seed)[0], random_video(n, size, size, seed=seed + 1, speed=0.05)


def levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from livepuppet.media import to_uint8

    return np.abs(to_uint8(a).astype(np.int16) - to_uint8(b).astype(np.int16))


def raw_session(url: str, hello: bool = True, fmt: str = "raw"):
    """A bare WebSocket to the server (for sending what a client never would), past the hello."""
    from websockets.sync.client import connect

    conn = connect(url + P.PATH, open_timeout=5, max_size=None, compression=None, legacy=True)
    if hello:
        conn.send(P.hello(None, fmt))
        assert '"welcome"' in conn.recv(timeout=5)
    return conn
