"""Reading a model folder: bounded, validated, every problem one line that says to convert again.

The manifest is read at most :data:`MAX_MANIFEST_BYTES`, its nesting checked
before it is parsed, and each field range-checked (:mod:`.checked`) before
anything is computed from it; the architecture is range-checked by
:meth:`~livepuppet.fomm.config.ModelConfig.check_ranges` before its sizes are
derived. Every file a variant lists must lie inside the folder and be a
regular file of the size the manifest declares, so a FIFO, a link to a device
or out of the folder, or a truncated or swapped file is refused before any
runtime reads it. A format-1 folder (livepuppet 0.1) is migrated in memory.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any, Mapping

from livepuppet.errors import ConfigError, ModelFolderError
from livepuppet.fomm.config import ModelConfig, from_dict
from livepuppet.modelfolder import checked as c
from livepuppet.modelfolder.schema import (BACKENDS, FORMAT, GRAPHS, MANIFEST, NETWORKS, NUMERICS, PRECISIONS,
                                           ModelFolder, Signature, StoredFile, Tensor, Variant, Verified)

MAX_MANIFEST_BYTES = 1 << 20  # a real one is about 20 KB
MAX_FILE_BYTES = 8 << 30  # the largest model file livepuppet would open (vox-256's largest: 273 MB)
MAX_BATCH = 1024
MAX_VARIANTS = 64


def read_folder(folder: str | Path, *, check_files: bool = True) -> ModelFolder:
    """The model folder at ``folder``, checked; every problem is a one-line :class:`ModelFolderError`."""
    folder = Path(folder)
    hint = f"convert a checkpoint into it with `livepuppet convert CHECKPOINT --out {folder}`"
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} not found; {hint}")
    raw = _manifest_bytes(folder, hint)
    try:
        doc = c.mapping(c.parse(raw), "the manifest")
        fmt = c.field(doc, "format", "")
        if fmt == 1 and type(fmt) is int:
            from livepuppet.modelfolder.legacy import migrate

            doc = migrate(doc, folder)
        elif fmt != FORMAT or type(fmt) is not int:
            version = str(doc.get("livepuppet_version", "?"))[:20]
            raise ModelFolderError(f"{folder} was made by livepuppet {version} (model format {str(fmt)[:20]}); "
                                   f"this livepuppet reads format {FORMAT}: convert the checkpoint again")
        model = _folder(doc, folder, hashlib.sha256(raw).hexdigest(), None if fmt == FORMAT else fmt)
    except (c.Invalid, ConfigError) as exc:
        raise ModelFolderError(f"{folder / MANIFEST} is damaged ({str(exc)[:160]}); convert the checkpoint "
                               "into it again") from None
    if check_files:
        for variant in model.variants:
            check_files_of(model, variant)
    return model


def _manifest_bytes(folder: Path, hint: str) -> bytes:
    path = folder / MANIFEST
    try:
        info = os.stat(path)
    except OSError:
        raise ModelFolderError(f"{folder} is not a livepuppet model (no {MANIFEST}); {hint}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ModelFolderError(f"{path} is not a regular file; {hint}")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ModelFolderError(f"cannot read {path} ({exc.strerror}); {hint}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ModelFolderError(f"{path} is larger than any real manifest ({MAX_MANIFEST_BYTES >> 10} KB); {hint}")
    return raw


def _folder(doc: Mapping[str, Any], folder: Path, key: str, migrated: int | None) -> ModelFolder:
    raw_config = c.mapping(c.field(doc, "config", ""), "config")
    _numbers_only(raw_config, "config")
    config = from_dict(raw_config, "its config")
    config.validate_frame_shape()  # ranges first, then the sizes the hourglasses need
    batch = c.field(doc, "batch", "")
    batch = None if batch is None else c.integer(batch, "batch", 1, MAX_BATCH)
    ckpt = c.optional(doc, "checkpoint", "", lambda v, w: c.mapping(v, w), {})
    signatures = {name: _signature(c.field(c.mapping(c.field(doc, "signatures", ""), "signatures"), name,
                                           "signatures"), f"signatures.{name}") for name in NETWORKS}
    _check_inputs(signatures["kp_detector"], config, batch)
    variants = c.items(c.field(doc, "variants", ""), "variants", MAX_VARIANTS, _variant)
    meta = {k: c.optional(doc, k, "", lambda v, w: c.text(v, w, 64), "")
            for k in ("livepuppet_version", "tensorflow_version", "created")}
    return ModelFolder(
        path=folder, config=config, batch=batch, signatures=signatures, variants=variants,
        checkpoint_name=c.optional(ckpt, "name", "checkpoint", c.text, ""),
        checkpoint_sha256=c.optional(ckpt, "sha256", "checkpoint", lambda v, w: c.text(v, w, 64), ""),
        numerics=c.optional(doc, "numerics", "", lambda v, w: c.text(v, w, 16, NUMERICS), "original"),
        content_key=key, migrated_from=migrated, **meta)


def _numbers_only(value: Any, where: str, depth: int = 0) -> None:
    """A config as livepuppet writes it: nested objects of numbers and booleans, nothing else (no strings
    for from_dict to coerce, no lists but the frame shape)."""
    if isinstance(value, dict) and depth < 4:
        for k, v in c.mapping(value, where, 32).items():
            _numbers_only(v, f"{where}.{str(k)[:20]}", depth + 1)
    elif isinstance(value, list) and where.endswith("frame_shape"):
        c.items(value, where, 3, lambda v, w: c.integer(v, w, 1, 1 << 16))
    elif type(value) not in (int, float, bool):
        raise c.Invalid(where, "is not a number")


def _tensor(value: Any, where: str) -> Tensor:
    doc = c.mapping(value, where, 8)
    shape = c.items(c.field(doc, "shape", where), f"{where}.shape", 6, lambda v, w: c.integer(v, w, -1, 1 << 16))
    return Tensor(c.text(c.field(doc, "name", where), f"{where}.name", 64), shape,
                  c.optional(doc, "dtype", where, lambda v, w: c.text(v, w, 16, ("float32",)), "float32"))


def _signature(value: Any, where: str) -> Signature:
    doc = c.mapping(value, where, 4)
    return Signature(c.items(c.field(doc, "inputs", where), f"{where}.inputs", 16, _tensor),
                     c.items(c.field(doc, "outputs", where), f"{where}.outputs", 16, _tensor))


def _check_inputs(signature: Signature, config: ModelConfig, batch: int | None) -> None:
    """The keypoint detector's declared input must be frames of the config's size and the folder's batch."""
    image = signature.input("image")
    h, w = config.frame_shape
    want = (-1 if batch is None else batch, h, w, config.num_channels)
    if image is None or image.shape != want:
        raise c.Invalid("signatures.kp_detector", f"does not take frames of shape {list(want)}")


def _stored(value: Any, where: str) -> StoredFile:
    doc = c.mapping(value, where, 4)
    path = c.text(c.field(doc, "path", where), f"{where}.path")
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise c.Invalid(f"{where}.path", "leads outside the model folder")
    sha = c.optional(doc, "sha256", where, lambda v, w: c.text(v, w, 64), "")
    if sha and (len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha)):
        raise c.Invalid(f"{where}.sha256", "is not a SHA-256")
    return StoredFile(path, c.integer(c.field(doc, "bytes", where), f"{where}.bytes", 1, MAX_FILE_BYTES), sha)


def _verified(value: Any, where: str) -> Verified:
    doc = c.mapping(value, where, 8)

    def num(v: Any, w: str) -> float:
        return c.number(v, w, 0.0, 1e6)

    return Verified(c.optional(doc, "against", where, lambda v, w: c.text(v, w, 32), "tensorflow"),
                    c.optional(doc, "precision", where, lambda v, w: c.text(v, w, 8, PRECISIONS), "fp32"),
                    *(c.optional(doc, k, where, num, None) for k in ("max_abs", "mean_levels", "max_levels")))


def _variant(value: Any, where: str) -> Variant:
    doc = c.mapping(value, where, 16)
    choice = {"network": NETWORKS, "backend": BACKENDS, "graph": GRAPHS, "precision": PRECISIONS}
    names = {k: c.text(c.field(doc, k, where), f"{where}.{k}", 32, options) for k, options in choice.items()}
    files = c.items(c.field(doc, "files", where), f"{where}.files", 16, _stored)
    if not files:
        raise c.Invalid(f"{where}.files", "is empty")
    tensors = c.optional(doc, "tensors", where, lambda v, w: c.mapping(v, w, 32), {})
    for k, v in tensors.items():
        c.text(k, f"{where}.tensors", 64), c.text(v, f"{where}.tensors.{k[:20]}", 255)
    kept = c.optional(doc, "kept_precise", where,
                      lambda v, w: c.items(v, w, 4096, lambda s, ws: c.text(s, ws, 255)), ())
    return Variant(**names, files=files, verified=c.optional(doc, "verified", where, _verified, Verified()),
                   tensors=dict(tensors), kept_precise=kept)


def check_files_of(folder: ModelFolder, variant: Variant) -> None:
    """Each file of ``variant`` must be a regular file inside the folder, of the size declared."""
    root = folder.path.resolve()
    for stored in variant.files:
        path = folder.path / stored.path
        problem = _file_problem(path, root, stored.bytes)
        if problem:
            raise ModelFolderError(f"{path} {problem} ({variant.label}); convert the checkpoint again")


def _file_problem(path: Path, root: Path, declared: int) -> str | None:
    try:
        real = path.resolve(strict=True)
        info = os.stat(real)
    except FileNotFoundError:
        return "is missing"
    except (OSError, RuntimeError):
        return "cannot be read"
    if not real.is_relative_to(root):
        return "leads outside the model folder"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_size != declared:
        return f"holds {info.st_size} bytes, not the {declared} its manifest lists (truncated or replaced)"
    return None


def verify_hashes(folder: ModelFolder) -> list[str]:
    """The files whose content no longer matches the SHA-256 the manifest lists (``doctor``)."""
    bad = []
    for variant in folder.variants:
        for stored in variant.files:
            if not stored.sha256:
                continue
            digest = hashlib.sha256()
            with open(folder.path / stored.path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            if digest.hexdigest() != stored.sha256:
                bad.append(stored.path)
    return bad
