"""The thread that keeps a remote session up: connect, (re)send the portrait, read frames, reconnect with backoff.

It works on its :class:`~livepuppet.remote.client.RemoteClient`'s state under
the client's condition; the client is what callers on other threads use.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from livepuppet.remote import protocol as P
from livepuppet.remote.handshake import RemoteRefused, open_session, why

if TYPE_CHECKING:  # pragma: no cover
    from livepuppet.remote.client import RemoteClient

BACKOFF = (0.25, 2.0)  # s: first wait before reconnecting, and the longest


class Link(threading.Thread):
    def __init__(self, client: "RemoteClient") -> None:
        super().__init__(name="remote-link", daemon=True)
        self.client = client

    def run(self) -> None:
        c, backoff = self.client, BACKOFF[0]
        while not c.closing:
            try:
                conn = self._connect()
                backoff = BACKOFF[0]
                self._receive(conn)
            except RemoteRefused as exc:
                self.set_away(str(exc), refused=True)
                return
            except Exception as exc:  # noqa: BLE001 - any failure of the link is the server being away
                self.set_away(why(exc))
            with c.cond:
                c.cond.wait_for(lambda: c.closing, backoff)
            backoff = min(backoff * 2, BACKOFF[1])

    def _connect(self):
        c = self.client
        conn, welcome = open_session(c.url, P.hello(c.token, c.fmt, c.quality), c.expected_model)
        c.expected_model = welcome["model"].get("id")
        with c.cond:
            if c.closing:
                conn.close()
                raise ConnectionError("closing")
            came_back = c.away_since is not None
            c.welcome, c.conn = welcome, conn
            c.state = "syncing" if c.portrait else "up"
            portrait = c.portrait
            c.cond.notify_all()
        if came_back:
            c.reconnects += 1
            c.say(f"remote: the server is back after {time.monotonic() - c.away_since:.1f} s "
                  f"({welcome.get('engine', '?')} on {welcome.get('replica', '?')})")
        c.away_since = None
        if portrait:
            c.send(conn, P.text("portrait", sha256=portrait[0]))
        return conn

    def _receive(self, conn) -> None:
        size = tuple(self.client.welcome["model"]["frame_size"])
        while True:
            message = conn.recv()
            self.client.bytes_down += len(message)
            if isinstance(message, bytes):
                self._frame(P.parse_frame(message, size))
            else:
                self._control(P.parse_text(message, None), conn)  # types this client does not know: ignored

    def _frame(self, frame: P.Frame) -> None:
        now = time.perf_counter()
        with self.client.cond:
            answered = self.client.in_flight.answer(frame, now)
        try:
            for pending, got in answered:  # older ones were skipped by the server: lost
                pending.on_frame(got, (now - pending.sent) * 1e3)
        finally:
            self.client.in_flight.told(len(answered))

    def _control(self, message: dict[str, Any], conn) -> None:
        c, portrait = self.client, self.client.portrait
        if message["type"] == "error":
            c.reason = str(message.get("reason", ""))[:200]
            if message.get("code") in P.FATAL_CODES:
                raise RemoteRefused(c.reason)
        elif message["type"] not in ("send", "ready") or portrait is None or message.get("sha256") != portrait[0]:
            return  # a reply about a portrait replaced since, or a message of a later protocol revision
        elif message["type"] == "send":
            c.send(conn, portrait[1])
        else:
            with c.cond:
                if c.state == "syncing":
                    c.state = "up"
                c.cond.notify_all()

    def set_away(self, reason: str, refused: bool = False) -> None:
        """The connection is gone (or refused for good): frames in flight are lost, and the user hears it once."""
        c = self.client
        with c.cond:
            if c.closing:
                return
            was = c.state
            c.conn, c.state, c.reason = None, "refused" if refused else "away", reason
            if c.away_since is None:
                c.away_since = time.monotonic()
            c.cond.notify_all()
        c.lose(None)
        if was in ("up", "syncing") or refused and c.welcome is not None:  # at start the caller says it
            c.say(f"remote: {'refused' if refused else 'lost the server'} ({reason})")
