"""Hostile and damaged model folders: every manifest field is checked when it is read, paths stay inside,
and the files a folder holds are checked before any runtime reads them.

Each case mutates a real manifest (from the session's converted SMALL model) or its files and runs the
commands that read it: exit code 2, one line under 300 characters, no traceback, in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from livepuppet import cli
from livepuppet.errors import ModelFolderError
from livepuppet.modelfolder.read import read_folder
from livepuppet.runtime.choose import open_engine
from tests.test_convert import SmallModels

KEY = "legacy-fp32-b1"
_DELETE = object()


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            data = data[int(key)] if isinstance(data, list) else data[key]
        if value is _DELETE:
            del data[last]
        elif isinstance(data, list):
            data[int(last)] = value
        else:
            data[last] = value
    return edit


KP = "config.model_params.kp_detector_params"
MUTATIONS: dict[str, Callable[[dict], None]] = {
    "no-batch": _set("batch", _DELETE),
    "no-config": _set("config", _DELETE),
    "no-variants": _set("variants", _DELETE),
    "no-frame-shape": _set("config.dataset_params.frame_shape", _DELETE),
    "batch-0": _set("batch", 0),
    "batch-minus-1": _set("batch", -1),
    "batch-string": _set("batch", "4"),
    "batch-nan": _set("batch", float("nan")),
    "batch-huge-int": _set("batch", 10**400),
    "config-a-list": _set("config", [1, 2]),
    "variants-a-string": _set("variants", "all"),
    "frame-lies": _set("config.dataset_params.frame_shape", [128, 128, 3]),
    "frame-huge": _set("config.dataset_params.frame_shape", [200000, 200000, 3]),
    "frame-strings": _set("config.dataset_params.frame_shape", ["64", "64", 3]),
    "num-kp-huge": _set("config.model_params.common_params.num_kp", 10**9),
    # block counts are exponents: unchecked, 2**num_blocks channels would be sized before anything ran
    "blocks-exponent": _set(f"{KP}.num_blocks", 10**6),
    "features-huge": _set(f"{KP}.max_features", 10**12),
    "scale-zero": _set(f"{KP}.scale_factor", 0),
    "temperature-inf": _set(f"{KP}.temperature", 1e400),
    "bytes-huge": _set("variants.0.files.0.bytes", 1 << 60),
    "bytes-negative": _set("variants.0.files.0.bytes", -5),
    "network-unknown": _set("variants.0.network", "discriminator"),
    "backend-unknown": _set("variants.0.backend", "torchscript"),
    "sha-not-hex": _set("variants.0.files.0.sha256", "z" * 64),
    "shape-string": _set("signatures.kp_detector.inputs.0.shape", "big"),
    "path-up": _set("variants.0.files.0.path", "../../../../etc/passwd"),
    "path-absolute": _set("variants.0.files.0.path", "/etc/passwd"),
    "path-other-folder": _set("variants.3.files.0.path", "../other-model/generator.tflite"),
}


def _folder(small: SmallModels, tmp: Path, text: str | None = None) -> Path:
    folder = tmp / "model"
    shutil.copytree(small.model(KEY), folder)
    if text is not None:
        (folder / "manifest.json").write_text(text)
    return folder


def _mutated(small: SmallModels, tmp: Path, case: str) -> Path:
    data = json.loads((small.model(KEY) / "manifest.json").read_text())
    MUTATIONS[case](data)
    return _folder(small, tmp, json.dumps(data))


def _one_line_exit_2(argv: list[str], capsys) -> str:
    capsys.readouterr()  # what making the session's models printed
    assert cli.main(argv) == 2
    err = capsys.readouterr().err  # progress lines may come first; the error is one line, last
    errors = [line for line in err.splitlines() if line.startswith("livepuppet: error:")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]) and len(errors[0]) < 320, err
    assert "Traceback" not in err
    return errors[0]


def _refused(folder: Path, *words: str) -> str:
    start = time.perf_counter()
    with pytest.raises(ModelFolderError) as info:
        read_folder(folder)
    message = str(info.value)
    assert time.perf_counter() - start < 5  # bounded: nothing is sized from an unchecked number
    assert "\n" not in message and len(message) < 300 and all(w in message for w in words), message
    return message


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_malformed_manifest_is_one_line(small: SmallModels, tmp_path: Path, case: str) -> None:
    message = _refused(_mutated(small, tmp_path, case), "manifest.json" if not case.startswith("path-other")
                       else "outside the model folder")
    print(f"\n{case}: {message}")
    if case in ("path-up", "path-absolute"):
        assert "outside the model folder" in message


@pytest.mark.parametrize("case", ["batch-string", "frame-lies", "path-up", "blocks-exponent"])
def test_commands_on_a_malformed_folder_exit_2(small: SmallModels, tmp_path: Path, case: str, capsys) -> None:
    folder = _mutated(small, tmp_path, case)
    _one_line_exit_2(["bench", "--model", str(folder), "--repeats", "1"], capsys)
    source = tmp_path / "face.png"
    source.write_bytes(b"")  # never read: the model folder is refused first
    err = _one_line_exit_2(["animate", "--model", str(folder), "--source", str(source),
                            "--driving", str(source), "--output", str(tmp_path / "out.mp4")], capsys)
    assert not (tmp_path / "out.mp4").exists(), err


@pytest.mark.parametrize("text", ["[" * 100_000, '{"format": 2, "pad": "' + "x" * (2 << 20) + '"}', "null",
                                  '{"format": 1e400}', '{"format": "2"}', '{"format": NaN}', "\xff\xfe",
                                  '{"format": 2, "config": ' + "[" * 30 + "]" * 30 + "}"],
                         ids=["deep", "huge", "null", "format-inf", "format-string", "nan", "not-utf8", "nested"])
def test_unparseable_manifests(small: SmallModels, tmp_path: Path, text: str) -> None:
    _refused(_folder(small, tmp_path, text))


# --------------------------------------------------------------------------- the files a folder holds


def _swap_in(folder: Path, name: str, make: Callable[[Path], None]) -> None:
    target = folder / name
    target.unlink()
    make(target)


FILES: dict[str, tuple[Callable[[Path], None], str]] = {
    "fifo": (lambda p: os.mkfifo(p), "not a regular file"),
    "dev-zero": (lambda p: p.symlink_to("/dev/zero"), "outside the model folder"),
    "link-out": (lambda p: p.symlink_to("/etc/hostname"), "outside the model folder"),
    "sparse": (lambda p: os.truncate(p, 50 << 30) if p.touch() is None else None, "bytes"),
    "truncated": (lambda p: p.write_bytes(b"TFL3"), "truncated or replaced"),
    "missing": (lambda p: None, "is missing"),
}


@pytest.mark.parametrize("case", list(FILES))
def test_hostile_files_are_refused_before_they_are_read(small: SmallModels, tmp_path: Path, case: str) -> None:
    make, word = FILES[case]
    folder = _folder(small, tmp_path)
    _swap_in(folder, "generator.tflite", make)
    for engine in ("tflite", "openvino", "auto"):
        start = time.perf_counter()
        with pytest.raises(ModelFolderError) as info:
            open_engine(folder, engine)
        assert time.perf_counter() - start < 5 and word in str(info.value) and "\n" not in str(info.value)
    print(f"\n{case}: {info.value}")


def test_another_networks_file_is_one_line(small: SmallModels, tmp_path: Path) -> None:
    """Valid model files in each other's place (sizes and hashes made to match): refused as the wrong network."""
    folder = _folder(small, tmp_path)
    data = json.loads((folder / "manifest.json").read_text())
    for variant in data["variants"]:
        for stored in variant["files"]:
            if stored["path"] in ("kp_detector.tflite", "source_encoder.tflite"):
                stored["path"] = {"kp_detector.tflite": "source_encoder.tflite",
                                  "source_encoder.tflite": "kp_detector.tflite"}[stored["path"]]
                stored["bytes"] = (folder / stored["path"]).stat().st_size
    (folder / "manifest.json").write_text(json.dumps(data))
    for engine in ("tflite", "openvino"):
        with pytest.raises(ModelFolderError, match="is not this folder's") as info:
            open_engine(folder, engine)
        print(f"\n{engine}: {info.value}")


def test_truncated_savedmodel_variables(small: SmallModels, tmp_path: Path) -> None:
    folder = _folder(small, tmp_path)
    data = json.loads((folder / "manifest.json").read_text())
    for path in (folder / "savedmodel" / "generator" / "variables").glob("variables.data-*"):
        path.write_bytes(path.read_bytes()[:100])
        for variant in data["variants"]:  # the manifest updated to match: the file itself is refused
            for stored in variant["files"]:
                if stored["path"] == path.relative_to(folder).as_posix():
                    stored["bytes"] = 100
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelFolderError) as info:
        open_engine(folder, "savedmodel")
    assert "generator" in str(info.value) and "\n" not in str(info.value)


def test_a_manifest_lying_consistently_is_caught_by_the_model_file(small: SmallModels, tmp_path: Path) -> None:
    data = json.loads((small.model(KEY) / "manifest.json").read_text())
    data["config"]["dataset_params"]["frame_shape"] = [128, 128, 3]
    data["signatures"]["kp_detector"]["inputs"][0]["shape"] = [1, 128, 128, 3]
    folder = _folder(small, tmp_path, json.dumps(data))
    assert read_folder(folder).frame_size == (128, 128)  # the manifest alone looks consistent
    with pytest.raises(ModelFolderError) as info:
        open_engine(folder, "tflite")
    assert "image[1, 64, 64, 3]" in str(info.value) and "\n" not in str(info.value)


def test_doctor_with_a_hostile_folder_under_models(small: SmallModels, tmp_path: Path, monkeypatch, capsys) -> None:
    """doctor lists every folder under models/: a crafted one is a finding, in bounded time, not a hang."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    data = json.loads((small.model(KEY) / "manifest.json").read_text())
    MUTATIONS["blocks-exponent"](data)
    bad = home / "models" / "crafted"
    shutil.copytree(small.model(KEY), bad)
    (bad / "manifest.json").write_text(json.dumps(data))
    (home / "models" / "deep").mkdir()
    (home / "models" / "deep" / "manifest.json").write_text("[" * 100_000)
    monkeypatch.setenv("LIVEPUPPET_HOME", str(home))
    start = time.perf_counter()
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert time.perf_counter() - start < 60
    assert "crafted" in out and "deep" in out and out.count("unusable") >= 2
