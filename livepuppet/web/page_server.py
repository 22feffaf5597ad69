"""``livepuppet web``'s local server: the page, the LiteRT.js runtime and one model's ``.tflite`` files, nothing else.

A fixed table of names (no directory listing, no path walking), each served
through :mod:`livepuppet.web.server`'s checked, streamed, time-bounded file
responses, on 127.0.0.1 with the Host allow list and the cross-origin isolation
headers WebAssembly threads need.
"""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path

from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from livepuppet.modelfolder.read import read_folder
from livepuppet.web.server import AsgiServer, ServedFile, file_response
from livepuppet.web.site import ISOLATION_HEADERS, KEYS_JSON, MODEL_PREFIX, STATIC, WEB_MANIFEST, keys_json, \
    model_files, runtime_files, served_variants, web_manifest

HEADERS = {"Cache-Control": "no-cache", **ISOLATION_HEADERS}


def _media_type(name: str) -> str:
    if name.endswith(".wasm"):
        return "application/wasm"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def file_table(model: Path) -> tuple[dict[str, ServedFile], dict[str, bytes]]:
    """URL name -> served file, and URL name -> bytes made here (the page's model description)."""
    folder = read_folder(model)
    blobs = {MODEL_PREFIX + WEB_MANIFEST: json.dumps(web_manifest(folder)).encode(), KEYS_JSON: keys_json()}
    table = {name: ServedFile(STATIC, path.relative_to(STATIC).as_posix(), _media_type(name), path.suffix == ".gz")
             for name, path in runtime_files().items()}
    model_files(folder)  # every model file present now, or a one-line error
    for name, variant in served_variants(folder).items():
        stored = variant.files[0]
        table[f"{MODEL_PREFIX}{name}"] = ServedFile(folder.path, stored.path, size=stored.bytes)
    return table, blobs


class _Gone:
    """Says once per file, in one line, that a file can no longer be served (it vanished, or became a link out)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.said: set[str] = set()

    def __call__(self, entry: ServedFile, why: str) -> None:
        if entry.relative not in self.said:
            self.said.add(entry.relative)
            self.console.print(f"livepuppet web: {entry.path} can no longer be served ({why}); "
                               "convert the model again and restart `livepuppet web`", markup=False, highlight=False,
                               soft_wrap=True)


def page_app(model: Path, console: Console | None = None) -> Starlette:
    table, blobs = file_table(model)
    gone = _Gone(console or Console(stderr=True))

    async def serve(request: Request) -> Response:
        name = request.path_params["name"] or "index.html"
        if name in blobs:
            return Response(blobs[name], headers=HEADERS, media_type=_media_type(name))
        if name not in table:
            return Response("not found", status_code=404, headers=HEADERS, media_type="text/plain")
        return file_response(table[name], "gzip" in request.headers.get("accept-encoding", ""),
                             request.method == "HEAD", HEADERS, gone)

    return Starlette(routes=[Route("/{name:path}", serve, methods=["GET", "HEAD"])])


def make_server(model: Path, port: int = 0, console: Console | None = None) -> AsgiServer:
    """A server for the page and ``model`` on 127.0.0.1:``port`` (0: any free port); bound, not started."""
    return AsgiServer(page_app(model, console), "127.0.0.1", port)
