"""A download's HTTP connections, under a timer that covers what a read timeout cannot.

A read timeout bounds each wait for bytes, not the whole: a server that sends its status line or its
headers a byte every few seconds would hold a download forever (the body has its own stall rule in
``download``). Every socket this module's opener makes, redirects included, is watched by the
:class:`Timer` of the thread that opens it; when the timer runs out it shuts the sockets down, which ends
a blocked connect, TLS handshake or read at once. Redirects are followed to http(s) only.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterator


class Timer:
    """Shuts down every socket handed to :meth:`watch` once ``seconds`` pass; :attr:`expired` says why."""

    def __init__(self) -> None:
        self.expired: str | None = None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer: threading.Timer | None = None

    def arm(self, seconds: float, reason: str) -> None:
        """(Re)start the countdown: in ``seconds`` the sockets are shut down and ``expired`` is ``reason``."""
        self._cancel()
        self._timer = threading.Timer(max(0.0, seconds), self._expire, args=(reason,))
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        copy = sock.dup()  # a TLS wrapper takes over ``sock``; the copy still reaches the same connection
        with self._lock:
            self._sockets.append(copy)
            if self.expired is not None:
                _shut(copy)

    def _expire(self, reason: str) -> None:
        with self._lock:
            self.expired = reason
            for sock in self._sockets:
                _shut(sock)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self._cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def __enter__(self) -> "Timer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the other side


_local = threading.local()


@contextlib.contextmanager
def watched_by(timer: Timer) -> Iterator[None]:
    """Sockets the opener makes in this thread, within the block, are watched by ``timer``."""
    _local.timer = timer
    try:
        yield
    finally:
        _local.timer = None


def _create_connection(*args: Any, **kwargs: Any) -> socket.socket:
    sock = socket.create_connection(*args, **kwargs)
    timer = getattr(_local, "timer", None)
    if timer is not None:
        timer.watch(sock)
    return sock


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = _create_connection  # http.client's own hook for making the socket


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = _create_connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self) -> None:
        self.tls = ssl.create_default_context()  # what http.client uses by default, certificates checked
        super().__init__(context=self.tls)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPSConnection, req, context=self.tls)


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only: never to ftp:// or file://."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.URLError(f"refused a redirect to {newurl[:80]} (only http and https are followed)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


OPENER = urllib.request.build_opener(_HttpOnlyRedirects, _HTTPHandler, _HTTPSHandler)
"""The opener for downloads: urllib's (proxies from the environment), with watched sockets and safe redirects."""
