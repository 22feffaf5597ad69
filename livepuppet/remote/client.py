"""The client end of a remote session, kept up in the background (docs/remote-protocol.md).

One thread (``remote-link``) connects, says hello, (re)announces the portrait,
reads frames and, when the connection is lost (server killed, network cut,
busy), fails the frames in flight, waits with exponential backoff (0.25 s
doubling to 2 s) and connects again, re-sending the portrait by itself. Callers
on other threads send keypoints with :meth:`RemoteClient.send_frame`, which
waits for one of the (one or two, :mod:`livepuppet.remote.inflight`) slots and
says False at once while the server is away, so nothing ever blocks on a dead
server for longer than the keepalive timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from livepuppet.remote import protocol as P
from livepuppet.remote.handshake import OPEN_TIMEOUT, RemoteRefused, normalise_url
from livepuppet.remote.inflight import InFlight, OnFrame
from livepuppet.remote.link import Link

__all__ = ["RemoteClient", "RemoteRefused"]

SLOT_TIMEOUT = 5.0           # s a frame may wait for a slot before the connection counts as stuck


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
        self.cond = threading.Condition()  # guards state, conn, portrait, closing and the frames in flight
        self._send_lock = threading.Lock()
        self.conn = None
        self.in_flight = InFlight(self.cond, lambda: self.up)
        self.portrait: tuple[str, bytes] | None = None
        self.closing = False
        self._link = Link(self)

    # -- life -------------------------------------------------------------------------------------------

    def start(self, wait: float = OPEN_TIMEOUT) -> bool:
        """Start the link; True once the server welcomed us within ``wait`` s. RemoteRefused when it refused."""
        self._link.start()
        with self.cond:
            self.cond.wait_for(lambda: self.state not in ("connecting",) or self.welcome is not None, wait)
        if self.state == "refused":
            raise RemoteRefused(f"the server at {self.url} refused this client: {self.reason}")
        return self.welcome is not None

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.state = "closed"
            conn, self.conn = self.conn, None
            self.cond.notify_all()
        if conn is not None:
            self.send(conn, P.text("bye"))
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a connection already gone is what closing wants
                pass
        self.lose(None)
        if self._link.is_alive() and threading.current_thread() is not self._link:
            self._link.join(timeout=5.0)

    @property
    def up(self) -> bool:
        return self.state == "up"

    def wait_up(self, timeout: float) -> bool:
        return self.wait_until(lambda: self.state in ("up", "refused", "closed"), timeout) and self.up

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait for ``predicate`` (about this client's state), woken at every change of it."""
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    # -- what callers send ------------------------------------------------------------------------------

    def set_portrait(self, digest: str, message: bytes, timeout: float = 10.0) -> bool:
        """Remember the portrait (a PORTRAIT message) and announce it now if connected; True once the server
        has it. While away it goes up by itself after the next connect."""
        with self.cond:
            self.portrait = (digest, message)
            if self.conn is None or self.state not in ("up", "syncing"):
                return False
            self.state = "syncing"
            conn = self.conn
        self.send(conn, P.text("portrait", sha256=digest))
        with self.cond:
            return self.cond.wait_for(lambda: self.state != "syncing", timeout) and self.up

    def send_frame(self, value: np.ndarray, jacobian: np.ndarray, on_frame: OnFrame) -> bool:
        """Send one frame's keypoints; ``on_frame`` is called later (from the link thread) with the frame, or
        with None if it was lost. False, without sending, while the server is away."""
        with self.cond:
            if not self.cond.wait_for(self.in_flight.slot_open, SLOT_TIMEOUT):
                conn, frame_id = self.conn, None
            elif not self.up:
                return False
            else:
                conn, frame_id = self.conn, self.in_flight.add(on_frame)
        if frame_id is None:  # frames unanswered for SLOT_TIMEOUT: the server hangs; reconnect
            self.drop(conn, "no frames back for 5 s")
            return False
        if not self.send(conn, P.keypoints_message(frame_id, value, jacobian)):
            self.lose(frame_id)  # answered (lost) through on_frame
        return True

    def send(self, conn, message: str | bytes) -> bool:
        try:
            with self._send_lock:
                conn.send(message)
                self.bytes_up += len(message)
                if isinstance(message, bytes) and message[:1] == bytes([P.PORTRAIT]):
                    self.portrait_bytes += len(message)
            return True
        except Exception:  # noqa: BLE001 - the link thread notices the closed connection and reconnects
            return False

    def drop(self, conn, why: str) -> None:
        if conn is not None:
            self.reason = why
            conn.close_socket()

    def lose(self, frame_id: int | None) -> None:
        """One frame (None: every one) in flight is lost: its caller hears None."""
        with self.cond:
            lost = self.in_flight.lose(frame_id)
        try:
            for pending in lost:
                pending.on_frame(None, 0.0)
        finally:
            self.in_flight.told(len(lost))
