"""Opening a session: the WebSocket, the hello, and the checks on the server's welcome (docs/remote-protocol.md)."""

from __future__ import annotations

from typing import Any

from livepuppet.errors import LivepuppetError
from livepuppet.remote import protocol as P

OPEN_TIMEOUT = 5.0  # s to connect and be welcomed
PING = (1.0, 3.0)   # s between keepalive pings, and to wait for a pong: a cut link is noticed in about 4 s


class RemoteRefused(LivepuppetError):
    """The server refused this client for good (token, origin, protocol, another model): retrying cannot help."""


def open_session(url: str, hello: str, expected_model: str | None):
    """(connection, welcome) from the server at ``url``; RemoteRefused for a refusal retrying cannot change,
    ConnectionError (busy) or OSError for the rest."""
    from websockets.sync.client import connect

    conn = connect(url + P.PATH, open_timeout=OPEN_TIMEOUT, ping_interval=PING[0], ping_timeout=PING[1],
                   close_timeout=1.0, max_size=None, compression=None, user_agent_header="livepuppet", legacy=True)
    try:
        conn.send(hello)
        return conn, check_welcome(conn.recv(timeout=OPEN_TIMEOUT), expected_model)
    except BaseException:
        conn.close()
        raise


def check_welcome(message: str | bytes, expected_model: str | None) -> dict[str, Any]:
    """The welcome, checked: our protocol, and the model whose keypoints this client computes (once it knows)."""
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
    if expected_model is not None and model.get("id") != expected_model:
        raise RemoteRefused(f"it now runs another model ({str(model.get('name'))[:60]}), whose keypoints differ")
    return reply


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


def why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        text = "connection refused: is `livepuppet serve` running there?"
    return " ".join(text.split())[:160]
