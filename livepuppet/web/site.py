"""``livepuppet web``: the page that runs the four ``.tflite`` models in the browser (LiteRT.js).

The page, its scripts and the LiteRT.js runtime ship inside the package
(``web_static/``; the runtime is copied there from npm by ``web/build.mjs``), so
no npm is needed here. The same files serve two ways: from the local server
(:mod:`livepuppet.web.page_server`: 127.0.0.1 only, with the cross-origin isolation
headers WebAssembly threads need), or written out by ``--export`` as a static
folder any host can serve.
The model files are the model folder's own ``.tflite`` files, unmodified: the XNNPACK graph's
for WebAssembly, and, where the folder has them (``convert --targets ...,web``), the browser graph's
for WebGPU.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path
from typing import Any

from livepuppet import outputs
from livepuppet.errors import LivepuppetError, ModelFolderError
from livepuppet.files import open_bounded
from livepuppet.modelfolder.read import read_folder
from livepuppet.modelfolder.schema import NETWORKS, ModelFolder, Variant

STATIC = Path(__file__).resolve().parent / "static"
MODEL_PREFIX = "model/"
WEB_MANIFEST = "web.json"
KEYS_JSON = "keys.json"  # the page's part of livepuppet.live.keys.KEYS: one key table for the page and the desktop
WEBGPU_PREFIX = "webgpu/"  # where the page finds the browser graph's files
PAGE_FILES = ("index.html", "app.js", "puppet.js", "framing.js", "remote.js", "server_puppet.js", "worker.js",
              "worker_client.js", "style.css")
MAX_MODEL_FILE = 2**31  # a .tflite is a FlatBuffer, which cannot pass 2 GiB
TFLITE_ID = b"TFL3"  # the FlatBuffer file identifier, bytes 4-8 of every .tflite
# What lets the page use SharedArrayBuffer (WebAssembly threads): cross-origin isolation.
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# The same headers for static hosts that read a _headers file (Netlify, Cloudflare Pages).
HEADERS_FILE = "/*\n" + "".join(f"  {k}: {v}\n" for k, v in ISOLATION_HEADERS.items())


def page_variants(folder: ModelFolder) -> dict[str, Variant]:
    """The ``.tflite`` file of each network the page runs on WebAssembly (the XNNPACK graph's)."""
    found = {name: folder.find(name, "tflite") for name in NETWORKS}
    missing = [name for name, variant in found.items() if variant is None]
    if missing:
        raise ModelFolderError(f"{folder.path} has no .tflite files for {', '.join(missing)}; convert it with "
                               "--targets tflite")
    return found  # type: ignore[return-value]


def webgpu_variants(folder: ModelFolder) -> dict[str, Variant]:
    """The browser graph's files (every op on WebGPU), where the folder has all four; else {}."""
    found = {name: folder.find(name, "litertjs", "browser") for name in NETWORKS}
    return found if all(found.values()) else {}  # type: ignore[return-value]


def web_manifest(folder: ModelFolder) -> dict[str, Any]:
    """What the page needs to know about a model folder: frame size, keypoints, file names."""
    if folder.batch != 1:  # LiteRT.js 2.5 runs fixed shapes only: no dynamic batch, one frame a call
        batch = "a dynamic batch" if folder.batch is None else f"a batch of {folder.batch}"
        raise ModelFolderError(f"{folder.path} has {batch}; the web page needs one frame per call: "
                               "convert it with --batch 1")
    from livepuppet.remote.protocol import model_id

    h, w = folder.frame_size
    variants = page_variants(folder)
    return {"frame_size": [h, w], "num_kp": folder.num_kp, "precision": variants["generator"].precision,
            "numerics": folder.numerics, "batch": folder.batch,
            "models": {name: f"{name}.tflite" for name in NETWORKS},
            "model_id": model_id(folder),  # what a server's model must match for ?server= (its keypoints)
            **({"webgpu_models": {name: f"{WEBGPU_PREFIX}{name}.tflite" for name in NETWORKS}}
               if webgpu_variants(folder) else {})}


def keys_json() -> bytes:
    """What the page's keys do: livepuppet.live.keys.page_table(), as the page fetches it."""
    from livepuppet.live.keys import page_table

    return json.dumps(page_table(), indent=1).encode()


def served_variants(folder: ModelFolder) -> dict[str, Variant]:
    """URL name under model/ -> the variant behind it, for every model file the page may fetch."""
    return ({f"{name}.tflite": v for name, v in page_variants(folder).items()}
            | {f"{WEBGPU_PREFIX}{name}.tflite": v for name, v in webgpu_variants(folder).items()})


def model_files(folder: ModelFolder) -> dict[str, Path]:
    """URL name under model/ -> file in the model folder, for every file the page may fetch."""
    files = {name: folder.file(variant) for name, variant in served_variants(folder).items()}
    for path in files.values():
        if not path.is_file():
            problem = "is not a regular file" if os.path.lexists(path) else "is missing"
            raise ModelFolderError(f"{path} {problem}; convert the checkpoint again")
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


def export(model: Path, out: Path) -> Path:
    """Write the page, the runtime and ``model`` to the static folder ``out``; returns ``out``.

    Built beside ``out`` and renamed into place, so an existing export is only
    ever replaced by a finished one; anything else at ``out`` is refused, and so
    is an export holding a file it did not write (a portrait put there for OBS).
    Only regular ``.tflite`` files of a sane size are copied from the model
    folder. Imports no TensorFlow.
    """
    outputs.check(out, [model])
    manifest = read_folder(model)
    files = runtime_files() | {MODEL_PREFIX + k: v for k, v in model_files(manifest).items()}
    outputs.check(out, files.values())  # a model file may be a link to somewhere else
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = outputs.partial_folder(out)
    try:
        for name, path in files.items():
            dest = tmp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if name.startswith(MODEL_PREFIX):
                _copy_model_file(path, dest)
            elif path.suffix == ".gz":
                with gzip.open(path) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            else:
                shutil.copyfile(path, dest)
        (tmp / MODEL_PREFIX / WEB_MANIFEST).write_text(json.dumps(web_manifest(manifest), indent=1))
        (tmp / KEYS_JSON).write_bytes(keys_json())
        (tmp / "_headers").write_text(HEADERS_FILE)
        outputs.replace_folder(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LivepuppetError(f"cannot write the web export to {out} ({exc.strerror}); "
                              "free some space or choose another folder") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _check_replaceable(out: Path) -> None:
    """An existing ``out`` may be replaced only if it is an export holding nothing but what an export writes."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or (any(out.iterdir()) and not (out / MODEL_PREFIX / WEB_MANIFEST).is_file()):
        raise LivepuppetError(f"{out} exists and is not a livepuppet web export; choose another folder")
    ours = {*PAGE_FILES, "vendor", MODEL_PREFIX.rstrip("/"), "_headers", KEYS_JSON}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours)
    if foreign:
        raise LivepuppetError(f"{out} holds {foreign[0]}, which an export did not write, and exporting again would "
                              "delete it; move it out of the folder first (and back after), or export elsewhere")


def _copy_model_file(path: Path, dest: Path) -> None:
    """Copy a model file that is a regular file of at most MAX_MODEL_FILE bytes and starts as a .tflite
    does, reading no more than it declares: a link to /dev/zero, a FIFO or a 50 GB sparse file is refused."""
    try:
        src = open_bounded(path, MAX_MODEL_FILE, "model file", ModelFolderError)
    except OSError as exc:
        raise ModelFolderError(f"cannot read {path} ({exc.strerror or exc}); convert the checkpoint again") from None
    with src, open(dest, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        head = src.read(8)
        if head[4:8] != TFLITE_ID:
            raise ModelFolderError(f"{path} is not a .tflite model; convert the checkpoint again")
        dst.write(head)
        left = size - len(head)
        while left > 0 and (chunk := src.read(min(left, 1 << 20))):
            dst.write(chunk)
            left -= len(chunk)


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
