"""Issue 18, classes 5 and 8: hostile YAML, arguments and model files, each one line and exit 2, quickly.

YAML in ``--config`` and in the model registry that is nested 10000 deep, an alias bomb (aliases as
PyYAML writes them still read), mistyped or out of any FOMM's range, not a regular file, or too big; ``--threads 20000`` (LiteRT's thread pool failed to
start, then crashed) and ``--batch 100000``; ``web --export`` of a model folder whose file is a link to
/dev/zero, a FIFO or a 3 GB sparse file, which must be refused without TensorFlow and without reading it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from livepuppet import cli
from livepuppet.errors import ConfigError, DownloadError
from livepuppet.fomm import config as cfgmod
from livepuppet.hub import registry

_ALIASES = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*{prev}'] * 9)}]\n" for i, prev in enumerate(["a"] + [f"l{i}" for i in range(8)]))
HOSTILE_YAML = {
    "nested": "[" * 20000 + "]" * 20000,
    "aliases": _ALIASES,
    "huge-number": "models: " + "9" * 5000 + "\n",
    "not-utf8": b"\xff\xfe\x00models",
}


def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _special(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "file.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    else:
        with open(path, "wb") as f:
            f.truncate(50_000_000)
    return path


def _raised_within(seconds: float, call, *args) -> BaseException:
    """What ``call(*args)`` raised, on a thread: a call that blocks (on a FIFO) or never ends fails the test."""
    raised: list[BaseException] = []

    def attempt() -> None:
        try:
            call(*args)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            raised.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    assert raised, "nothing was raised"
    return raised[0]


def _one_line(text: str) -> None:
    assert "\n" not in text.strip() and len(text) < 400 and "Traceback" not in text, text


# --------------------------------------------------------------------------- class 5: YAML


@pytest.mark.parametrize("case", list(HOSTILE_YAML) + ["fifo", "device", "oversized"])
def test_hostile_config_yaml_is_one_line(tmp_path: Path, case: str) -> None:
    path = _write(tmp_path / "c.yaml", HOSTILE_YAML[case]) if case in HOSTILE_YAML else _special(tmp_path, case)
    error = _raised_within(5, cfgmod.resolve, str(path))
    assert isinstance(error, ConfigError), repr(error)
    _one_line(str(error))


MISTYPED = {
    "dataset_params: 5": "must hold mappings",
    "kp_detector_params: abc": "must hold mappings",
    "num_kp: 1.0e+400": "malformed entry",
    "num_kp: [1]": "malformed entry",
    "num_kp: 100000000": "num_kp is 100000000, outside 1 to 256",
    "num_blocks: 1000000000": "num_blocks is 1000000000, outside 1 to 10",
    "scale_factor: 0": "scale_factor is 0.0, outside",
    "temperature: .nan": "temperature is nan, outside",
    "frame_shape: [1000000, 1000000, 3]": "frame size 1000000x1000000 is outside 16 to 4096",
}


def _config(change: str) -> str:
    """The vox-256 config in the original layout, with one line changed."""
    lines = {"dataset_params": "dataset_params: {frame_shape: [256, 256, 3]}",
             "num_kp": "  common_params: {num_kp: 10, num_channels: 3, estimate_jacobian: true}",
             "kp_detector_params": "  kp_detector_params: {temperature: 0.1, block_expansion: 32, max_features: 1024, "
                                   "scale_factor: 0.25, num_blocks: 5}",
             "generator_params": "  generator_params: {block_expansion: 64, max_features: 512, num_down_blocks: 2, "
                                 "num_bottleneck_blocks: 6, estimate_occlusion_map: true, dense_motion_params: "
                                 "{block_expansion: 64, max_features: 1024, num_blocks: 5, scale_factor: 0.25}}"}
    key, value = change.split(": ", 1)
    text = "\n".join([lines["dataset_params"], "model_params:", lines["num_kp"], lines["kp_detector_params"],
                      lines["generator_params"]])
    if key in ("dataset_params", "kp_detector_params"):
        return text.replace(lines[key].split(": ", 1)[1], value, 1)
    if key == "frame_shape":
        return text.replace("[256, 256, 3]", value)
    return text.replace(f"{key}: ", f"{key}: {value}, _was: ", 1)


def test_the_config_template_is_valid() -> None:
    assert cfgmod.from_dict(__import__("yaml").safe_load(_config("x: y"))) == cfgmod.preset("vox")


@pytest.mark.parametrize("change", list(MISTYPED))
def test_mistyped_config_is_one_line(tmp_path: Path, change: str) -> None:
    path = _write(tmp_path / "c.yaml", _config(change))
    started = time.monotonic()
    with pytest.raises(ConfigError, match=MISTYPED[change].replace("(", r"\(").replace(".", r"\.")) as info:
        cfgmod.resolve(str(path))
    assert time.monotonic() - started < 2
    _one_line(str(info.value))


def test_convert_with_a_hostile_config_exits_2(small, tmp_path: Path, capsys) -> None:
    path = _write(tmp_path / "deep.yaml", HOSTILE_YAML["nested"])
    assert cli.main(["convert", str(small.checkpoint("legacy")), "--config", str(path),
                     "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "nested deeper than 32 levels" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", list(HOSTILE_YAML) + ["fifo", "device", "oversized"])
def test_hostile_registry_yaml_is_one_line(tmp_path: Path, case: str) -> None:
    path = _write(tmp_path / "r.yaml", HOSTILE_YAML[case]) if case in HOSTILE_YAML else _special(tmp_path, case)
    error = _raised_within(5, registry.load_registry, path)
    assert isinstance(error, DownloadError), repr(error)
    _one_line(str(error))


def test_download_with_a_hostile_registry_exits_2(tmp_path: Path, monkeypatch, capsys) -> None:
    bomb = _ALIASES + "models: {vox-adv: {urls: *l8}}\n"
    monkeypatch.setenv("LIVEPUPPET_REGISTRY", str(_write(tmp_path / "r.yaml", bomb)))
    monkeypatch.setenv("LIVEPUPPET_HOME", str(tmp_path))
    assert cli.main(["download"]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "aliases expand to more than 100000 values" in err


def test_aliases_as_yaml_dump_writes_them_are_read(tmp_path: Path) -> None:
    shared = {"filename": "x.pth.tar", "preset": "vox", "urls": ["https://example.com/x.pth.tar"]}
    text = __import__("yaml").safe_dump({"models": {"a": shared, "b": shared}})
    assert "*id" in text  # PyYAML writes a shared value once, with an alias
    assert registry.load_registry(_write(tmp_path / "r.yaml", text))["b"].urls == ("https://example.com/x.pth.tar",)


# --------------------------------------------------------------------------- class 8: arguments, web export


@pytest.mark.parametrize("args, phrase", [(["--threads", "20000"], "at most"), (["--batch", "100000"], "at most 256"),
                                          (["--threads", "0"], "positive")])
def test_absurd_counts_are_refused_at_parsing(args: list[str], phrase: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["animate", "--source", "f.png", "--driving", "d.mp4", "--output", "o.mp4", *args])
    assert info.value.code == 2
    assert phrase in capsys.readouterr().err.splitlines()[-1]


_EXPORT = """
import sys
from livepuppet.cli import main
code = main(sys.argv[1:])
print("tensorflow imported" if "tensorflow" in sys.modules else "no tensorflow")
sys.exit(code)
"""


@pytest.mark.parametrize("kind", ["device", "fifo", "sparse", "not-tflite"])
def test_web_export_copies_only_sane_model_files(small, tmp_path: Path, kind: str) -> None:
    model = tmp_path / "model"
    shutil.copytree(small.model("legacy-fp32-b1"), model)
    generator = model / "generator.tflite"
    generator.unlink()
    if kind == "device":
        generator.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(generator)
    elif kind == "sparse":
        with open(generator, "wb") as f:
            f.write(b"\0\0\0\0TFL3")
            f.truncate(3 << 30)  # 3 GB that take no disk
    else:
        generator.write_bytes(b"not a model at all")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", _EXPORT, "web", "--model", str(model), "--export",
                             str(tmp_path / "site")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    _one_line(result.stderr)
    expected = {"device": ("not a regular file", "leads outside the model folder"), "fifo": ("not a regular file",),
                # the folder's manifest lists each file's size: a swapped file is refused before it is opened
                "sparse": ("truncated or replaced",), "not-tflite": ("truncated or replaced",)}[kind]
    assert any(e in result.stderr for e in expected) and result.stdout.strip() == "no tensorflow"
    assert time.monotonic() - started < 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing half-written left behind


def test_web_export_imports_no_tensorflow(small, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", _EXPORT, "web", "--model", str(small.model("legacy-fp32-b1")),
                             "--export", str(tmp_path / "site")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "no tensorflow", result.stderr[-2000:]
