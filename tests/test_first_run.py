"""The first-run experience through the CLI: `livepuppet download`, `livepuppet run --yes`, `livepuppet doctor`.

Everything runs against an HTTP server on 127.0.0.1 serving a small test
checkpoint (the SMALL architecture, made by the reference factory), with
LIVEPUPPET_HOME in a temp folder and LIVEPUPPET_REGISTRY naming a registry
file that points the default model (`vox-adv`) and a `small` model at that
server. The proxies point at a closed local port, so the built-in URL of
`vox-adv` (tried after the local ones) fails at once instead of reaching the
internet. The download edge cases themselves are covered function by function
in test_download.py; here there is one CLI test per behaviour.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from livepuppet import cli
from livepuppet.modelfolder.schema import MANIFEST
from tests.test_download import serving  # the local server with Range support

CKPT = "small-cpk.pth.tar"
MODEL_FOLDER = "small-cpk"  # models/<checkpoint name without .pth.tar>

# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    from tests.reference.factory import SMALL_PARAMS, make_checkpoint

    path = tmp_path_factory.mktemp("small") / CKPT
    make_checkpoint(path, SMALL_PARAMS, seed=0)
    return path.read_bytes()


@pytest.fixture
def server(checkpoint_bytes):
    """/ok/, /drop/ (first request cut off half-way), /404/: see test_download.py."""
    with serving(checkpoint_bytes) as srv:
        yield srv


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Env:
    """LIVEPUPPET_HOME and LIVEPUPPET_REGISTRY in a temp folder, for this process and subprocesses."""

    def __init__(self, tmp: Path, md5: str) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.registry = tmp / "models.yaml"
        self.md5 = md5

    @property
    def checkpoint_dir(self) -> Path:
        return self.home / "checkpoint"

    def write_registry(self, urls: list[str], md5: str | None = None) -> None:
        """`vox-adv` (the default) and `small`, both the test checkpoint at ``urls``."""
        fields = {"filename": CKPT, "urls": urls, "md5": md5 or self.md5}
        self.registry.write_text(yaml.safe_dump(
            {"models": {"vox-adv": dict(fields), "small": dict(fields, preset="vox-adv")}}))

    def run(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """`livepuppet ARGV` in a subprocess with no terminal on stdin."""
        return subprocess.run([sys.executable, "-m", "livepuppet.cli", *argv], cwd=self.tmp, env=dict(os.environ),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(tmp_path, monkeypatch, checkpoint_bytes) -> Env:
    e = Env(tmp_path, hashlib.md5(checkpoint_bytes).hexdigest())
    monkeypatch.setenv("LIVEPUPPET_HOME", str(e.home))
    monkeypatch.setenv("LIVEPUPPET_REGISTRY", str(e.registry))
    monkeypatch.delenv("LIVEPUPPET_MIRRORS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    nowhere = f"http://127.0.0.1:{_closed_port()}"
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, nowhere)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    return e


def _cli(*argv: str) -> int:
    """`livepuppet ARGV` in this process (main() installs a SIGTERM handler: put the old one back)."""
    old = signal.getsignal(signal.SIGTERM)
    try:
        return cli.main(list(argv))
    finally:
        signal.signal(signal.SIGTERM, old)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("livepuppet: error:")]


# --------------------------------------------------------------------------
# livepuppet download


def test_download_complete(env, server, checkpoint_bytes, capsys):
    env.write_registry([f"{server.base}/ok/{CKPT}"])
    assert _cli("download", "small") == 0
    assert (env.checkpoint_dir / CKPT).read_bytes() == checkpoint_bytes
    assert [p.name for p in env.checkpoint_dir.iterdir()] == [CKPT]  # no .partial left
    assert "is ready" in capsys.readouterr().err


def test_download_dropped_then_resumed(env, server, checkpoint_bytes, capsys):
    env.write_registry([f"{server.base}/drop/{CKPT}"])
    assert _cli("download", "small") == 2
    err = capsys.readouterr().err
    assert "resumes" in err and "Traceback" not in err
    half = len(checkpoint_bytes) // 2
    assert (env.checkpoint_dir / (CKPT + ".partial")).stat().st_size == half
    assert not (env.checkpoint_dir / CKPT).exists()

    assert _cli("download", "small") == 0
    assert server.requests[-1] == (f"/drop/{CKPT}", f"bytes={half}-")
    assert (env.checkpoint_dir / CKPT).read_bytes() == checkpoint_bytes
    assert [p.name for p in env.checkpoint_dir.iterdir()] == [CKPT]


def test_download_wrong_checksum_keeps_nothing(env, server, capsys):
    env.write_registry([f"{server.base}/ok/{CKPT}"], md5="0" * 32)
    assert _cli("download", "small") == 2
    [line] = _error_lines(capsys.readouterr().err)
    assert "did not match" in line and "nothing was kept" in line
    assert list(env.checkpoint_dir.iterdir()) == []


def test_download_404_then_second_url(env, server, checkpoint_bytes, capsys):
    env.write_registry([f"{server.base}/404/{CKPT}", f"{server.base}/ok/{CKPT}"])
    assert _cli("download", "small") == 0
    err = capsys.readouterr().err
    assert "404" in err and "trying the next URL" in err
    assert (env.checkpoint_dir / CKPT).read_bytes() == checkpoint_bytes
    assert [path for path, _range in server.requests] == [f"/404/{CKPT}", f"/ok/{CKPT}"]


# --------------------------------------------------------------------------
# the first run: livepuppet run with no model anywhere


def _face(h: int = 256, w: int = 256, dx: int = 0, dy: int = 0) -> np.ndarray:
    """A crude face, RGB uint8: a skin ellipse with eyes and a mouth, shifted by (dx, dy)."""
    import cv2

    img = np.full((h, w, 3), (70, 90, 120), np.uint8)
    cx, cy = w // 2 + dx, h // 2 + dy
    cv2.ellipse(img, (cx, cy), (w // 4, h // 3), 0, 0, 360, (225, 185, 160), -1)
    for ex in (-w // 10, w // 10):
        cv2.circle(img, (cx + ex, cy - h // 12), max(2, w // 30), (40, 30, 30), -1)
    cv2.ellipse(img, (cx, cy + h // 7), (w // 10, h // 30), 0, 0, 180, (150, 50, 60), -1)
    return img


@pytest.fixture
def face_and_clip(tmp_path) -> tuple[Path, Path]:
    import cv2

    from livepuppet.media import VideoWriter

    face = tmp_path / "face.png"
    cv2.imwrite(str(face), cv2.cvtColor(_face(), cv2.COLOR_RGB2BGR))
    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, fps=10) as writer:
        for i in range(12):
            writer.write(_face(160, 192, dx=3 * (i % 4) - 4, dy=(i % 3) - 1))
    return face, clip


def test_first_run_downloads_converts_and_runs(env, server, checkpoint_bytes, face_and_clip, tmp_path):
    from livepuppet.media import probe_video

    face, clip = face_and_clip
    env.write_registry([f"{server.base}/ok/{CKPT}"])
    out = tmp_path / "out.mp4"
    argv = ("run", "--source", str(face), "--camera", str(clip), "--every-frame", "--no-preview", "--record", str(out))
    done = env.run(*argv, "--frames", "6", "--yes")
    assert done.returncode == 0, done.stderr[-3000:]
    assert library_noise(done.stdout + done.stderr) == [], done.stdout + done.stderr  # download, convert, run

    assert (env.checkpoint_dir / CKPT).read_bytes() == checkpoint_bytes
    assert [path for path, _range in server.requests] == [f"/ok/{CKPT}"]
    manifest = json.loads((env.home / "models" / MODEL_FOLDER / MANIFEST).read_text())
    config = manifest["config"]
    # The registry's preset (vox-adv) does not fit the SMALL checkpoint: the architecture is
    # read off the checkpoint, and the frame size is the preset's.
    assert config["model_params"]["common_params"]["num_kp"] == 5
    assert config["dataset_params"]["frame_shape"][:2] == [256, 256]
    assert probe_video(out)["frame_count"] == 6

    # The second run finds the converted model: no download, no conversion.
    again = env.run(*argv, "--frames", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "converting" not in again.stderr
    assert len(server.requests) == 1
    assert probe_video(out)["frame_count"] == 2
    assert library_noise(again.stdout + again.stderr) == []

    site = env.run("web", "--export", str(tmp_path / "site"))  # the default model, now converted
    assert site.returncode == 0, site.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert library_noise(site.stdout + site.stderr) == [], site.stdout + site.stderr


# What libraries print when nobody stops them: absl/glog lines (I0000 ..., E0000 ... cuInit), absl's own
# warning, TensorFlow's oneDNN and CUDA notes, LiteRT's INFO lines, OpenVINO's [ WARNING ] and NNCF's
# INFO:nncf:..., Python warnings (DeprecationWarning, UserWarning ...) and any stray traceback.
_NOISE = re.compile(r"^\s*([IWEF]\d{4} |\[ ?(INFO|WARNING|ERROR|DEBUG) ?\]|(INFO|WARNING|ERROR|DEBUG)(:|\b)"
                    r"|Traceback)|absl|oneDNN|cuda|cuInit|XNNPACK delegate|TensorFlow Lite|nncf:"
                    r"|[A-Za-z]*Warning\b", re.IGNORECASE)


def library_noise(output: str) -> list[str]:
    """The lines of a command's output that a library printed, not livepuppet."""
    return [line for line in output.splitlines() if _NOISE.search(line)]


def test_library_noise_is_recognised():
    """The filter the first-run test relies on catches what TensorFlow, absl and LiteRT print."""
    noisy = """WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796298363.501463    7895 port.cc:153] oneDNN custom operations are on.
I0000 00:00:1796298363.502155    7895 cudart_stub.cc:31] Could not find cuda drivers on your machine.
E0000 00:00:1796298371.108722    7895 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
[ WARNING ] some OpenVINO remark
INFO:nncf:Compression stage
/x/y.py:3: DeprecationWarning: something"""
    assert len(library_noise(noisy)) == 8
    ours = """first run: converting small-cpk.pth.tar once (a minute or two)
6 avatar frames at 26.1 fps, latency 199 ms (camera grab to avatar out) (frames); median ms: capture 0.3
engine: openvino fp32, generator 19 ms, frame 23 ms (0.00 mean / 0.0 max levels from fp32)"""
    assert library_noise(ours) == []


def test_run_without_yes_and_without_a_terminal_refuses(env, server, face_and_clip):
    face, clip = face_and_clip
    env.write_registry([f"{server.base}/ok/{CKPT}"])
    done = env.run("run", "--source", str(face), "--camera", str(clip), "--no-preview", "--frames", "1",
                   timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    [line] = _error_lines(done.stderr)
    assert "--yes" in line
    assert server.requests == []
    assert not env.checkpoint_dir.exists() or list(env.checkpoint_dir.iterdir()) == []


@pytest.mark.parametrize("size, filename, said", [(12_345_678, "other.pth.tar", "12 MB"), (None, "other.pth.tar", ""),
                                                  (None, "vox-adv-cpk.pth.tar", "about 228 MB")])
def test_download_question_gives_the_entry_size(env, monkeypatch, size, filename, said):
    """The first-run question gives the entry's size, the published file's approximate one, or none."""
    from livepuppet.commands import default_model as commands
    from livepuppet.errors import LivepuppetError

    env.write_registry(["http://127.0.0.1:9/unused"])
    doc = yaml.safe_load(env.registry.read_text())
    if size:
        doc["models"]["vox-adv"]["size"] = size
    doc["models"]["vox-adv"]["filename"] = filename
    env.registry.write_text(yaml.safe_dump(doc))
    asked = []
    monkeypatch.setattr(commands, "_ask", lambda question, where: asked.append(question) or False)
    with pytest.raises(LivepuppetError, match="no model to run"):
        commands.resolve_model(None, download_ok=True)
    [question] = asked
    assert question == f"The default model ({filename}{', ' + said if said else ''}) is not here. Download it now?"


def test_run_offline_says_where_to_get_the_file(env, server, face_and_clip):
    face, clip = face_and_clip
    refused = f"http://127.0.0.1:{_closed_port()}/{CKPT}"
    missing = f"{server.base}/404/{CKPT}"
    env.write_registry([refused, missing])
    done = env.run("run", "--source", str(face), "--camera", str(clip), "--no-preview", "--frames", "1",
                   "--yes", timeout=120)
    assert done.returncode == 2
    err = done.stderr
    assert "Traceback" not in err and len(_error_lines(err)) == 1
    assert refused in err and missing in err
    assert env.md5 in err                         # what to get ...
    assert str(env.checkpoint_dir) in err         # ... and where to put it
    assert not (env.home / "models").exists()


# --------------------------------------------------------------------------
# livepuppet doctor


def test_doctor_reports_this_machine(env, tmp_path, capsys):
    from livepuppet.fomm.config import ModelConfig

    from livepuppet.modelfolder.schema import ModelFolder, Signature, StoredFile, Tensor, Variant, to_json

    model = env.home / "models" / MODEL_FOLDER
    model.mkdir(parents=True)
    variants = []
    for name in ("kp_detector", "source_encoder", "kp_processing", "generator"):
        (model / f"{name}.tflite").write_bytes(b"x" * 1000)
        variants.append(Variant(name, "tflite", "xnnpack", "fp16", (StoredFile(f"{name}.tflite", 1000, ""),)))
    signatures = {name: Signature((Tensor("image", (1, 128, 128, 3)),), ()) for name in
                  ("kp_detector", "source_encoder", "kp_processing", "generator")}
    (model / MANIFEST).write_text(to_json(ModelFolder(model, ModelConfig(num_kp=5).with_frame_shape(128, 128), 1,
                                                      signatures, tuple(variants))))
    # where the onnx engine ran each model's ops, as it records them (here: CoreML, with two ops on the CPU)
    from livepuppet.modelfolder.read import read_folder
    from livepuppet.runtime.engines import onnx

    onnx.record_placement(read_folder(model), "coreml", {
        "generator": {"CoreML": {"Conv": 30, "Relu": 20}, "CPU": {"GridSample": 2}},
        "kp_detector": {"CoreML": {"Conv": 9}}})
    (env.home / "models" / "broken").mkdir()
    (env.home / "models" / "broken" / MANIFEST).write_text("{not json")
    env.checkpoint_dir.mkdir(parents=True)
    (env.checkpoint_dir / CKPT).write_bytes(b"x" * 300_000)
    (env.checkpoint_dir / ("other.pth.tar" + ".partial")).write_bytes(b"x" * 1000)
    env.write_registry(["http://127.0.0.1:9/x"])

    assert _cli("doctor") == 0
    out = capsys.readouterr().out
    for row in ("livepuppet", "Python", "TensorFlow", "LiteRT", "OpenCV", "numpy", "cameras",
                "virtual camera", "GPU (TensorFlow)", "OpenVINO", "ONNX Runtime", "default model", "data folders",
                "models", "checkpoints"):
        assert f"│ {row} " in out, row
    assert "devices CPU" in out.split("│ OpenVINO ")[1].splitlines()[0]
    assert "$LIVEPUPPET_HOME)" in out.split("│ data folders ")[1].splitlines()[0]
    assert "Traceback" not in out
    assert f"{MODEL_FOLDER} (default): 128x128, batch 1, 5 keypoints; tflite; 0 MB" in out
    assert "ONNX on CoreML: generator 50 on CoreML; 2 on CPU (GridSample 2); kp_detector all 9 kernels on" in out
    assert "providers CPU" in out.split("│ ONNX Runtime ")[1].splitlines()[0]
    assert "broken: unusable" in out
    assert f"{CKPT} (default): 0.3 MB" in out
    assert "unfinished download" in out

    if not glob.glob("/dev/video*"):
        assert "none found" in out.split("│ cameras ")[1].splitlines()[0]
    if sys.platform.startswith("linux") and not glob.glob("/sys/devices/virtual/video4linux/video*"):
        assert "not available" in out.split("│ virtual camera ")[1].splitlines()[0]
        assert "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=livepuppet" in out
        if importlib.util.find_spec("pyvirtualcam") is None:
            assert "pip install pyvirtualcam" in out


# --------------------------------------------------------------------------
# where things are: run from outside the checkout


@pytest.fixture
def two_homes(env, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """No $LIVEPUPPET_HOME, a (fake) checkout and a (fake) per-user data folder, and a working folder outside both."""
    import platformdirs

    from livepuppet import paths

    checkout, user = tmp_path / "checkout", tmp_path / "user-data"
    monkeypatch.delenv("LIVEPUPPET_HOME")
    monkeypatch.setattr(paths, "_checkout", lambda: checkout)
    monkeypatch.setattr(platformdirs, "user_data_dir", lambda *a, **k: str(user))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    env.write_registry(["http://127.0.0.1:9/unused"])
    return checkout, user


def _model_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text("{}")  # resolve_model only finds it; the engine reads it
    return folder


def test_run_outside_the_checkout_finds_the_checkouts_default_model(two_homes, capsys):
    from livepuppet.commands.default_model import resolve_model
    from livepuppet.paths import home_dir

    checkout, user = two_homes
    assert home_dir() == user  # outside the checkout, the per-user folder is the home ...
    model = _model_folder(checkout / "models" / MODEL_FOLDER)
    assert resolve_model(None, download_ok=True) == model  # ... and the checkout's model is found all the same
    assert f"default model: {model}" in capsys.readouterr().err


def test_a_checkpoint_in_another_home_is_converted_beside_it(two_homes, monkeypatch):
    from livepuppet.commands import default_model

    checkout, _ = two_homes
    (checkout / "checkpoint").mkdir(parents=True)
    (checkout / "checkpoint" / CKPT).write_bytes(b"x" * 100)
    converted = []
    monkeypatch.setattr(default_model, "convert_checkpoint", lambda ckpt, out, *a, **k: converted.append((ckpt, out)) or out)
    assert default_model.resolve_model(None) == checkout / "models" / MODEL_FOLDER
    assert converted == [(checkout / "checkpoint" / CKPT, checkout / "models" / MODEL_FOLDER)]  # no download


def test_missing_default_model_names_where_it_looked_and_what_exists(two_homes):
    from livepuppet.commands.default_model import resolve_model
    from livepuppet.errors import ModelFolderError

    checkout, user = two_homes
    other = _model_folder(user / "models" / "my-model")
    with pytest.raises(ModelFolderError) as info:
        resolve_model(None)
    message = str(info.value)
    assert "\n" not in message
    for where in (user / "models" / MODEL_FOLDER, checkout / "models" / MODEL_FOLDER,
                  user / "checkpoint" / CKPT, checkout / "checkpoint" / CKPT):
        assert str(where) in message, where
    assert f"models that exist: {other}" in message and "--model" in message


def test_convert_ends_with_the_command_to_run_next(two_homes, tmp_path):
    from livepuppet.commands.convert import next_command

    checkout, user = two_homes
    assert next_command(user / "models" / MODEL_FOLDER) == "livepuppet run --source face.png"
    assert next_command(checkout / "models" / MODEL_FOLDER) == "livepuppet run --source face.png"
    assert next_command(tmp_path / "mine") == f"livepuppet run --source face.png --model {tmp_path / 'mine'}"
