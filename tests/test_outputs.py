"""Issue 18, class 1: an output never replaces, deletes or changes an input, however either is spelled.

The rule (livepuppet/outputs.py) on its own: the same file by ``..``, a symbolic link, a hard link or a
``file:`` URL; a folder output holding an input; an output inside an input folder; the leftovers of a
killed run that an output clears. Then every command that writes, through the CLI, each refused with
one line and exit 2 before any work, its input unchanged. Nothing here loads a model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from livepuppet import cli, outputs
from livepuppet.errors import OutputError

PRECIOUS = b"the user's only copy"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """models/ and checkpoint/ under the test's folder; the registry file of no one."""
    monkeypatch.setenv("LIVEPUPPET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LIVEPUPPET_REGISTRY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def _file(path: Path, data: bytes = PRECIOUS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _model_folder(path: Path) -> Path:
    """Enough of a model folder for the checks that run before a model is read."""
    _file(path / "manifest.json", b'{"format": 1}')
    _file(path / "generator.tflite")
    return path


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)


def _refused(args: list[str], capsys: pytest.CaptureFixture[str], *phrases: str) -> str:
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("livepuppet: error: ") and "Traceback" not in err, err
    assert any(p in err for p in phrases), err
    return err


# --------------------------------------------------------------------------- the rule


def test_the_same_file_by_every_spelling(tmp_path: Path) -> None:
    clip = _file(tmp_path / "media" / "clip.mp4")
    (tmp_path / "link.mp4").symlink_to(clip)
    (tmp_path / "linked-folder").symlink_to(tmp_path / "media", target_is_directory=True)
    os.link(clip, tmp_path / "hard.mp4")
    spellings = [tmp_path / "media" / ".." / "media" / "clip.mp4", tmp_path / "link.mp4",
                 tmp_path / "linked-folder" / "clip.mp4", tmp_path / "hard.mp4"]
    for output in spellings:
        with pytest.raises(OutputError, match="is also an input"):
            outputs.check(output, [clip])
    for camera in (f"file://{clip}", f"file:{clip}", f"FILE://{clip}",
                   "file://" + str(clip).replace("/", "%2F").replace("%2F", "/", 1)):
        with pytest.raises(OutputError, match="is also an input"):
            outputs.check(clip, [camera])
    outputs.check(tmp_path / "other.mp4", [clip, "0", 0, "rtsp://camera.local/stream", None])


def test_a_folder_output_never_holds_an_input(tmp_path: Path) -> None:
    model = _model_folder(tmp_path / "site" / "model-folder")
    portrait = _file(tmp_path / "frames" / "00000.png")
    with pytest.raises(OutputError, match="would replace the folder that holds the input"):
        outputs.check(tmp_path / "site", [model])
    with pytest.raises(OutputError, match="would replace the folder that holds the input"):
        outputs.check(tmp_path / "frames", [portrait])
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "face.png").symlink_to(portrait)  # the link is the input as named
    with pytest.raises(OutputError, match="holds the input"):
        outputs.check(tmp_path / "elsewhere", [tmp_path / "elsewhere" / "face.png"])


def test_an_output_never_goes_inside_an_input_folder(tmp_path: Path) -> None:
    model = _model_folder(tmp_path / "models" / "vox")
    with pytest.raises(OutputError, match="inside the input folder"):
        outputs.check(model / "bench.json", [model])
    (model / "real.tflite").write_bytes(PRECIOUS)
    (tmp_path / "model-with-link").mkdir()
    (tmp_path / "model-with-link" / "generator.tflite").symlink_to(model / "real.tflite")
    with pytest.raises(OutputError, match="is also an input"):  # a link in an input folder leads to an input too
        outputs.check(model / "real.tflite", [tmp_path / "model-with-link"])
    outputs.check(tmp_path / "models" / "vox-site", [model])  # a sibling whose name starts alike is fine


def test_a_killed_runs_leftover_is_an_input_too(tmp_path: Path) -> None:
    stale = _file(tmp_path / f".out.mp4.partial-{_dead_pid()}-abcdef.mp4")
    with pytest.raises(OutputError, match="leftover of a killed run"):
        outputs.check(tmp_path / "out.mp4", [stale])


# --------------------------------------------------------------------------- every command that writes


def test_convert_never_replaces_a_folder_holding_its_checkpoint_or_config(tmp_path: Path, capsys) -> None:
    model = _model_folder(tmp_path / "models" / "vox")
    checkpoint = _file(model / "vox.pth.tar")
    _refused(["convert", str(checkpoint), "--out", str(model)], capsys, "holds the input")
    config = _file(model / "vox.yaml", b"model_params: {}")
    _refused(["convert", str(_file(tmp_path / "ck.pth.tar")), "--config", str(config), "--out", str(model)],
             capsys, "holds the input")
    stale = tmp_path / "models" / f".vox.partial-{_dead_pid()}-abcdef"
    _refused(["convert", str(_file(stale / "ck.pth.tar")), "--out", str(model)], capsys, "leftover of a killed run")
    assert checkpoint.read_bytes() == PRECIOUS and config.read_bytes() == b"model_params: {}"
    assert (stale / "ck.pth.tar").read_bytes() == PRECIOUS


def test_convert_web_never_replaces_the_model_or_the_checkpoint(tmp_path: Path, capsys) -> None:
    checkpoint = _file(tmp_path / "site" / "vox.pth.tar")
    _refused(["convert", str(checkpoint), "--out", str(tmp_path / "vox"), "--web", str(tmp_path / "site")],
             capsys, "holds the input")
    other = _file(tmp_path / "ck.pth.tar")
    _refused(["convert", str(other), "--out", str(tmp_path / "site2" / "model"), "--web", str(tmp_path / "site2")],
             capsys, "holds the input")
    _refused(["convert", str(other), "--out", str(tmp_path / "m"), "--web", str(tmp_path / "m" / "site")],
             capsys, "inside the input folder")
    assert checkpoint.read_bytes() == PRECIOUS and not (tmp_path / "m").exists()


def test_animate_never_writes_over_its_inputs(tmp_path: Path, capsys) -> None:
    model = _model_folder(tmp_path / "model")
    source = _file(tmp_path / "frames" / "00000.png")
    driving = _file(tmp_path / "clip.mp4")
    os.link(driving, tmp_path / "hard.mp4")
    run = ["animate", "--source", str(source), "--driving", str(driving), "--model", str(model), "--output"]
    _refused(run + [str(tmp_path / "frames") + "/"], capsys, "holds the input")  # frames/ would be replaced
    _refused(run + [str(tmp_path / "hard.mp4")], capsys, "is also an input")
    _refused(run + [str(model / "out.mp4")], capsys, "inside the input folder")
    assert source.read_bytes() == driving.read_bytes() == PRECIOUS
    assert sorted(p.name for p in model.iterdir()) == ["generator.tflite", "manifest.json"]


def test_run_never_records_over_its_camera_however_named(tmp_path: Path, capsys) -> None:
    camera = _file(tmp_path / "a clip.mp4")
    face = _file(tmp_path / "faces" / "face.png")
    model = _model_folder(tmp_path / "model")
    run = ["run", "--source", str(tmp_path / "faces"), "--no-preview", "--model", str(model), "--record"]
    for spec in (f"file://{camera}", f"file://{str(camera).replace(' ', '%20')}"):
        _refused(run + [str(camera), "--camera", spec], capsys, "is also an input")
    _refused(run + [str(tmp_path / "faces" / "rec.mp4"), "--camera", str(camera)], capsys, "inside the input folder")
    assert camera.read_bytes() == face.read_bytes() == PRECIOUS


def test_bench_json_never_lands_in_the_model_folder(tmp_path: Path, capsys) -> None:
    model = _model_folder(tmp_path / "model")
    _refused(["bench", "--model", str(model), "--engine", "tflite", "--json", str(model / "manifest.json")],
             capsys, "inside the input folder")
    assert (model / "manifest.json").read_bytes() == b'{"format": 1}'


def test_web_export_never_replaces_the_model_folder(tmp_path: Path, capsys) -> None:
    model = _model_folder(tmp_path / "site" / "models" / "vox")
    _refused(["web", "--model", str(model), "--export", str(tmp_path / "site")], capsys, "holds the input")
    _refused(["web", "--model", str(model), "--export", str(model)], capsys, "is also an input")
    assert (model / "generator.tflite").read_bytes() == PRECIOUS


def test_download_never_writes_over_the_registry_file(tmp_path: Path, monkeypatch, capsys) -> None:
    registry = _file(tmp_path / "home" / "checkpoint" / "vox-adv-cpk.pth.tar.partial", b"models: {}\n")
    monkeypatch.setenv("LIVEPUPPET_REGISTRY", str(registry))
    _refused(["download"], capsys, "is also an input")
    assert registry.read_bytes() == b"models: {}\n"


def test_an_output_named_like_a_protocol_is_that_file(tmp_path: Path, monkeypatch) -> None:
    """`--record file:clip.mp4` names a file called 'file:clip.mp4'; ffmpeg must not read it as clip.mp4."""
    import numpy as np

    from livepuppet import media

    if media._ffmpeg_exe() is None:
        pytest.skip("no ffmpeg binary (install imageio-ffmpeg)")
    monkeypatch.chdir(tmp_path)
    clip = _file(tmp_path / "clip.mp4")
    outputs.check("file:clip.mp4", [clip])  # another file, as far as the rule is concerned: so it must be one
    with media.VideoWriter(Path("file:clip.mp4"), 25, fragmented=True) as writer:
        writer.write(np.zeros((32, 32, 3), np.float32))
    assert clip.read_bytes() == PRECIOUS
    assert media.frames_on_disk(tmp_path / "file:clip.mp4") == 1
