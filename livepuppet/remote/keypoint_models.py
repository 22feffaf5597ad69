"""A client without the model computes keypoints with the server's own two small models, fetched once.

The server's welcome names a manifest (its SHA-256 and size) that lists only
the keypoint detector's and the keypoint processing's ``.tflite`` files, each
with its size and SHA-256. They are fetched over HTTP(S) from the same host
(with the token), each checked against what was listed, and kept in the user
cache folder under the model's id, so the next run (and a run while the
server is away) finds them there. A file is written to a partial name and
renamed only once verified: a cut download leaves nothing that counts.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from livepuppet.errors import LivepuppetError
from livepuppet.modelfolder.read import read_folder
from livepuppet.modelfolder.schema import MANIFEST, ModelFolder
from livepuppet.paths import cache_dir, partial_name
from livepuppet.remote import protocol as P

MAX_FILE = 1 << 30  # bytes: a keypoint detector is a few MB to tens of MB
FOLDER = "remote-keypoints"


def cached_folder(model_id: str) -> Path:
    safe = "".join(c for c in model_id if c.isalnum() or c in "-_")[:80] or "model"
    return cache_dir() / FOLDER / safe


def fetch_keypoint_models(http_base: str, welcome: dict[str, Any], token: str | None) -> ModelFolder:
    """The keypoint models of the server that sent ``welcome``, from the cache or fetched now."""
    listed = welcome.get("keypoint_models")
    if not isinstance(listed, dict) or not isinstance(listed.get(MANIFEST), dict):
        raise LivepuppetError("the server did not list its keypoint models; update livepuppet there")
    folder = cached_folder(str(welcome["model"]["id"]))
    folder.mkdir(parents=True, exist_ok=True)
    _fetch(http_base, MANIFEST, folder / MANIFEST, listed[MANIFEST], token)
    model = read_folder(folder, check_files=False)
    for variant in model.variants:
        if variant.network not in P.KEYPOINT_MODELS or variant.backend != "tflite":
            raise LivepuppetError(f"the server listed {variant.label} among its keypoint models; update livepuppet")
        for stored in variant.files:
            _fetch(http_base, stored.path, folder / stored.path, {"bytes": stored.bytes, "sha256": stored.sha256},
                   token)
    return read_folder(folder)


def keypoint_engine(folder: ModelFolder, threads: int | None = None):
    """LiteRT on the folder's two keypoint models only (a plan without the source encoder and generator)."""
    from livepuppet.runtime.engines.tflite import TFLiteEngine
    from livepuppet.runtime.plan import Plan, Step

    steps = {}
    for network in P.KEYPOINT_MODELS:
        variant = folder.find(network, "tflite")
        if variant is None:
            raise LivepuppetError(f"{folder.path} has no .tflite {network}; convert it with --targets tflite")
        steps[network] = Step(variant, variant.precision)
    return TFLiteEngine(folder, Plan("tflite", steps), threads)


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
