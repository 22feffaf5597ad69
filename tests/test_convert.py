"""Issue 3: ``livepuppet convert`` — checkpoint -> model folder (SavedModels + .tflite + manifest).

Small-architecture (SMALL_PARAMS, 64x64) checkpoints are converted once per
session, through the CLI, in a matrix that covers both serialisations, every
precision and static/dynamic batches without converting all 12 combinations.
:class:`SmallModels` is shared with tests/test_engines.py, which runs the
converted folders on both engines against the PyTorch reference.

The one full vox-256 fp32 conversion is marked ``slow``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from livepuppet import __version__
from livepuppet.cli import main
from livepuppet.errors import LivepuppetError
from livepuppet.conversion.targets.tflite import stored_precision
from livepuppet.modelfolder.read import read_folder
from tests.reference import (
    SMALL_PARAMS,
    VOX_PARAMS,
    animate_reference,
    build_models,
    make_checkpoint,
    random_frames,
    random_video,
    save_checkpoint,
    to_torch_nchw,
    trained_numerics,
)

ROOT = Path(__file__).resolve().parent.parent
SIZE = 64
NUM_KP = SMALL_PARAMS["common_params"]["num_kp"]
MODEL_NAMES = ("kp_detector", "source_encoder", "kp_processing", "generator")

# key -> (serialisation, precision, batch, numerics); batch None = dynamic. The original numerics
# (--numerics original, convert's default) are the reference's parity target; "trained" is asked for.
MATRIX: dict[str, tuple[str, str, int | None, str]] = {
    "legacy-fp32-b1": ("legacy", "fp32", 1, "original"),
    "zip-fp32-dynamic": ("zip", "fp32", None, "original"),
    "legacy-fp16-dynamic": ("legacy", "fp16", None, "original"),
    "zip-int8-b2": ("zip", "int8", 2, "original"),
    # converted over a copy of legacy-fp32-b1 (plus a stale file): exercises replacing a model
    "legacy-fp32-b4": ("legacy", "fp32", 4, "original"),
    "zip-fp32-b1-trained": ("zip", "fp32", 1, "trained"),
}
REPLACED_KEY, REPLACED_FROM = "legacy-fp32-b4", "legacy-fp32-b1"
# SMALL converts in a second: the shared folders carry every engine's files (the default convert is
# tested on its own: tests/test_openvino.py::test_default_convert_is_portable, test_vox256_default_convert_is_lean)
SMALL_TARGETS = ("tflite", "openvino", "savedmodel")
# the float32 folders carry the ONNX models (tests/test_onnx.py); the batch-1 one the browser graph too
EXTRA_TARGETS = {"legacy-fp32-b1": ("onnx", "web"), "zip-fp32-dynamic": ("onnx",), "legacy-fp32-b4": ("onnx",)}
STALE = "stale-file-from-the-old-model.txt"


# --------------------------------------------------------------------------- shared models


class SmallModels:
    """Session cache: the SMALL checkpoints (same weights in both serialisations), converted folders,
    the PyTorch reference models, and reference animations. Everything is made on first use."""

    def __init__(self, root: Path):
        self.root = root
        self._checkpoints: dict[str, Path] = {}
        self._models: dict[str, Path] = {}
        self._reference: dict[tuple[bool, bool, str], np.ndarray] = {}
        self.convert_seconds: dict[str, float] = {}
        self.torch_models = None
        self.source = random_frames(1, SIZE, SIZE, seed=1)
        self.driving = random_video(5, SIZE, SIZE, seed=2, speed=0.03)

    def checkpoint(self, serialisation: str) -> Path:
        if serialisation not in self._checkpoints:
            path = self.root / f"small-{serialisation}.pth.tar"
            if self.torch_models is None:
                self.torch_models = make_checkpoint(path, SMALL_PARAMS, seed=0, serialisation=serialisation)
            else:  # the same weights, saved the other way
                save_checkpoint(path, *self.torch_models, serialisation=serialisation)
            self._checkpoints[serialisation] = path
        return self._checkpoints[serialisation]

    def model(self, key: str) -> Path:
        if key not in self._models:
            serialisation, precision, batch, numerics = MATRIX[key]
            checkpoint = self.checkpoint(serialisation)
            out = self.root / "models" / key
            if key == REPLACED_KEY:
                shutil.copytree(self.model(REPLACED_FROM), out)
                (out / STALE).write_text("must disappear when the model is replaced")
            args = ["convert", str(checkpoint), "--out", str(out), "--precision", precision,
                    "--batch", "dynamic" if batch is None else str(batch), "--size", f"{SIZE}x{SIZE}",
                    "--targets", ",".join(SMALL_TARGETS + EXTRA_TARGETS.get(key, ())), "--numerics", numerics]
            start = time.perf_counter()
            assert main(args) == 0
            self.convert_seconds[key] = time.perf_counter() - start
            print(f"\nconverted {key} in {self.convert_seconds[key]:.1f} s")
            self._models[key] = out
        return self._models[key]

    def reference(self, relative: bool = True, adapt_scale: bool = True, numerics: str = "original") -> np.ndarray:
        """PyTorch animation of self.driving onto self.source, (N, H, W, 3); ``numerics`` "trained": with
        every grid_sample at align_corners=True."""
        key = (relative, adapt_scale, numerics)
        if key not in self._reference:
            self.checkpoint("legacy")
            generator, kp_detector = self.torch_models
            with trained_numerics() if numerics == "trained" else contextlib.nullcontext():
                out = animate_reference(generator, kp_detector, to_torch_nchw(self.source),
                                        to_torch_nchw(self.driving), relative=relative, adapt_scale=adapt_scale)
            self._reference[key] = out.numpy().transpose(0, 2, 3, 1)
        return self._reference[key]


_SHARED: dict[Path, SmallModels] = {}


def shared_small_models(factory: pytest.TempPathFactory) -> SmallModels:
    root = factory.getbasetemp() / "small-models"
    if root not in _SHARED:
        root.mkdir(exist_ok=True)
        _SHARED[root] = SmallModels(root)
    return _SHARED[root]


def _leftovers(parent: Path) -> list[str]:
    """Temporary folders a convert may have left beside its destination."""
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("livepuppet: error: "), err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- the conversion matrix


def _expected_io(batch: int | None) -> dict[str, tuple[dict, dict]]:
    b = -1 if batch is None else batch
    k = NUM_KP
    kp = lambda prefix, n: {f"{prefix}_value": [n, k, 2], f"{prefix}_jacobian": [n, k, 2, 2]}  # noqa: E731
    return {
        "kp_detector": ({"image": [b, SIZE, SIZE, 3]}, {"value": [b, k, 2], "jacobian": [b, k, 2, 2]}),
        "source_encoder": ({"source": [1, SIZE, SIZE, 3]},
                           {"features": [1, SIZE // 4, SIZE // 4, 32], "source_small": [1, SIZE // 4, SIZE // 4, 3]}),
        "kp_processing": ({**kp("source", 1), **kp("initial", 1), **kp("driving", b), "relative": [],
                           "adapt_scale": []}, {"value": [b, k, 2], "jacobian": [b, k, 2, 2]}),
        "generator": ({**kp("driving", b), **kp("source", 1), "features": [1, SIZE // 4, SIZE // 4, 32],
                       "source_small": [1, SIZE // 4, SIZE // 4, 3]}, {"prediction": [b, SIZE, SIZE, 3]}),
    }


def _expected_variants(key: str, precision: str) -> set[tuple[str, str, str, str]]:
    """(network, back end, graph, precision) of every variant a SMALL convert of ``key`` writes."""
    extra = EXTRA_TARGETS.get(key, ())
    return ({(n, "tflite", "xnnpack", stored_precision(n, precision)) for n in MODEL_NAMES}
            | {(n, "openvino", "xnnpack", "fp32") for n in MODEL_NAMES} | {("generator", "openvino", "plain", "bf16")}
            | {(n, "savedmodel", "plain", "fp32") for n in MODEL_NAMES}
            | {(n, "onnx", "onnx", "fp32") for n in MODEL_NAMES if "onnx" in extra}
            | {(n, "litertjs", "browser", stored_precision(n, precision)) for n in MODEL_NAMES if "web" in extra})


@pytest.mark.parametrize("key", list(MATRIX))
def test_convert_writes_a_complete_manifest(small: SmallModels, key: str) -> None:
    from livepuppet.conversion.targets.tflite import make_interpreter, tflite_ops

    serialisation, precision, batch, numerics = MATRIX[key]
    folder = small.model(key)
    checkpoint = small.checkpoint(serialisation)
    manifest = json.loads((folder / "manifest.json").read_text())
    model = read_folder(folder)  # and it reads back, checked

    assert manifest["format"] == 2
    assert manifest["livepuppet_version"] == __version__ and manifest["tensorflow_version"]
    assert manifest["batch"] == batch == model.batch and manifest["numerics"] == numerics == model.numerics
    assert manifest["checkpoint"] == {"name": checkpoint.name,
                                      "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest()}
    config = manifest["config"]
    assert config["dataset_params"]["frame_shape"] == [SIZE, SIZE, 3]
    assert config["model_params"]["common_params"] == SMALL_PARAMS["common_params"]
    assert config["model_params"]["generator_params"]["num_bottleneck_blocks"] == 2

    assert sorted(manifest["signatures"]) == sorted(MODEL_NAMES)
    for name, (inputs, outputs) in _expected_io(batch).items():
        sig = manifest["signatures"][name]
        assert [i["name"] for i in sig["inputs"]] == list(inputs)  # the order the engines feed them
        assert {i["name"]: i["shape"] for i in sig["inputs"]} == inputs, name
        assert {o["name"]: o["shape"] for o in sig["outputs"]} == outputs, name
        assert {i["dtype"] for i in sig["inputs"] + sig["outputs"]} == {"float32"}

    assert {v.key for v in model.variants} == _expected_variants(key, precision)
    listed = {"manifest.json"}
    for variant in model.variants:
        assert variant.verified.max_abs is not None, variant.label
        for stored in variant.files:
            path = folder / stored.path
            assert path.stat().st_size == stored.bytes
            assert hashlib.sha256(path.read_bytes()).hexdigest() == stored.sha256
            listed.add(stored.path)
        if variant.backend == "tflite":
            ops = tflite_ops(folder / variant.files[0].path)
            assert ops and not [op for op in ops if "FLEX" in op.upper() or "CUSTOM" in op.upper()], ops
            signature = make_interpreter(folder / variant.files[0].path, threads=1).get_signature_list()
            inputs, outputs = _expected_io(batch)[variant.network]
            assert sorted(signature["serving_default"]["inputs"]) == sorted(inputs)
            assert sorted(signature["serving_default"]["outputs"]) == sorted(outputs)
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert on_disk == listed  # nothing unlisted: no caches, no leftovers
    assert _leftovers(folder.parent) == []


def test_model_folder_gets_ordinary_permissions(small: SmallModels, tmp_path: Path) -> None:
    """The folder is built in a temporary directory, but must not keep mkdtemp's private 0700 mode."""
    folder = small.model("legacy-fp32-b1")
    plain = tmp_path / "plain"
    plain.mkdir()
    assert folder.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_reconvert_replaces_the_whole_old_model(small: SmallModels) -> None:
    folder = small.model(REPLACED_KEY)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["batch"] == 4
    assert not (folder / STALE).exists()  # swapped as a whole, not merged into
    assert manifest["signatures"]["generator"]["inputs"][0]["shape"][0] == 4
    assert _leftovers(folder.parent) == []


def test_precision_shrinks_the_tflite_files(small: SmallModels) -> None:
    sizes = {}
    for key in ("zip-fp32-dynamic", "legacy-fp16-dynamic", "zip-int8-b2"):
        model = read_folder(small.model(key))
        # kp_processing holds no weights: a few kB of graph that quantisation cannot shrink
        sizes[MATRIX[key][1]] = {m: model.find(m, "tflite").files[0].bytes for m in MODEL_NAMES}
    print("\n.tflite bytes (SMALL 64x64):")
    for precision, per_model in sizes.items():
        print(f"  {precision:5s} " + "  ".join(f"{m}={b}" for m, b in per_model.items()))
    weighted = ("kp_detector", "source_encoder", "generator")
    ratio = {}
    for precision in ("fp16", "int8"):  # over the models stored at that precision (int8 keeps kp_detector fp32)
        reduced = [m for m in weighted if stored_precision(m, precision) == precision]
        ratio[precision] = sum(sizes[precision][m] for m in reduced) / sum(sizes["fp32"][m] for m in reduced)
    print(f"  ratio vs fp32 (models with weights, stored reduced): fp16 {ratio['fp16']:.3f}, int8 {ratio['int8']:.3f}")
    assert 0.40 <= ratio["fp16"] <= 0.62
    assert 0.18 <= ratio["int8"] <= 0.38
    assert abs(sizes["int8"]["kp_detector"] / sizes["fp32"]["kp_detector"] - 1) < 0.02  # float32 weights


# --------------------------------------------------------------------------- atomicity


class _Injected(Exception):
    pass


def _fail_after(count: int, exc: type[BaseException]):
    built: list[str] = []

    def hook(name: str) -> None:
        built.append(name)
        if len(built) == count:
            raise exc(f"injected after {name}")

    return hook, built


def _load_small(small: SmallModels, size: int = SIZE):
    from livepuppet.fomm import config as cfgmod
    from livepuppet.fomm.checkpoint import load_checkpoint

    ckpt = load_checkpoint(small.checkpoint("legacy"))
    return ckpt, cfgmod.infer(ckpt.generator, ckpt.kp_detector).with_frame_shape(size, size)


def test_failed_convert_leaves_no_folder(small: SmallModels, tmp_path: Path) -> None:
    from livepuppet.conversion.export import build

    ckpt, cfg = _load_small(small)
    out = tmp_path / "models" / "small"
    hook, built = _fail_after(1, _Injected)
    with pytest.raises(_Injected):
        build(ckpt, cfg, out, on_model_built=hook)
    assert built == ["kp_detector"]
    assert not out.exists()
    assert _leftovers(out.parent) == []


def test_interrupted_cli_convert_leaves_no_folder(small: SmallModels, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C after the first model: exit 130, nothing at --out, no temporary folder."""
    from livepuppet.conversion import export

    real_build = export.build
    hook, built = _fail_after(1, KeyboardInterrupt)
    monkeypatch.setattr(export, "build", lambda *a, **kw: real_build(*a, **kw, on_model_built=hook))
    out = tmp_path / "interrupted"
    rc = main(["convert", str(small.checkpoint("legacy")), "--out", str(out), "--size", f"{SIZE}x{SIZE}"])
    assert rc == 130
    assert built == ["kp_detector"]
    assert "livepuppet: interrupted" in capsys.readouterr().err
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_failed_reconvert_keeps_the_old_model(small: SmallModels, tmp_path: Path) -> None:
    from livepuppet.runtime.choose import open_engine
    from livepuppet.conversion.export import build

    out = tmp_path / "model"
    shutil.copytree(small.model("legacy-fp32-b1"), out)
    before = _snapshot(out)
    ckpt, cfg = _load_small(small)
    hook, built = _fail_after(2, _Injected)
    with pytest.raises(_Injected):
        build(ckpt, cfg, out, precision="fp16", batch=None, on_model_built=hook)
    assert built == ["kp_detector", "source_encoder"]
    assert _snapshot(out) == before
    assert _leftovers(tmp_path) == []
    assert open_engine(out, "tflite").batch == 1  # still the old, working model


def test_replace_swaps_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """replace_folder on its own: the new folder takes the old one's place; a failed swap puts the old one back."""
    from livepuppet import outputs
    from livepuppet.outputs import replace_folder

    def folder(name: str, marker: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "manifest.json").write_text("{}")
        (path / marker).write_text(marker)
        return path

    out = folder("model", "old")
    replace_folder(folder(".model.partial-1", "new"), out)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

    real_replace, calls = os.replace, []

    def flaky_replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # old moved aside; moving the new one in fails
            raise OSError("injected")
        return real_replace(src, dst)

    newer = folder(".model.partial-2", "newer")
    monkeypatch.setattr(outputs.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="injected"):
        replace_folder(newer, out)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.partial-2", "model"]  # build() removes its tmp


# --------------------------------------------------------------------------- errors: one line, exit 2


class _Evil:
    def __init__(self, func, args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _malicious(path: Path, marker: Path) -> Path:
    generator, kp_detector = build_models(SMALL_PARAMS)
    torch.save({"generator": generator.state_dict(), "kp_detector": kp_detector.state_dict(),
                "epoch": _Evil(os.system, (f"touch {marker}",))}, path)
    return path


def _wrong_shape(path: Path) -> Path:
    generator, kp_detector = build_models(SMALL_PARAMS)
    state = generator.state_dict()
    state["final.weight"] = torch.zeros(3, 8, 3, 3)  # 7x7 in this architecture
    torch.save({"generator": state, "kp_detector": kp_detector.state_dict()}, path)
    return path


def _error_case(case: str, small: SmallModels, tmp: Path) -> tuple[list[str], str]:
    """(convert arguments, a word the message must contain)."""
    ckpt = str(small.checkpoint("legacy"))
    out = tmp / "out"
    size = ["--size", f"{SIZE}x{SIZE}"]
    if case == "missing":
        return ["convert", str(tmp / "nowhere.pth.tar"), "--out", str(out)], "not found"
    if case == "not-a-checkpoint":
        (tmp / "notes.pth.tar").write_text("these are not weights\n")
        return ["convert", str(tmp / "notes.pth.tar"), "--out", str(out)], "not a PyTorch checkpoint"
    if case == "malicious":
        return ["convert", str(_malicious(tmp / "evil.pth.tar", tmp / "MARKER")), "--out", str(out)], "malicious"
    if case == "config-mismatch":
        return ["convert", ckpt, "--config", "mgif", "--out", str(out), *size], "does not match"
    if case == "wrong-shape":
        return ["convert", str(_wrong_shape(tmp / "bad.pth.tar")), "--out", str(out), *size], "final.weight"
    if case == "bad-size":
        return ["convert", ckpt, "--out", str(out), "--size", "60x60"], "multiples of"
    if case == "not-a-model-dir":
        out.mkdir()
        (out / "holiday.jpg").write_bytes(b"\xff\xd8\xff")
        return ["convert", ckpt, "--out", str(out), *size], "not a livepuppet model folder"
    if case == "out-is-a-file":
        out.write_text("x")
        return ["convert", ckpt, "--out", str(out), *size], "not a livepuppet model folder"
    if case == "parent-is-a-file":
        (tmp / "file").write_text("x")
        return ["convert", ckpt, "--out", str(tmp / "file" / "model"), *size], "cannot write"
    if case == "unwritable":
        locked = tmp / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        return ["convert", ckpt, "--out", str(locked / "model"), *size], "cannot write"
    raise AssertionError(case)


ERROR_CASES = ["missing", "not-a-checkpoint", "malicious", "config-mismatch", "wrong-shape", "bad-size",
               "not-a-model-dir", "out-is-a-file", "parent-is-a-file", "unwritable"]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_convert_errors_are_one_line(small: SmallModels, tmp_path: Path, case: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    if case == "unwritable" and os.geteuid() == 0:
        pytest.skip("root writes through a read-only mode (parent-is-a-file covers root)")
    args, word = _error_case(case, small, tmp_path)
    capsys.readouterr()
    try:
        assert main(args) == 2
    finally:
        if case == "unwritable":
            (tmp_path / "locked").chmod(0o755)
    line = _error_line(capsys)
    print(f"\n{case}: {line}")
    assert word in line
    if case not in ("not-a-model-dir", "out-is-a-file"):
        assert not (tmp_path / "out").exists()
    assert not (tmp_path / "MARKER").exists()
    assert _leftovers(tmp_path) == []


def test_existing_model_folder_is_an_accepted_destination(small: SmallModels, tmp_path: Path) -> None:
    from livepuppet.conversion.export import check_destination

    check_destination(small.model("legacy-fp32-b1"))
    check_destination(tmp_path / "new" / "deeper" / "model")
    (tmp_path / "empty").mkdir()
    check_destination(tmp_path / "empty")
    with pytest.raises(LivepuppetError):
        check_destination(small.checkpoint("legacy"))


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "livepuppet.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("case", ["missing", "malicious", "config-mismatch"])
def test_convert_errors_in_a_subprocess(small: SmallModels, tmp_path: Path, case: str) -> None:
    """The real command: exit 2, one stderr line, no traceback, nothing run from the pickle."""
    args, word = _error_case(case, small, tmp_path)
    proc = _cli(*args)
    print(f"\n{case}: rc={proc.returncode} stderr={proc.stderr!r}")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("livepuppet: error: ") and word in proc.stderr
    assert not (tmp_path / "MARKER").exists()
    assert not (tmp_path / "out").exists()


def test_malicious_pickle_with_a_plain_pickle_payload_is_refused(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "plain.pth.tar"
    path.write_bytes(pickle.dumps(_Evil(os.system, (f"touch {marker}",))))
    assert main(["convert", str(path), "--out", str(tmp_path / "out")]) == 2
    _error_line(capsys)
    assert not marker.exists()


# --------------------------------------------------------------------------- the full vox-256 architecture


VOX_FRAMES = 3


@pytest.fixture(scope="session")
def vox_fp32(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A random-weight vox-256 checkpoint converted at fp32 (batch 1) with the trained numerics, and
    PyTorch's results on a short video with every grid_sample at align_corners=True."""
    from livepuppet.commands.convert import convert_checkpoint
    from tests.reference import normalize_kp

    root = tmp_path_factory.mktemp("vox")
    generator, kp_detector = make_checkpoint(root / "vox-random.pth.tar", VOX_PARAMS, seed=0)
    start = time.perf_counter()
    folder = convert_checkpoint(root / "vox-random.pth.tar", root / "vox-fp32", numerics="trained")
    seconds = time.perf_counter() - start
    print(f"\nvox-256 fp32 converted in {seconds:.1f} s")

    source = random_frames(1, 256, 256, seed=1)
    driving = random_video(VOX_FRAMES, 256, 256, seed=2, speed=0.03)
    with torch.no_grad():
        original = animate_reference(generator, kp_detector, to_torch_nchw(source), to_torch_nchw(driving))
    with torch.no_grad(), trained_numerics():
        kp_source = kp_detector(to_torch_nchw(source))
        kp_driving = kp_detector(to_torch_nchw(driving))
        initial = {k: v[:1] for k, v in kp_driving.items()}
        norm = [normalize_kp(kp_source, {k: v[i:i + 1] for k, v in kp_driving.items()}, initial, True, True, True)
                for i in range(VOX_FRAMES)]
        generated = torch.cat([generator(to_torch_nchw(source), kp_driving=n, kp_source=kp_source)["prediction"]
                               for n in norm])
        norm = {k: torch.cat([n[k] for n in norm]) for k in norm[0]}
        animation = animate_reference(generator, kp_detector, to_torch_nchw(source), to_torch_nchw(driving))
    numpy = lambda kp: {k: v.numpy() for k, v in kp.items()}  # noqa: E731
    return {"folder": folder, "checkpoint": root / "vox-random.pth.tar", "seconds": seconds, "source": source, "driving": driving,
            "kp_source": numpy(kp_source), "kp_driving": numpy(kp_driving), "kp_norm": numpy(norm),
            "generated": generated.numpy().transpose(0, 2, 3, 1), "animation": animation.numpy().transpose(0, 2, 3, 1),
            "animation_original": original.numpy().transpose(0, 2, 3, 1)}


@pytest.mark.slow
def test_vox256_default_convert_is_lean(vox_fp32: dict) -> None:
    """What a default convert writes for vox-256: the two CPU engines' files, at most 2.2x the checkpoint."""
    model = read_folder(vox_fp32["folder"])
    checkpoint = vox_fp32["checkpoint"].stat().st_size
    total = sum(p.stat().st_size for p in vox_fp32["folder"].rglob("*") if p.is_file())
    print(f"\nvox-256 default convert: {total / 1e6:.0f} MB for a {checkpoint / 1e6:.0f} MB checkpoint "
          f"({total / checkpoint:.2f}x); tflite {model.total_bytes('tflite') / 1e6:.0f} MB, "
          f"openvino {model.total_bytes('openvino') / 1e6:.0f} MB (the .tflite files and the plain generator)")
    assert model.backends() == {"tflite", "openvino"}
    assert total == model.total_bytes() + (vox_fp32["folder"] / "manifest.json").stat().st_size
    assert total <= 2.2 * checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["tflite", "openvino"])
def test_vox256_fp32_matches_pytorch(vox_fp32: dict, engine: str) -> None:
    """Each converted model matches PyTorch within 1e-4 on the full vox-256 architecture.

    End to end the bound is looser: the keypoint detector's float error (~1e-5 at 256x256; its
    softmax divides the logits by a temperature of 0.1) is amplified by the generator's
    sensitivity to keypoint positions (three keypoint sets add up in relative mode), which puts
    a few pixels of the animation at 1e-4 to 2e-4 on the TFLite engine (measured: max 5.8e-5 on
    these 3 frames, 1.2e-4 to 2.1e-4 on 4 frames in benchmarks/convert_vox.py; mean ~2e-6).
    """
    from livepuppet.conversion.targets.tflite import tflite_ops
    from livepuppet.runtime.choose import open_engine
    from livepuppet.runtime.engines import Keypoints, SourceData
    from livepuppet.runtime.pipeline import Pipeline

    v = vox_fp32
    model = read_folder(v["folder"])
    assert model.frame_size == (256, 256) and model.num_kp == 10 and model.batch == 1
    for network in MODEL_NAMES:
        ops = tflite_ops(model.file(model.find(network, "tflite")))
        assert not [op for op in ops if "FLEX" in op.upper() or "CUSTOM" in op.upper()]
    eng = open_engine(v["folder"], engine, exact=True)
    kp_torch = lambda kp: Keypoints(kp["value"], kp["jacobian"])  # noqa: E731

    src = eng.encode_source(v["source"])
    drv = eng.detect_keypoints(v["driving"])
    errors = {
        "kp_detector": max(float(np.abs(drv.value - v["kp_driving"]["value"]).max()),
                           float(np.abs(drv.jacobian - v["kp_driving"]["jacobian"]).max()),
                           float(np.abs(src.keypoints.value - v["kp_source"]["value"]).max())),
    }
    norm = eng.process_keypoints(kp_torch(v["kp_source"]), kp_torch(v["kp_driving"]),
                                 kp_torch(v["kp_driving"])[0], True, True)
    errors["kp_processing"] = max(float(np.abs(norm.value - v["kp_norm"]["value"]).max()),
                                  float(np.abs(norm.jacobian - v["kp_norm"]["jacobian"]).max()))
    # generator (and source encoder) fed PyTorch's keypoints: no keypoint error to amplify
    pred = eng.generate(kp_torch(v["kp_norm"]), SourceData(kp_torch(v["kp_source"]), src.features, src.source_small))
    errors["generator"] = float(np.abs(pred - v["generated"]).max())

    pipe = Pipeline(eng)
    pipe.set_source(v["source"][0])
    got = pipe.animate(v["driving"])
    end_to_end = np.abs(got - v["animation"])
    sizes = {m: model.find(m, "tflite").files[0].bytes for m in MODEL_NAMES}
    print(f"\nvox-256 fp32 {engine}: per model {{{', '.join(f'{k}: {e:.2e}' for k, e in errors.items())}}}; "
          f"animation max abs {end_to_end.max():.2e}, mean {end_to_end.mean():.2e}; .tflite bytes {sizes}")
    apart = np.abs(v["animation"] - v["animation_original"]) * 255
    print(f"the reference's two numerics on these frames: {apart.mean():.3f} levels mean, {apart.max():.2f} max apart")
    for name, err in errors.items():
        assert err <= 1e-4, name
    assert got.shape == v["animation"].shape
    assert end_to_end.max() <= 1e-3
    assert end_to_end.mean() <= 1e-5


def _astronaut_clip(frames: int) -> tuple[np.ndarray, np.ndarray]:
    """A real face photo (scikit-image's astronaut) as source, and the same face moving as driving video."""
    import cv2
    from skimage import data

    face = cv2.resize(data.astronaut()[0:300, 85:385], (256, 256), interpolation=cv2.INTER_AREA)
    face = face.astype(np.float32) / 255
    driving = []
    for i in range(frames):
        matrix = cv2.getRotationMatrix2D((128, 128), 8.0 * np.sin(i), 1 + 0.05 * np.cos(i))
        matrix[:, 2] += (6 * np.sin(1.3 * i), 4 * np.cos(0.7 * i))
        driving.append(cv2.warpAffine(face, matrix, (256, 256), borderMode=cv2.BORDER_REFLECT))
    return face[None], np.stack(driving)


# bf16 against fp32 on vox-256 and a real face. On these test weights (the factory's heads are tuned
# to be sharp: heatmap peaks 0.25, mask logits std 1.5) bf16 is far over issue 11's budget of 0.3 mean /
# 3 max levels: measured 1.98 mean / 44.6 max with fp32 keypoints, 5.6 / 127 with bf16 keypoints, on
# both graphs (Zen 4, AVX512-BF16); bench's random weights give 0.13 / 2.5 on the bundled face. So the
# bound here is the measured error with margin, and the budget is enforced where it matters: auto
# measures on the user's own model and must then refuse bf16 for this one.
BF16_MEASURED_BOUND = {"mean": 3.0, "max": 70.0}


@pytest.mark.slow
def test_vox256_bf16_error_and_auto_keeps_to_the_budget(vox_fp32: dict) -> None:
    """OpenVINO at the CPU's reduced precision against the fp32 TFLite engine, on a real face; auto's pick
    for this folder stays within the budget whatever bf16 does. On a CPU without bf16 the reduced
    precision is fp32 itself; the CPU-forcing tests in test_openvino.py cover the choice."""
    from livepuppet.runtime import choose, timing
    from livepuppet.runtime.choose import open_engine
    from livepuppet.runtime.pipeline import Pipeline

    source, driving = _astronaut_clip(4)
    results = {}
    for name, kind in (("fp32", "tflite"), ("fast", "openvino")):  # openvino: reduced, keypoints at fp32
        engine = open_engine(vox_fp32["folder"], kind)
        pipe = Pipeline(engine)
        pipe.set_source(source[0])
        results[name] = pipe.animate(driving)
    diff = np.abs(results["fast"] - results["fp32"]) * 255
    print(f"\nvox-256 {engine.label} vs tflite fp32 on the astronaut: mean "
          f"{diff.mean():.3f} max {diff.max():.2f} levels")
    assert diff.mean() <= BF16_MEASURED_BOUND["mean"] and diff.max() <= BF16_MEASURED_BOUND["max"]
    chosen = open_engine(vox_fp32["folder"], "auto")
    (entry,) = json.loads(choose.cache_file(read_folder(vox_fp32["folder"])).read_text()).values()
    print(f"auto picked {chosen.label}: {entry['mean']:.3f} mean / {entry['max']:.2f} max levels")
    assert entry["mean"] <= timing.BUDGET["mean"] and entry["max"] <= timing.BUDGET["max"]
