"""One ASGI stack for livepuppet's servers (``web`` and ``serve``): Starlette on uvicorn, with every wait bounded.

What it adds to uvicorn, and why:

* a request's head must arrive within :data:`HEAD_TIMEOUT` seconds of the
  connection (or of the previous response), so half-sent requests cannot hold
  sockets for ever (uvicorn's keep-alive timer stops at the first byte);
* every chunk of a response must be taken within :data:`SEND_TIMEOUT`, so a
  client that stops reading is dropped instead of holding its buffers;
* the Host header is checked on a loopback server (a DNS-rebinding page must
  not read the user's files through it);
* files are streamed in chunks from a descriptor opened per request, after
  checking, per request, that it is a regular file inside its root (a link
  swapped in after start, a FIFO, a vanished file: refused, never followed);
* nothing of uvicorn's logging reaches the user.

:class:`AsgiServer` binds at once (so a bad port fails before a model loads)
and runs like :class:`http.server.HTTPServer`: ``serve_forever()`` in any
thread, ``shutdown()`` from another.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import stat
import threading
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from livepuppet.errors import LivepuppetError

HEAD_TIMEOUT = 10.0   # s for a request line and headers
SEND_TIMEOUT = 30.0   # s for a client to take one chunk
CHUNK = 1 << 16       # bytes read and sent at a time: a slow client holds about two of them
MAX_HEAD = 16 << 10   # bytes of a request head


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_hosts(host: str) -> list[str]:
    """The Host header values a loopback server answers to: its address and ``localhost``."""
    return sorted({host.strip("[]"), f"[{host.strip('[]')}]" if ":" in host else host, "localhost"})


class _HeadTimeoutH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request head (see the module docstring)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        import h11

        def expire() -> None:
            if (self.conn.their_state is h11.IDLE and self.transport.get_protocol() is self
                    and not self.transport.is_closing()):
                self.transport.close()  # no (complete) request head in time

        if getattr(self, "_head_deadline", None) is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(HEAD_TIMEOUT, expire)


async def _bounded_send(send: Send, message: Message) -> None:
    with anyio.fail_after(SEND_TIMEOUT):
        await send(message)


class SendTimeout:
    """ASGI middleware: a response chunk the client does not take in SEND_TIMEOUT ends the connection quietly."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, lambda message: _bounded_send(send, message))
        except TimeoutError:
            pass  # uvicorn closes a connection whose response did not complete


def guarded(app: ASGIApp, host: str) -> ASGIApp:
    """``app`` behind the send timeout and, on a loopback address, the Host allow list."""
    app = SendTimeout(app)
    if is_loopback(host):
        app = TrustedHostMiddleware(app, allowed_hosts=loopback_hosts(host), www_redirect=False)
    return app


# -- files -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedFile:
    """A file a server may send: ``root / relative``, checked again at every request."""

    root: Path
    relative: str
    media_type: str = "application/octet-stream"
    gzipped: bool = False  # stored gzip-compressed: sent as is to clients that take gzip, inflated for others
    size: int | None = None  # bytes the file must hold (a model folder lists each file's size)

    @property
    def path(self) -> Path:
        return self.root / self.relative


class FileGone(Exception):
    """A served file is missing, no longer a regular file, or now leads outside its root."""


def open_checked(entry: ServedFile) -> tuple[int, int]:
    """(descriptor, size) of ``entry``, opened without blocking on FIFOs, checked to be a regular file
    that resolves inside its root; FileGone otherwise."""
    try:
        fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FileGone(exc.strerror or str(exc)) from None
    try:
        info = os.fstat(fd)
        real = Path(os.readlink(f"/proc/self/fd/{fd}")) if os.path.isdir("/proc/self/fd") else entry.path.resolve()
        if not stat.S_ISREG(info.st_mode):
            raise FileGone("not a regular file")
        if not real.is_relative_to(entry.root.resolve()):
            raise FileGone(f"it leads outside {entry.root}")
        if entry.size is not None and info.st_size != entry.size:
            raise FileGone(f"it holds {info.st_size} bytes, not the {entry.size} listed (replaced)")
        return fd, info.st_size
    except BaseException:
        os.close(fd)
        raise


async def _chunks(fd: int, inflate: bool) -> AsyncIterator[bytes]:
    """The file's bytes, CHUNK at a time (inflated when asked, never more than CHUNK at once); closes ``fd``."""
    inflater = zlib.decompressobj(wbits=31) if inflate else None
    try:
        while True:
            data = await anyio.to_thread.run_sync(os.read, fd, CHUNK)
            if not data:
                break
            if inflater is None:
                yield data
                continue
            while data:
                yield inflater.decompress(data, CHUNK)
                data = inflater.unconsumed_tail
    finally:
        os.close(fd)


def file_response(entry: ServedFile, accepts_gzip: bool, head: bool, headers: dict[str, str],
                  on_gone: Callable[[ServedFile, str], None]) -> Response:
    """Stream ``entry`` (headers only for HEAD); 404 with ``on_gone`` told when it cannot be served now."""
    try:
        fd, size = open_checked(entry)
    except FileGone as gone:
        on_gone(entry, str(gone))
        return PlainTextResponse("not found", status_code=404, headers=headers)
    headers = dict(headers)
    inflate = entry.gzipped and not accepts_gzip
    if entry.gzipped and accepts_gzip:
        headers["Content-Encoding"] = "gzip"
    if not inflate:
        headers["Content-Length"] = str(size)
    if head:
        os.close(fd)
        return Response(status_code=200, headers=headers, media_type=entry.media_type)
    return StreamingResponse(_chunks(fd, inflate), headers=headers, media_type=entry.media_type)


# -- the server --------------------------------------------------------------------------------------------


class AsgiServer:
    """uvicorn on a socket bound now; ``serve_forever()`` / ``shutdown()`` as http.server's servers have."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, certfile: Path | None = None,
                 keyfile: Path | None = None, ws_max_size: int = 1 << 20, max_connections: int = 256,
                 sock: socket.socket | None = None) -> None:
        """``sock``: one :func:`bind` made already (so that a busy port fails before a model loads)."""
        import uvicorn

        self.sock = sock or bind(host, port)
        self.server_address = self.sock.getsockname()[:2]
        self.host, self.port = host, self.server_address[1]
        self.scheme = "https" if certfile else "http"
        config = uvicorn.Config(
            guarded(app, host), http=_HeadTimeoutH11, ws="websockets-sansio", lifespan="off",
            log_config=None, log_level="critical", access_log=False, server_header=False,
            ws_max_size=ws_max_size, ws_per_message_deflate=False, ws_ping_interval=10.0, ws_ping_timeout=20.0,
            timeout_keep_alive=5, timeout_graceful_shutdown=3, limit_concurrency=max_connections,
            h11_max_incomplete_event_size=MAX_HEAD, ssl_certfile=certfile, ssl_keyfile=keyfile)
        try:
            config.load()  # reads the certificate now: a bad one is a one-line error before anything runs
        except (OSError, ValueError) as exc:
            self.sock.close()
            raise LivepuppetError(f"cannot use the TLS certificate/key ({getattr(exc, 'strerror', None) or exc}); "
                                  "check --certfile and --keyfile") from None
        self._server = uvicorn.Server(config)
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def started(self) -> bool:
        return self._server.started

    def serve_forever(self) -> None:
        """Serve until shutdown() (or, in the main thread, Ctrl+C / SIGTERM, which uvicorn re-raises after)."""
        try:
            self._server.run(sockets=[self.sock])
        finally:
            self._stopped.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._stopped.wait(timeout)

    def server_close(self) -> None:
        self.sock.close()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: any free port); a one-line error when that cannot be."""
    if not 0 <= port <= 65535:
        raise LivepuppetError(f"port {port} is out of range; choose one from 1 to 65535")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise LivepuppetError(f"cannot listen on {host} ({getattr(exc, 'strerror', None) or exc}); "
                              "check --host") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restarted server gets its port back at once
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise LivepuppetError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
    sock.set_inheritable(True)
    return sock
