"""Hostile and damaged model folders: every manifest field is checked when it is read, paths stay inside.

Each case mutates a real manifest (from the session's converted SMALL model) and runs the commands that
read it, in-process: exit code 2, one line under 300 characters, no traceback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from livepuppet import cli
from livepuppet.runtime.engines import open_engine
from livepuppet.errors import ModelFolderError
from livepuppet.modelfolder.manifest import read_manifest
from tests.test_convert import SmallModels, shared_small_models


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            data = data[key]
        if value is _DELETE:
            del data[last]
        else:
            data[last] = value
    return edit


_DELETE = object()
MUTATIONS: dict[str, Callable[[dict], None]] = {
    "no-batch": _set("batch", _DELETE),
    "no-config": _set("config", _DELETE),
    "no-frame-shape": _set("config.dataset_params.frame_shape", _DELETE),
    "no-tflite": _set("models.generator.tflite", _DELETE),
    "batch-0": _set("batch", 0),
    "batch-minus-1": _set("batch", -1),
    "batch-string": _set("batch", "4"),
    "batch-nan": _set("batch", float("nan")),
    "batch-huge-int": _set("batch", 10**400),
    "config-a-list": _set("config", [1, 2]),
    "models-a-string": _set("models", "all"),
    "frame-lies": _set("config.dataset_params.frame_shape", [128, 128, 3]),
    "frame-huge": _set("config.dataset_params.frame_shape", [200000, 200000, 3]),
    "frame-strings": _set("config.dataset_params.frame_shape", ["64", "64", 3]),
    "num-kp-huge": _set("config.model_params.common_params.num_kp", 10**9),
    "path-up": _set("models.generator.tflite", "../../../../etc/passwd"),
    "path-absolute": _set("models.generator.tflite", "/etc/passwd"),
    "path-other-folder": _set("models.generator.savedmodel", "../other-model/generator"),
}


def _folder(small: SmallModels, tmp: Path, text: str) -> Path:
    folder = tmp / "model"
    shutil.copytree(small.model("legacy-fp32-b1"), folder)
    (folder / "manifest.json").write_text(text)
    return folder


def _mutated(small: SmallModels, tmp: Path, case: str) -> Path:
    data = json.loads((small.model("legacy-fp32-b1") / "manifest.json").read_text())
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


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_malformed_manifest_is_one_line(small: SmallModels, tmp_path: Path, case: str, capsys) -> None:
    folder = _mutated(small, tmp_path, case)
    with pytest.raises(ModelFolderError) as info:
        read_manifest(folder)
    message = str(info.value)
    print(f"\n{case}: {message}")
    assert "\n" not in message and len(message) < 300 and ("manifest.json" in message or "lacks" in message)
    if case.startswith("path-"):
        assert "outside the model folder" in message


@pytest.mark.parametrize("case", ["batch-string", "frame-lies", "path-up", "no-tflite"])
def test_commands_on_a_malformed_folder_exit_2(small: SmallModels, tmp_path: Path, case: str, capsys) -> None:
    folder = _mutated(small, tmp_path, case)
    _one_line_exit_2(["bench", "--model", str(folder), "--repeats", "1"], capsys)
    source = tmp_path / "face.png"
    source.write_bytes(b"")  # never read: the model folder is refused first
    err = _one_line_exit_2(["animate", "--model", str(folder), "--source", str(source),
                            "--driving", str(source), "--output", str(tmp_path / "out.mp4")], capsys)
    assert not (tmp_path / "out.mp4").exists(), err


@pytest.mark.parametrize("text", ["[" * 100_000, '{"format": 1, "pad": "' + "x" * (2 << 20) + '"}', "null",
                                  '{"format": 1e400}', '{"format": "1"}'],
                         ids=["deep", "huge", "null", "format-inf", "format-string"])
def test_unparseable_manifests(small: SmallModels, tmp_path: Path, text: str) -> None:
    with pytest.raises(ModelFolderError) as info:
        read_manifest(_folder(small, tmp_path, text))
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_truncated_savedmodel_variables(small: SmallModels, tmp_path: Path) -> None:
    folder = _folder(small, tmp_path, (small.model("legacy-fp32-b1") / "manifest.json").read_text())
    for data in (folder / "generator" / "variables").glob("variables.data-*"):
        data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ModelFolderError) as info:
        open_engine(folder, "savedmodel")
    assert "generator" in str(info.value) and "\n" not in str(info.value)


def test_a_manifest_lying_consistently_is_caught_by_the_model_file(small: SmallModels, tmp_path: Path) -> None:
    data = json.loads((small.model("legacy-fp32-b1") / "manifest.json").read_text())
    data["config"]["dataset_params"]["frame_shape"] = [128, 128, 3]
    data["models"]["kp_detector"]["inputs"][0]["shape"] = [1, 128, 128, 3]
    folder = _folder(small, tmp_path, json.dumps(data))
    assert read_manifest(folder).frame_size == (128, 128)  # the manifest alone looks consistent
    with pytest.raises(ModelFolderError) as info:
        open_engine(folder, "tflite")
    assert "[1, 64, 64, 3]" in str(info.value) and "\n" not in str(info.value)
