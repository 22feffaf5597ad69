"""``livepuppet serve``'s ASGI app: sessions that send keypoints and get avatar frames back (docs/remote-protocol.md).

A session is one WebSocket: hello (token, frame format), then a portrait
(announced by hash; sent only if the server does not hold it), then keypoints
in, frames out, in order. Anything that breaks the protocol ends that session
with a reason, never the server; every message is bounded before it is parsed.
The same app runs alone on uvicorn (:mod:`livepuppet.web.server`) or in each
replica of a Ray Serve deployment (:mod:`livepuppet.remote.ray_app`).
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from livepuppet import __version__
from livepuppet.errors import ModelFolderError
from livepuppet.modelfolder.schema import MANIFEST, ModelFolder, file_entry, to_json
from livepuppet.remote import protocol as P
from livepuppet.remote.renderer import Renderer
from livepuppet.runtime.engines import Engine, SourceData
from livepuppet.web.server import SEND_TIMEOUT, ServedFile, file_response, is_loopback

HELLO_TIMEOUT = 10.0  # s from connecting to a hello


@dataclass(frozen=True)
class ServerPolicy:
    """What a server allows: who may connect, how many at once, how long an idle session is kept."""

    token: str | None = None
    max_sessions: int = 4
    idle_timeout: float = 30.0
    allow_origins: tuple[str, ...] = ()  # besides loopback pages; "*" for any


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """No Origin (not a browser), a page on this machine, or one the operator allowed."""
    if origin is None or "*" in allowed or origin in allowed:
        return True
    host = origin.split("://", 1)[-1].rsplit(":", 1)[0] if "://" in origin else ""
    return origin.startswith(("http://", "https://")) and is_loopback(host)


def keypoint_models(folder: ModelFolder) -> tuple[bytes, dict[str, ServedFile]]:
    """What a client without the model needs to compute keypoints: a manifest listing only the two keypoint
    models' ``.tflite`` files (with their sizes and hashes, measured now), and those files by their paths."""
    variants = []
    for network in P.KEYPOINT_MODELS:
        variant = folder.find(network, "tflite")
        if variant is None:
            raise ModelFolderError(f"{folder.path} has no .tflite {network}, which clients compute keypoints "
                                   "with; convert it with --targets tflite")
        variants.append(replace(variant, files=tuple(file_entry(folder.path, folder.file(variant, i))
                                                      for i in range(len(variant.files)))))
    files = {f.path: ServedFile(folder.path, f.path, size=f.bytes) for v in variants for f in v.files}
    return to_json(folder.with_variants(variants)).encode(), files


class RemoteServer:
    """The state the sessions share: the renderer, the options, what a welcome says, the open sessions."""

    def __init__(self, renderer: Renderer, folder: ModelFolder, options: ServerPolicy,
                 console: Console | None = None) -> None:
        self.renderer, self.options = renderer, options
        self.console = console or Console(stderr=True)
        self.kp_manifest, self.files = keypoint_models(folder)
        self.open = self.count = 0
        h, w = folder.frame_size
        self.welcome = {
            "protocol": P.VERSION, "server": f"livepuppet {__version__}",
            "replica": f"{socket.gethostname()}:{os.getpid()}", "engine": renderer.engine.label,
            "model": {"id": P.model_id(folder), "name": folder.path.name, "frame_size": [h, w],
                      "num_kp": folder.num_kp, "batch": folder.batch},
            "keypoint_models": {MANIFEST: {"sha256": P.sha256_hex(self.kp_manifest),
                                           "bytes": len(self.kp_manifest)}},
            "limits": {"max_sessions": options.max_sessions, "idle_timeout_s": options.idle_timeout,
                       "portrait_bytes": P.max_portrait_bytes((h, w)), "keypoints_bytes": 8 + 24 * folder.num_kp},
        }

    def say(self, text: str) -> None:
        self.console.print(f"livepuppet serve: {text}", markup=False, highlight=False, soft_wrap=True)

    def token_ok(self, given: str) -> bool:
        expected = self.options.token
        return expected is None or hmac.compare_digest(given.encode(), expected.encode())

    def app(self) -> Starlette:
        return Starlette(routes=[
            WebSocketRoute(P.PATH, self.session),
            Route(P.MODELS_PATH + "{name:path}", self.model_file, methods=["GET", "HEAD"]),
            Route("/v1/health", lambda request: JSONResponse({"protocol": P.VERSION, "ok": True})),
        ])

    async def model_file(self, request: Request) -> Response:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not self.token_ok(bearer):
            return PlainTextResponse("wrong token", status_code=401)
        name = request.path_params["name"]
        if name == MANIFEST:
            return Response(self.kp_manifest, media_type="application/json", headers={"Cache-Control": "no-store"})
        entry = self.files.get(name)
        if entry is None:
            return PlainTextResponse("not found", status_code=404)
        return file_response(entry, False, request.method == "HEAD", {"Cache-Control": "no-store"},
                             lambda e, why: self.say(f"{e.path} can no longer be served ({why})"))

    async def session(self, ws: WebSocket) -> None:
        peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
        if not origin_allowed(ws.headers.get("origin"), self.options.allow_origins):
            self.say(f"refused a session from {peer}: origin {ws.headers.get('origin', '')[:80]} is not allowed "
                     "(--allow-origin)")
            await ws.close(P.CLOSE_ORIGIN)
            return
        await ws.accept()
        number, opened = None, False
        try:
            with anyio.fail_after(HELLO_TIMEOUT):
                hello = P.parse_hello(P.parse_text(await _receive_text(ws), ("hello",)))
            if not self.token_ok(hello.token):
                raise P.ProtocolError("wrong token", P.CLOSE_TOKEN)
            if self.open >= self.options.max_sessions:
                raise P.ProtocolError(f"busy: {self.open} sessions open, the most this server takes", P.CLOSE_BUSY)
            self.open, self.count, opened = self.open + 1, self.count + 1, True
            number = self.count
            await ws.send_text(P.text("welcome", **self.welcome, session=number))
            session = _Session(ws, self, hello)
            why = await session.run()
            self.say(f"session {number} from {peer} ended after {session.frames} frames ({why})")
        except TimeoutError:
            await _refuse(ws, P.ProtocolError("no hello in time"))
        except P.ProtocolError as exc:
            self.say(f"session {number} from {peer} ended: {exc.reason}" if number
                     else f"refused a session from {peer}: {exc.reason}")
            await _refuse(ws, exc)
        except WebSocketDisconnect:
            pass
        except Exception as exc:  # noqa: BLE001 - one session's failure (an engine error) never ends the server
            self.say(f"session {number} from {peer} ended by an error: {type(exc).__name__}: {str(exc)[:160]}")
            await _refuse(ws, P.ProtocolError("the server failed to render this session", 1011))
        finally:
            if opened:
                self.open -= 1


class _Session:
    """One client's portrait and frames; see the module docstring for the order of messages."""

    def __init__(self, ws: WebSocket, server: RemoteServer, hello: P.Hello) -> None:
        self.ws, self.server, self.hello = ws, server, hello
        self.renderer = server.renderer
        self.source: SourceData | None = None
        self.awaited: str | None = None  # the hash of a portrait announced but not yet sent
        self.last_id = -1
        self.frames = 0

    async def run(self) -> str:
        """Serve until the client leaves; returns why it ended (a broken rule raises ProtocolError)."""
        while True:
            try:
                with anyio.fail_after(self.server.options.idle_timeout):
                    message = await self.ws.receive()
            except TimeoutError:
                raise P.ProtocolError(f"idle for {self.server.options.idle_timeout:g} s", P.CLOSE_IDLE) from None
            if message["type"] == "websocket.disconnect":
                code = message.get("code", 1000)
                return "a message over the size limit" if code == P.CLOSE_TOO_BIG else f"client closed, {code}"
            if message.get("text") is not None:
                if await self._control(P.parse_text(message["text"], ("portrait", "bye"))):
                    return "client said bye"
                continue
            data = message.get("bytes") or b""
            handler = {P.KEYPOINTS: self._frame, P.PORTRAIT: self._portrait}.get(data[0] if data else -1)
            if handler is None:
                raise P.ProtocolError("a binary message of unknown kind")
            await handler(data)

    async def _send(self, message: str | bytes) -> None:
        try:
            with anyio.fail_after(SEND_TIMEOUT):
                await (self.ws.send_bytes(message) if isinstance(message, bytes) else self.ws.send_text(message))
        except TimeoutError:
            raise P.ProtocolError("the client stopped reading") from None

    async def _control(self, message: dict[str, Any]) -> bool:
        if message["type"] == "bye":
            return True
        digest = message.get("sha256")
        if not P.is_digest(digest):
            raise P.ProtocolError("a portrait message without a sha256 hex digest")
        held = self.renderer.held(digest)
        if held is not None:
            self.source, self.awaited = held, None
            await self._send(P.text("ready", sha256=digest, held=True))
        else:
            self.awaited = digest
            await self._send(P.text("send", sha256=digest))
        return False

    async def _portrait(self, data: bytes) -> None:
        if self.awaited is None:
            raise P.ProtocolError("portrait bytes that were not announced (send a portrait message first)")
        image = P.parse_portrait(data, self.renderer.frame_size)
        if P.sha256_hex(data[4:]) != self.awaited:
            raise P.ProtocolError("portrait bytes that do not match the hash announced")
        digest, self.awaited = self.awaited, None
        self.source = await self.renderer.add_source(digest, image)
        await self._send(P.text("ready", sha256=digest, held=False))

    async def _frame(self, data: bytes) -> None:
        received = time.perf_counter()
        if self.source is None or self.awaited is not None:
            raise P.ProtocolError("keypoints before the portrait was ready")
        frame_id, value, jacobian = P.parse_keypoints(data, self.renderer.num_kp, self.last_id)
        self.last_id = frame_id
        image = await self.renderer.render(value, jacobian, self.source)
        server_ms = (time.perf_counter() - received) * 1e3
        await self._send(P.encode_frame(frame_id, image, self.hello.format, self.hello.quality, server_ms))
        self.frames += 1


async def _receive_text(ws: WebSocket) -> str:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    if message.get("text") is None:
        raise P.ProtocolError("a binary message where the hello belongs")
    return message["text"]


async def _refuse(ws: WebSocket, exc: P.ProtocolError) -> None:
    """Tell the client why, then close with the code; a client already gone is fine."""
    try:
        with anyio.fail_after(2.0):
            await ws.send_text(json.dumps({"type": "error", "reason": exc.reason, "code": exc.code}))
            await ws.close(exc.code, exc.reason.encode()[:120].decode(errors="ignore"))
    except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
        pass


def build(folder: Path, engine: Engine, options: ServerPolicy | None = None,
          console: Console | None = None) -> RemoteServer:
    """The server state for ``engine`` (open on the model in ``folder``), warmed up."""
    from livepuppet.modelfolder.read import read_folder

    options = options or ServerPolicy()
    renderer = Renderer(engine, max_sources=2 * options.max_sessions)
    renderer.warm_up()
    return RemoteServer(renderer, read_folder(folder), options, console)
