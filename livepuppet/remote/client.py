"""The client end of a remote session, kept up in the background (docs/remote-protocol.md).

One thread (``remote-link``) connects, says hello, (re)announces the portrait,
reads frames and, when the connection is lost (server killed, network cut,
busy), fails the frames in flight, waits with exponential backoff (0.25 s
doubling to 2 s) and connects again, re-sending the portrait by itself. Callers
on other threads send keypoints with :meth:`RemoteClient.send_frame`, which
keeps at most :data:`IN_FLIGHT` frames unanswered: it waits for a slot, and
says False at once while the server is away, so nothing ever blocks on a dead
server for longer than the keepalive timeout.

Two frames in flight let the client's own work (keypoints, decoding) and the
network overlap the server's rendering; when the server alone is the
bottleneck a second frame only waits behind the first, adding a whole frame
of latency. So the second slot opens only while the time the server would
otherwise wait for us (the network's share of the round trip, plus the
client's time from a free slot to its next frame) is at least a quarter of
the server's own time (:meth:`RemoteClient.in_flight_limit`). The network's
share is measured on frames sent while none was in flight (a frame sent
behind another waits in the server's queue, which is not network).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from livepuppet.errors import LivepuppetError
from livepuppet.remote import protocol as P

IN_FLIGHT = 2               # frames sent and not yet answered, at most
BACKOFF = (0.25, 2.0)        # s: first wait before reconnecting, and the longest
OPEN_TIMEOUT = 5.0           # s to connect and be welcomed
PING = (1.0, 3.0)            # s between keepalive pings, and to wait for a pong: a cut link is noticed in ~4 s
SLOT_TIMEOUT = 5.0           # s a frame may wait for a slot before the connection counts as stuck
OVERLAP = 0.25               # the second slot opens when the server would wait this share of its own time

OnFrame = Callable[["P.Frame | None", float], None]  # (frame or None if lost, round-trip ms)


class RemoteRefused(LivepuppetError):
    """The server refused this client for good (token, origin, protocol, another model): retrying cannot help."""


@dataclass
class _Pending:
    sent: float
    on_frame: OnFrame
    alone: bool  # nothing else was in flight: its round trip has no queueing in it


class RemoteClient:
    """A session with a livepuppet server at ``url`` (``ws://`` or ``wss://`` host:port)."""

    def __init__(self, url: str, token: str | None = None, fmt: str = "jpeg", quality: int = 90,
                 say: Callable[[str], object] | None = None, expected_model: str | None = None) -> None:
        self.url = normalise_url(url)
        self.token, self.fmt, self.quality = token, fmt, quality
        self.say = say or (lambda text: None)
        self.expected_model = expected_model  # a welcome naming another model is refused
        self.state = "connecting"             # connecting | syncing | up | away | refused | closed
        self.reason = ""                      # why the server is away or refused us
        self.welcome: dict[str, Any] | None = None
        self.away_since: float | None = None
        self.reconnects = 0
        self.bytes_up = self.bytes_down = 0   # WebSocket payloads, portraits included
        self.portrait_bytes = 0
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._conn = None
        self._pending: dict[int, _Pending] = {}
        self._freed = 0.0                        # when a slot last opened (perf_counter)
        self.recent_ms = {"server": 0.0, "network": 0.0, "client": 0.0}  # recent means (exponential)
        self._next_id = 1
        self._portrait: tuple[str, bytes] | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._link, name="remote-link", daemon=True)

    # -- life -------------------------------------------------------------------------------------------

    def start(self, wait: float = OPEN_TIMEOUT) -> bool:
        """Start the link; True once the server welcomed us within ``wait`` s. RemoteRefused when it refused."""
        self._thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self.state not in ("connecting",) or self.welcome is not None, wait)
        if self.state == "refused":
            raise RemoteRefused(f"the server at {self.url} refused this client: {self.reason}")
        return self.welcome is not None

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self.state = "closed"
            conn, self._conn = self._conn, None
            self._cond.notify_all()
        if conn is not None:
            self._send(conn, P.text("bye"))
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a connection already gone is what closing wants
                pass
        self._fail_pending()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)

    @property
    def up(self) -> bool:
        return self.state == "up"

    def wait_up(self, timeout: float) -> bool:
        return self.wait_until(lambda: self.state in ("up", "refused", "closed"), timeout) and self.up

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait for ``predicate`` (about this client's state), woken at every change of it."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    # -- what callers send ------------------------------------------------------------------------------

    def set_portrait(self, digest: str, message: bytes, timeout: float = 10.0) -> bool:
        """Remember the portrait (a PORTRAIT message) and announce it now if connected; True once the server
        has it. While away it goes up by itself after the next connect."""
        with self._cond:
            self._portrait = (digest, message)
            if self._conn is None or self.state not in ("up", "syncing"):
                return False
            self.state = "syncing"
            conn = self._conn
        self._send(conn, P.text("portrait", sha256=digest))
        with self._cond:
            return self._cond.wait_for(lambda: self.state != "syncing", timeout) and self.up

    def send_frame(self, value: np.ndarray, jacobian: np.ndarray, on_frame: OnFrame) -> bool:
        """Send one frame's keypoints; ``on_frame`` is called later (from the link thread) with the frame, or
        with None if it was lost. False, without sending, while the server is away."""
        with self._cond:
            if not self._cond.wait_for(self._slot_open, SLOT_TIMEOUT):
                conn = self._conn
                stuck = True
            else:
                stuck = False
                if not self.up:
                    return False
                now = time.perf_counter()
                if self._freed:
                    self._mean("client", (now - self._freed) * 1e3)
                frame_id, self._next_id = self._next_id, self._next_id + 1
                self._pending[frame_id] = _Pending(now, on_frame, not self._pending)
                conn = self._conn
        if stuck:  # frames unanswered for SLOT_TIMEOUT: the server hangs; reconnect
            self._drop(conn, "no frames back for 5 s")
            return False
        if not self._send(conn, P.keypoints_message(frame_id, value, jacobian)):
            with self._cond:
                lost = self._pending.pop(frame_id, None)
            if lost is not None:
                lost.on_frame(None, 0.0)
            return True  # answered (lost) through on_frame
        return True

    def in_flight_limit(self) -> int:
        """2 while the server would otherwise wait for the network or for us, else 1 (see the module docstring)."""
        ms = self.recent_ms
        return IN_FLIGHT if ms["network"] + ms["client"] >= OVERLAP * ms["server"] else 1

    def wait_slot(self, timeout: float) -> bool:
        """Wait until a frame may be sent at once (or the server is away): take the camera frame only then."""
        with self._cond:
            return self._cond.wait_for(self._slot_open, timeout)

    def _slot_open(self) -> bool:
        return len(self._pending) < self.in_flight_limit() or not self.up

    def _mean(self, key: str, ms: float) -> None:
        self.recent_ms[key] = ms if not self.recent_ms[key] else 0.8 * self.recent_ms[key] + 0.2 * ms

    def in_flight(self) -> int:
        with self._cond:
            return len(self._pending)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no frame is in flight (the end of a run)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending, timeout)

    # -- the link thread --------------------------------------------------------------------------------

    def _link(self) -> None:
        backoff = BACKOFF[0]
        while not self._closing:
            try:
                conn = self._connect()
                backoff = BACKOFF[0]
                self._receive(conn)
            except RemoteRefused as exc:
                self._set_away(str(exc), refused=True)
                return
            except Exception as exc:  # noqa: BLE001 - any failure of the link is the server being away
                self._set_away(_why(exc))
            with self._cond:
                self._cond.wait_for(lambda: self._closing, backoff)
            backoff = min(backoff * 2, BACKOFF[1])

    def _connect(self):
        from websockets.sync.client import connect

        conn = connect(self.url + P.PATH, open_timeout=OPEN_TIMEOUT, ping_interval=PING[0], ping_timeout=PING[1],
                       close_timeout=1.0, max_size=None, compression=None, user_agent_header="livepuppet",
                       legacy=True)
        try:
            conn.send(P.hello(self.token, self.fmt, self.quality))
            welcome = self._welcome(conn.recv(timeout=OPEN_TIMEOUT))
        except BaseException:
            conn.close()
            raise
        with self._cond:
            if self._closing:
                conn.close()
                raise ConnectionError("closing")
            came_back = self.away_since is not None
            self.welcome, self._conn = welcome, conn
            self.state = "syncing" if self._portrait else "up"
            portrait = self._portrait
            self._cond.notify_all()
        if came_back:
            self.reconnects += 1
            self.say(f"remote: the server is back after {time.monotonic() - self.away_since:.1f} s "
                     f"({welcome.get('engine', '?')} on {welcome.get('replica', '?')})")
        self.away_since = None
        if portrait:
            self._send(conn, P.text("portrait", sha256=portrait[0]))
        return conn

    def _welcome(self, message: str | bytes) -> dict[str, Any]:
        if isinstance(message, bytes):
            raise P.ProtocolError("the server answered the hello with binary data")
        reply = P.parse_text(message, ("welcome", "error"))
        if reply["type"] == "error":
            code, reason = reply.get("code"), str(reply.get("reason", "refused"))[:200]
            if code in P.FATAL_CODES:
                raise RemoteRefused(reason)
            raise ConnectionError(reason)  # busy: try again later
        model = reply.get("model")
        if reply.get("protocol") != P.VERSION or not isinstance(model, dict):
            raise RemoteRefused(f"it speaks protocol {str(reply.get('protocol'))[:10]}, this client {P.VERSION}")
        if self.expected_model is None:
            self.expected_model = model.get("id")
        elif model.get("id") != self.expected_model:
            raise RemoteRefused(f"it now runs another model ({str(model.get('name'))[:60]}), whose keypoints differ")
        return reply

    def _receive(self, conn) -> None:
        size = tuple(self.welcome["model"]["frame_size"])
        while True:
            message = conn.recv()
            self.bytes_down += len(message)
            if isinstance(message, bytes):
                self._frame(P.parse_frame(message, size))
            else:
                self._control(P.parse_text(message, None), conn)  # types this client does not know: ignored

    def _frame(self, frame: P.Frame) -> None:
        now = time.perf_counter()
        with self._cond:
            done = sorted(i for i in self._pending if i <= frame.frame_id)
            answered = [(i, self._pending.pop(i)) for i in done]
            if answered and answered[-1][0] == frame.frame_id:
                pending = answered[-1][1]
                self._mean("server", frame.server_ms)
                if pending.alone:  # a frame sent behind another waits on the server before it is read
                    self._mean("network", max(0.0, (now - pending.sent) * 1e3 - frame.server_ms))
            self._freed = now
            self._cond.notify_all()
        for frame_id, pending in answered:  # older ones were skipped by the server: lost
            pending.on_frame(frame if frame_id == frame.frame_id else None, (now - pending.sent) * 1e3)

    def _control(self, message: dict[str, Any], conn) -> None:
        portrait = self._portrait
        if message["type"] == "error":
            self.reason = str(message.get("reason", ""))[:200]
            if message.get("code") in P.FATAL_CODES:
                raise RemoteRefused(self.reason)
        elif message["type"] not in ("send", "ready") or portrait is None or message.get("sha256") != portrait[0]:
            return  # a reply about a portrait replaced since, or a message of a later protocol revision
        elif message["type"] == "send":
            self._send(conn, portrait[1])
        else:
            with self._cond:
                if self.state == "syncing":
                    self.state = "up"
                self._cond.notify_all()

    def _send(self, conn, message: str | bytes) -> bool:
        try:
            with self._send_lock:
                conn.send(message)
                self.bytes_up += len(message)
                if isinstance(message, bytes) and message[:1] == bytes([P.PORTRAIT]):
                    self.portrait_bytes += len(message)
            return True
        except Exception:  # noqa: BLE001 - the link thread notices the closed connection and reconnects
            return False

    def _drop(self, conn, why: str) -> None:
        if conn is not None:
            self.reason = why
            conn.close_socket()

    def _set_away(self, why: str, refused: bool = False) -> None:
        with self._cond:
            if self._closing:
                return
            was = self.state
            self._conn = None
            self.state = "refused" if refused else "away"
            self.reason = why
            if self.away_since is None:
                self.away_since = time.monotonic()
            self._cond.notify_all()
        self._fail_pending()
        if was in ("up", "syncing") or refused and self.welcome is not None:  # at start the caller says it
            self.say(f"remote: {'refused' if refused else 'lost the server'} ({why})")

    def _fail_pending(self) -> None:
        with self._cond:
            lost, self._pending = list(self._pending.values()), {}
            self._cond.notify_all()
        for pending in lost:
            pending.on_frame(None, 0.0)


def normalise_url(url: str) -> str:
    """``ws://host:port`` (a trailing path or slash dropped); http(s) accepted as ws(s)."""
    url = url.strip().rstrip("/")
    for plain, ws in (("http://", "ws://"), ("https://", "wss://")):
        if url.startswith(plain):
            url = ws + url[len(plain):]
    if not url.startswith(("ws://", "wss://")) or len(url.split("://", 1)[1]) == 0:
        raise LivepuppetError(f"--remote {url[:80]} is not a ws:// or wss:// address such as ws://gpu-box:8766")
    return url.removesuffix(P.PATH)


def http_url(url: str) -> str:
    return "http" + url[2:]


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        text = "connection refused: is `livepuppet serve` running there?"
    return " ".join(text.split())[:160]
