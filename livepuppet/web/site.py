"""``livepuppet web``: the page that runs the four ``.tflite`` models in the browser (LiteRT.js).

The page, its scripts and the LiteRT.js runtime ship inside the package
(``web_static/``; the runtime is copied there from npm by ``web/build.mjs``), so
no npm is needed here. The same files serve two ways: from this local server
(127.0.0.1 only, with the cross-origin isolation headers WebAssembly threads
need), or written out by ``--export`` as a static folder any host can serve.
The model files are the model folder's own ``.tflite`` files, unmodified: the XNNPACK graph's
for WebAssembly, and, where the folder has them, the browser graph's for WebGPU.
"""

from __future__ import annotations

import gzip
import json
import mimetypes
import shutil
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from livepuppet.errors import LivepuppetError, ModelFolderError
from livepuppet.modelfolder.manifest import MODEL_NAMES, Manifest, read_manifest

STATIC = Path(__file__).resolve().parent / "static"
MODEL_PREFIX = "model/"
WEB_MANIFEST = "web.json"
WEBGPU_KIND, WEBGPU_PREFIX = "tflite_webgpu", "webgpu/"  # the manifest's key, and where the page finds them
PAGE_FILES = ("index.html", "app.js", "remote.js", "worker.js", "puppet.js", "framing.js", "style.css")
# What lets the page use SharedArrayBuffer (WebAssembly threads): cross-origin isolation.
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# The same headers for static hosts that read a _headers file (Netlify, Cloudflare Pages).
HEADERS_FILE = "/*\n" + "".join(f"  {k}: {v}\n" for k, v in ISOLATION_HEADERS.items())


def web_manifest(manifest: Manifest) -> dict[str, Any]:
    """What the page needs to know about a model folder: frame size, keypoints, file names."""
    if manifest.batch != 1:  # LiteRT.js 2.5 runs fixed shapes only: no dynamic batch, one frame a call
        batch = "a dynamic batch" if manifest.batch is None else f"a batch of {manifest.batch}"
        raise ModelFolderError(f"{manifest.folder} has {batch}; the web page needs one frame per call: "
                               "convert it with --batch 1")
    h, w = manifest.frame_size
    web = {"frame_size": [h, w], "num_kp": manifest.num_kp, "precision": manifest.precision,
           "batch": manifest.batch, "models": {name: f"{name}.tflite" for name in MODEL_NAMES}}
    if _has_webgpu_graph(manifest):  # the browser graph: every op on WebGPU (older folders: split with WebAssembly)
        web["webgpu_models"] = {name: f"{WEBGPU_PREFIX}{name}.tflite" for name in MODEL_NAMES}
    return web


def _has_webgpu_graph(manifest: Manifest) -> bool:
    return all(manifest.model(name).get(WEBGPU_KIND) for name in MODEL_NAMES)


def model_files(manifest: Manifest) -> dict[str, Path]:
    """URL name under model/ -> file in the model folder, for every file the page may fetch."""
    files = {f"{name}.tflite": manifest.path(name, "tflite") for name in MODEL_NAMES}
    if _has_webgpu_graph(manifest):
        files |= {f"{WEBGPU_PREFIX}{name}.tflite": manifest.path(name, WEBGPU_KIND) for name in MODEL_NAMES}
    for path in files.values():
        if not path.is_file():
            raise ModelFolderError(f"{path} is missing; convert the checkpoint again")
    return files


def runtime_files() -> dict[str, Path]:
    """Served name -> packaged file, for the page and the LiteRT.js runtime (``.wasm`` stored gzipped)."""
    files = {name: STATIC / name for name in PAGE_FILES}
    vendor = STATIC / "vendor"
    for path in sorted(vendor.rglob("*")):
        if path.is_file():
            name = path.relative_to(STATIC).as_posix()
            files[name.removesuffix(".gz") if name.endswith(".wasm.gz") else name] = path
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing or not any(name.endswith(".wasm") for name in files):
        raise LivepuppetError(f"this livepuppet install lacks its web files ({', '.join(missing) or 'wasm'}); "
                              "reinstall it, or build them with `npm ci && node build.mjs` in web/")
    return files


class _Handler(SimpleHTTPRequestHandler):
    """Serves a fixed table of files, nothing else: no directory listings, no path walking."""

    files: dict[str, Path] = {}
    blobs: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._send(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(head=True)

    def _send(self, head: bool) -> None:
        name = urlsplit(self.path).path.lstrip("/") or "index.html"
        if name not in self.files and name not in self.blobs:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        body, encoding = self._body(name)
        self.send_response(HTTPStatus.OK)
        ctype = "application/wasm" if name.endswith(".wasm") else mimetypes.guess_type(name)[0]
        self.send_header("Content-Type", ctype or "application/octet-stream")
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        for key, value in ISOLATION_HEADERS.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _body(self, name: str) -> tuple[bytes, str | None]:
        if name in self.blobs:
            return self.blobs[name], None
        data = self.files[name].read_bytes()
        if self.files[name].suffix != ".gz":
            return data, None
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            return data, "gzip"
        return gzip.decompress(data), None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: users never see request logs
        pass


def make_server(model: Path, port: int = 0) -> ThreadingHTTPServer:
    """A server for the page and ``model`` on 127.0.0.1:``port`` (0: any free port); not started."""
    manifest = read_manifest(model)
    blobs = {MODEL_PREFIX + WEB_MANIFEST: json.dumps(web_manifest(manifest)).encode()}
    files = runtime_files() | {MODEL_PREFIX + k: v for k, v in model_files(manifest).items()}
    handler = type("Handler", (_Handler,), {"files": files, "blobs": blobs})
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), partial(handler))
    except OverflowError:
        raise LivepuppetError(f"port {port} is out of range; choose one from 1 to 65535") from None
    except OSError as exc:
        raise LivepuppetError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); choose another --port") from None


def export(model: Path, out: Path) -> Path:
    """Write the page, the runtime and ``model`` to the static folder ``out``; returns ``out``.

    Built beside ``out`` and renamed into place, so an existing export is only
    ever replaced by a finished one; anything else at ``out`` is refused.
    """
    from livepuppet.conversion.export import _partial_folder, _replace

    manifest = read_manifest(model)
    files = runtime_files() | {MODEL_PREFIX + k: v for k, v in model_files(manifest).items()}
    if out.exists() and not (out / MODEL_PREFIX / WEB_MANIFEST).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise LivepuppetError(f"{out} exists and is not a livepuppet web export; choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_folder(out)
    try:
        for name, path in files.items():
            dest = tmp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".gz":
                with gzip.open(path) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            else:
                shutil.copyfile(path, dest)
        (tmp / MODEL_PREFIX / WEB_MANIFEST).write_text(json.dumps(web_manifest(manifest), indent=1))
        (tmp / "_headers").write_text(HEADERS_FILE)
        _replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LivepuppetError(f"cannot write the web export to {out} ({exc.strerror}); "
                              "free some space or choose another folder") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
