"""One convert in progress: what every target builder reads (the checkpoint's graphs, the options, the
partial folder) and what it leaves (variants, with the check each passed)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.progress import Progress

from livepuppet import __version__
from livepuppet.conversion.graphs import Graphs
from livepuppet.modelfolder.schema import ModelFolder, Signature, StoredFile, Variant, file_entry


@dataclass(frozen=True)
class Check:
    """One row of the verification table: a variant's error against what it must reproduce, and its limit."""

    label: str
    error: float
    limit: float
    against: str = "TensorFlow graph"
    unit: str = "max abs"

    @property
    def passed(self) -> bool:
        return self.error <= self.limit  # NaN fails too


@dataclass
class Job:
    graphs: Graphs
    tmp: Path  # the partial folder, renamed into place when every check has passed
    precision: str  # the .tflite files' (convert --precision)
    progress: Progress
    console: Console
    on_built: Callable[[str], None] | None = None  # after each network's first file (tests, progress)
    variants: list[Variant] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    signatures: dict[str, Signature] = field(default_factory=dict)
    scratch: dict[str, Path] = field(default_factory=dict)  # intermediate files a later target reuses

    @property
    def batch(self) -> int | None:
        return self.graphs.batch

    @property
    def scratch_dir(self) -> Path:
        """Intermediate files (removed before the folder is renamed into place)."""
        return self.tmp / ".scratch"

    def add(self, variant: Variant, check: Check | None = None) -> None:
        self.variants.append(variant)
        if check is not None:
            self.checks.append(check)

    def entry(self, path: Path) -> StoredFile:
        return file_entry(self.tmp, path)

    def find(self, network: str, backend: str) -> Variant | None:
        return next((v for v in self.variants if v.network == network and v.backend == backend), None)

    def folder(self) -> ModelFolder:
        """The folder as built so far (targets that run what earlier ones made: quantisation)."""
        cfg = self.graphs.cfg
        return ModelFolder(self.tmp, cfg, self.batch, dict(self.signatures), tuple(self.variants),
                           checkpoint_name=self.graphs.checkpoint.path.name,
                           checkpoint_sha256=self.graphs.checkpoint.sha256, numerics=self.graphs.numerics,
                           livepuppet_version=__version__, content_key=f"partial-{secrets.token_hex(8)}")
