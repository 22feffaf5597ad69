"""What each subcommand is asked to do, as typed, frozen values: the command line parsed once, in ``cli``.

Commands read these instead of ``argparse.Namespace``: every field has a type
and a default, so a command (or a test, or another program) can be driven
without a parser. Field names are the parser's destinations; ``from_namespace``
takes exactly the fields a command has, so an option the parser adds without
a field here fails loudly (tests/test_cli.py), not silently.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

O = TypeVar("O", bound="Options")


@dataclass(frozen=True)
class Options:
    @classmethod
    def from_namespace(cls: type[O], args: argparse.Namespace) -> O:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()}
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@dataclass(frozen=True)
class EngineOptions(Options):
    """Which engine runs a model folder (runtime/plan.py decides the rest)."""

    model: Path | None = None
    engine: str = "auto"
    exact: bool = False
    fast: bool = False
    device: str = "cpu"
    threads: int | None = None


@dataclass(frozen=True)
class RemoteOptions(EngineOptions):
    """Where the generator runs: here, or on a `livepuppet serve` machine."""

    remote: str | None = None
    token: str | None = None
    remote_format: str = "jpeg"
    remote_quality: int = 90


@dataclass(frozen=True)
class PictureOptions(RemoteOptions):
    """How the driving motion reaches the portrait."""

    relative: bool = True
    adapt_scale: bool = True
    smoothing: float = 0.0
    paste_back: bool | None = None


@dataclass(frozen=True)
class ConvertOptions(Options):
    checkpoint: Path = Path()
    out: Path | None = None
    config: str | None = None
    precision: str = "fp32"
    batch: int | None = 1
    size: tuple[int, int] | None = None
    targets: tuple[str, ...] = ("tflite", "openvino")
    fast: bool = False
    web: Path | None = None
    numerics: str | None = None


@dataclass(frozen=True)
class RunOptions(PictureOptions):
    source: tuple[Path, ...] = ()
    camera: str = "0"
    every_frame: bool = False
    camera_size: tuple[int, int] | None = None
    no_preview: bool = False
    vcam: bool = False
    vcam_size: tuple[int, int] | None = None
    vcam_fps: int = 30
    record: Path | None = None
    frames: int | None = None
    batch: int = 1
    no_face_tracking: bool = False
    yes: bool = False


@dataclass(frozen=True)
class AnimateOptions(PictureOptions):
    source: Path = Path()
    driving: Path = Path()
    output: str = ""
    batch: int = 4
    frames: int | None = None
    best_frame: bool = False
    side_by_side: bool = False


@dataclass(frozen=True)
class BenchOptions(EngineOptions):
    batch: int = 1
    repeats: int = 5
    json: Path | None = None
    random_config: Any = None  # a ModelConfig for the random-weights model when there is none (tests: SMALL)


@dataclass(frozen=True)
class DownloadOptions(Options):
    name: str | None = None


@dataclass(frozen=True)
class DoctorOptions(Options):
    pass


@dataclass(frozen=True)
class WebOptions(Options):
    model: Path | None = None
    port: int = 8765
    export: Path | None = None


@dataclass(frozen=True)
class ServeOptions(EngineOptions):
    host: str = "127.0.0.1"
    port: int = 8766
    token: str | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    max_sessions: int = 4
    idle_timeout: int = 30
    allow_origin: tuple[str, ...] | None = None
    ray: bool = False
    ray_address: str | None = None
