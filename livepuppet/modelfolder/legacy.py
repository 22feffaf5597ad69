"""Folders written by livepuppet 0.1 (manifest format 1), read as format 2 in memory.

Format 1 kept one entry per network with a path per back end (``tflite``,
``savedmodel``, ``openvino``, ``openvino_bf16``, ``openvino_int8``), the
folder's precision, and each back end's graph under ``graphs``. Each becomes a
:class:`~livepuppet.modelfolder.schema.Variant`; file sizes come from the
files themselves (format 1 recorded none) and hashes are left unknown. The
folder on disk is not changed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Mapping

from livepuppet.modelfolder import checked as c
from livepuppet.modelfolder.schema import NETWORKS

MAX_SAVEDMODEL_FILES = 32
# format-1 key -> (back end, precision; None: the folder's), the graph from format 1's "graphs"
KINDS = {"tflite": ("tflite", None), "savedmodel": ("savedmodel", "fp32"), "openvino": ("openvino", "fp32"),
         "openvino_bf16": ("openvino", "bf16"), "openvino_int8": ("openvino", "int8")}


def migrate(doc: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """A format-2 manifest document for the format-1 ``doc`` of ``folder``."""
    models = c.mapping(c.field(doc, "models", ""), "models", 8)
    graphs = c.optional(doc, "graphs", "", lambda v, w: c.mapping(v, w, 8), {})
    folder_precision = c.text(c.field(doc, "precision", ""), "precision", 8)
    signatures, variants = {}, []
    for name in NETWORKS:
        where = f"models.{name}"
        entry = c.mapping(c.field(models, name, "models"), where, 16)
        signatures[name] = {"inputs": c.field(entry, "inputs", where), "outputs": c.field(entry, "outputs", where)}
        for key, (backend, precision) in KINDS.items():
            if key not in entry:
                continue
            rel = c.text(entry[key], f"{where}.{key}")
            precision = precision or c.text(entry.get("precision", folder_precision), f"{where}.precision", 8)
            graph = "xnnpack" if backend == "tflite" else graphs.get("openvino" if backend == "openvino" else "-",
                                                                       "plain")
            variant = {"network": name, "backend": backend, "graph": graph, "precision": precision,
                       "files": _files(folder, rel, backend, f"{where}.{key}")}
            if key == "openvino_int8":
                variant["verified"] = _fast_error(doc)
            variants.append(variant)
    return {**{k: v for k, v in doc.items() if k not in ("models", "graphs", "fast", "precision")},
            "signatures": signatures, "variants": variants}


def _files(folder: Path, rel: str, backend: str, where: str) -> list[dict[str, Any]]:
    """The variant's files with their sizes; an IR's .bin and a SavedModel's files with it."""
    if backend == "openvino":
        rels = [rel, rel.removesuffix(".xml") + ".bin"]
    elif backend == "savedmodel":
        rels = _savedmodel_files(folder, rel, where)
    else:
        rels = [rel]
    return [{"path": r, "bytes": _size(folder / r, where), "sha256": ""} for r in rels]


def _savedmodel_files(folder: Path, rel: str, where: str) -> list[str]:
    root = folder / rel
    try:
        found = sorted(p.relative_to(folder).as_posix() for p, _ in zip(_walk(root), range(MAX_SAVEDMODEL_FILES + 1)))
    except OSError:
        raise c.Invalid(where, "is missing") from None
    if len(found) > MAX_SAVEDMODEL_FILES or f"{rel}/saved_model.pb" not in found:
        raise c.Invalid(where, "is not a SavedModel folder")
    found.remove(f"{rel}/saved_model.pb")
    return [f"{rel}/saved_model.pb", *found]


def _walk(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _size(path: Path, where: str) -> int:
    try:
        info = os.lstat(path)
    except OSError:
        raise c.Invalid(where, f"names {path.name}, which is missing") from None
    if not stat.S_ISREG(info.st_mode):
        raise c.Invalid(where, f"names {path.name}, which is not a regular file")
    return info.st_size


def _fast_error(doc: Mapping[str, Any]) -> dict[str, Any]:
    fast = c.optional(doc, "fast", "", lambda v, w: c.mapping(v, w, 16), {})
    verified: dict[str, Any] = {"against": "fp32", "precision": "int8"}
    for key, name in (("mean_levels", "mean_levels"), ("max_levels", "max_levels")):
        if key in fast:
            verified[name] = c.number(fast[key], f"fast.{key}", 0.0, 1e6)
    return verified
