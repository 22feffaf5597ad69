"""A client without the model computes keypoints with the server's own two small models, fetched once.

The server's welcome lists its manifest and its keypoint detector and keypoint
processing ``.tflite`` files with their SHA-256 and size; they are fetched over
HTTP(S) from the same host (with the token), each checked against that list,
and kept in the user cache folder under the model's id, so the next run (and
a run while the server is away) finds them there. A file is written to a
partial name and renamed only once verified: a cut download leaves nothing
that counts.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from livepuppet.errors import LivepuppetError
from livepuppet.modelfolder.manifest import MANIFEST, read_manifest
from livepuppet.paths import cache_dir, partial_name
from livepuppet.remote import protocol as P

MAX_FILE = 1 << 30  # bytes: a keypoint detector is a few MB to tens of MB
FOLDER = "remote-keypoints"


def cached_folder(model_id: str) -> Path:
    safe = "".join(c for c in model_id if c.isalnum() or c in "-_")[:80] or "model"
    return cache_dir() / FOLDER / safe


def has_keypoint_models(folder: Path, listed: dict[str, Any]) -> bool:
    """Whether ``folder`` holds every listed file with its listed hash."""
    try:
        manifest = read_manifest(folder)
        paths = _paths(manifest.folder, manifest.data)
    except LivepuppetError:
        return False
    return all(name in paths and _matches(paths[name], listed[name]) for name in listed)


def fetch_keypoint_models(http_base: str, welcome: dict[str, Any], token: str | None) -> Path:
    """The keypoint models of the server that sent ``welcome``, from the cache or fetched now; their folder."""
    listed = welcome.get("keypoint_models")
    if not isinstance(listed, dict) or MANIFEST not in listed:
        raise LivepuppetError("the server did not list its keypoint models; update livepuppet there")
    folder = cached_folder(str(welcome["model"]["id"]))
    if has_keypoint_models(folder, listed):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    _fetch(http_base, MANIFEST, folder / MANIFEST, listed[MANIFEST], token)
    manifest = read_manifest(folder)
    for name, path in _paths(manifest.folder, manifest.data).items():
        if name != MANIFEST:
            _fetch(http_base, name, path, listed.get(name, {}), token)
    return folder


def _paths(folder: Path, manifest: dict[str, Any]) -> dict[str, Path]:
    """Served name -> where the manifest says the file lies (inside ``folder``: read_manifest checked)."""
    paths = {MANIFEST: folder / MANIFEST}
    for model in P.KEYPOINT_MODELS:
        paths[f"{model}.tflite"] = folder / manifest["models"][model]["tflite"]
    return paths


def _matches(path: Path, facts: dict[str, Any]) -> bool:
    try:
        return path.stat().st_size == facts.get("bytes") and P.file_facts(path) == facts
    except OSError:
        return False


def _fetch(http_base: str, name: str, dest: Path, facts: dict[str, Any], token: str | None) -> None:
    """GET one file to a partial name, check its size and hash against ``facts``, rename it into place."""
    size, digest = facts.get("bytes"), facts.get("sha256")
    if type(size) is not int or not 0 <= size <= MAX_FILE or not P.is_digest(digest):
        raise LivepuppetError(f"the server listed {name} without a valid size and hash; update livepuppet there")
    if _matches(dest, facts):
        return
    request = urllib.request.Request(f"{http_base}{P.MODELS_PATH}{name}",
                                     headers={"Authorization": f"Bearer {token or ''}"})
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(dest)
    try:
        h, got = hashlib.sha256(), 0
        with urllib.request.urlopen(request, timeout=30) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                got += len(chunk)
                if got > size:
                    break
                h.update(chunk)
                out.write(chunk)
        if got != size or h.hexdigest() != digest:
            raise LivepuppetError(f"{name} from the server does not match the size and hash it listed "
                                  f"({got} of {size} bytes); try again")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as exc:
        raise LivepuppetError(f"cannot fetch the keypoint model {name} from {http_base} "
                              f"({getattr(exc, 'reason', None) or exc}); check the server and --token") from None
    finally:
        tmp.unlink(missing_ok=True)
