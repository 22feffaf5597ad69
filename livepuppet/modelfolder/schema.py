"""The model folder's schema: what ``convert`` writes once, at the end, and every engine reads.

A folder holds four *networks* (the keypoint detector, the source encoder,
keypoint processing, the generator), each with one input/output *signature*,
and any number of *variants*: one network built for one back end, from one
graph (the plain FOMM graph or a back end's rewrite of it), at one precision,
stored in files listed with their sizes and hashes, and verified at convert
against the TensorFlow graph (the error is recorded). Nothing here depends on
the machine that converted the folder, and nothing is written into it later:
machine-specific caches live in the user's cache folder (:mod:`livepuppet.paths`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from livepuppet.fomm import numerics
from livepuppet.fomm.config import ModelConfig

FORMAT = 2  # bump when a folder made by an older livepuppet can no longer be read (or migrated: legacy.py)
MANIFEST = "manifest.json"
NETWORKS = ("kp_detector", "source_encoder", "kp_processing", "generator")
BACKENDS = ("tflite", "openvino", "savedmodel", "onnx", "litertjs")
GRAPHS = ("plain", "xnnpack", "browser", "int8", "onnx")  # livepuppet.fomm.modules.rewrites.GRAPHS
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
NUMERICS = tuple(numerics.NUMERICS)  # how grid_sample aligns corners (livepuppet.fomm.numerics)


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]  # -1 where the size is dynamic (the batch)
    dtype: str = "float32"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    def input(self, name: str) -> Tensor | None:
        return next((t for t in self.inputs if t.name == name), None)


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the folder, '/'-separated
    bytes: int
    sha256: str  # '' where not known (a folder migrated from format 1)


@dataclass(frozen=True)
class Verified:
    """How a variant was checked at convert: its largest difference from ``against`` on sample inputs,
    computing at ``precision``; levels (of 8 bits, on the bundled face) where the check was a whole frame."""

    against: str = "tensorflow"
    precision: str = "fp32"
    max_abs: float | None = None
    mean_levels: float | None = None
    max_levels: float | None = None


@dataclass(frozen=True)
class Variant:
    network: str
    backend: str
    graph: str
    precision: str  # what the stored weights are, and the least precision they are meant to compute at
    files: tuple[StoredFile, ...]  # the first is what a runtime opens (.tflite, .xml, saved_model.pb, .onnx)
    verified: Verified = Verified()
    tensors: Mapping[str, str] = field(default_factory=dict)  # signature name -> the file's own tensor name
    kept_precise: tuple[str, ...] = ()  # reduced-precision variants: layers kept at the float precision

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.network, self.backend, self.graph, self.precision)

    @property
    def label(self) -> str:
        return f"{self.network} ({self.backend}, {self.graph} graph, {self.precision})"

    @property
    def short(self) -> str:
        """``generator openvino/plain/bf16``: a table's column."""
        return f"{self.network} {self.backend}/{self.graph}/{self.precision}"


@dataclass(frozen=True)
class ModelFolder:
    """A converted model, as read from (or about to be written to) ``path``."""

    path: Path
    config: ModelConfig
    batch: int | None  # driving frames per call; None: any number (dynamic)
    signatures: Mapping[str, Signature]
    variants: tuple[Variant, ...]
    checkpoint_name: str = ""
    checkpoint_sha256: str = ""
    numerics: str = numerics.LEGACY
    livepuppet_version: str = ""
    tensorflow_version: str = ""
    created: str = ""
    content_key: str = ""  # sha256 of the manifest's bytes: what caches about this folder are keyed by
    migrated_from: int | None = None  # the format it was read from, when older than FORMAT

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.config.frame_shape

    @property
    def num_kp(self) -> int:
        return self.config.num_kp

    @property
    def random_weights(self) -> bool:
        return self.checkpoint_sha256 == "random"

    def find(self, network: str, backend: str, graph: str | None = None, precision: str | None = None
             ) -> Variant | None:
        """The variant of ``network`` for ``backend`` (of that graph and precision, when given)."""
        return next((v for v in self.variants if v.network == network and v.backend == backend
                     and graph in (None, v.graph) and precision in (None, v.precision)), None)

    def backends(self) -> set[str]:
        """The back ends every network has a variant for."""
        return {b for b in BACKENDS if all(self.find(n, b) for n in NETWORKS)}

    def file(self, variant: Variant, index: int = 0) -> Path:
        return self.path / variant.files[index].path

    def total_bytes(self, backend: str | None = None) -> int:
        """Bytes of the files the folder lists (of one back end's variants), each file counted once."""
        files = {f.path: f.bytes for v in self.variants if backend in (None, v.backend) for f in v.files}
        return sum(files.values())

    def with_variants(self, variants: Iterable[Variant]) -> "ModelFolder":
        return replace(self, variants=tuple(variants))


def to_json(folder: ModelFolder) -> str:
    """The manifest's text (what :func:`livepuppet.modelfolder.read.read_folder` reads back)."""
    doc: dict[str, Any] = {
        "format": FORMAT, "livepuppet_version": folder.livepuppet_version, "created": folder.created,
        "tensorflow_version": folder.tensorflow_version,
        "checkpoint": {"name": folder.checkpoint_name, "sha256": folder.checkpoint_sha256},
        "config": folder.config.to_dict(), "numerics": folder.numerics, "batch": folder.batch,
        "signatures": {name: asdict(sig) for name, sig in folder.signatures.items()},
        "variants": [_variant_doc(v) for v in folder.variants],
    }
    return json.dumps(doc, indent=1) + "\n"


def _variant_doc(variant: Variant) -> dict[str, Any]:
    doc = asdict(variant)
    doc["verified"] = {k: v for k, v in doc["verified"].items() if v is not None}
    doc["tensors"] = dict(variant.tensors)
    for key in ("tensors", "kept_precise"):
        if not doc[key]:
            del doc[key]
    return doc


def file_entry(folder: Path, path: Path) -> StoredFile:
    """A file written into ``folder``, with its size and hash (read in 1 MB pieces)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return StoredFile(path.relative_to(folder).as_posix(), path.stat().st_size, digest.hexdigest())
