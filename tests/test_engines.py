"""Issue 3: the converted models on both engines, against the PyTorch reference.

The model folders come from tests/test_convert.py's session cache (SmallModels),
so each is converted once however the two files are run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from livepuppet.conversion.targets.tflite import stored_precision
from livepuppet.errors import LivepuppetError, ModelFolderError
from livepuppet.modelfolder.read import read_folder
from livepuppet.modelfolder.schema import NETWORKS as MODEL_NAMES
from livepuppet.runtime.choose import open_engine
from livepuppet.runtime.engines import Engine, Keypoints, SourceData
from livepuppet.runtime.pipeline import Pipeline
from tests.test_convert import MATRIX, SIZE, SmallModels, shared_small_models

ROOT = Path(__file__).resolve().parent.parent

FP32_TOLERANCE = 1e-4
# Errors of the reduced-precision .tflite files, about 3x the largest measured on SMALL 64x64
# (see the printed errors): max and mean abs error of the animation (prediction in [0, 1]),
# and max abs error of the keypoints ([-1, 1] coordinates). Measured: fp16 max 2.6e-3..4.5e-3,
# mean 2.1e-4..3.6e-4, keypoints 7.4e-4..1.1e-3; int8 (dynamic range) max 7.4e-2, mean 8.1e-3,
# and its keypoints are exactly fp32's (int8 keeps the keypoint detector at float32; with int8
# keypoints it was max 1.0e-1..1.3e-1, mean 1.0e-2..1.2e-2, keypoints 2.6e-2..3.6e-2).
REDUCED_TOLERANCE = {
    "fp16": {"max": 1.5e-2, "mean": 1.1e-3, "keypoints": 3.5e-3},
    "int8": {"max": 0.25, "mean": 0.025, "keypoints": 1e-6},
}


_ENGINES: dict[tuple[str, str], Engine] = {}


def _engine(small: SmallModels, key: str, kind: str) -> Engine:
    if (key, kind) not in _ENGINES:
        _ENGINES[(key, kind)] = open_engine(small.model(key), kind, threads=2 if kind == "tflite" else None)
    return _ENGINES[(key, kind)]


def _animate(engine: Engine, source: np.ndarray, driving: np.ndarray, relative: bool = True,
             adapt_scale: bool = True) -> np.ndarray:
    pipe = Pipeline(engine, relative=relative, adapt_scale=adapt_scale)
    pipe.set_source(source[0])
    return pipe.animate(driving)


# --------------------------------------------------------------------------- parity with PyTorch


@pytest.mark.parametrize("engine", ["tflite", "savedmodel"])
@pytest.mark.parametrize("key", list(MATRIX))
def test_engine_matches_pytorch(small: SmallModels, key: str, engine: str) -> None:
    _, precision, batch, numerics = MATRIX[key]
    got = _animate(_engine(small, key, engine), small.source, small.driving)
    expected = small.reference(numerics=numerics)
    err = np.abs(got - expected)
    # The SavedModels are the fp32 graph whatever --precision says; only the .tflite files are reduced.
    exact = precision == "fp32" or engine == "savedmodel"
    limit = FP32_TOLERANCE if exact else REDUCED_TOLERANCE[precision]["max"]
    print(f"\n{key:20s} {engine:10s} batch={batch} max abs err {err.max():.2e} mean {err.mean():.2e} "
          f"(limit {limit:g})")
    assert got.shape == expected.shape == (len(small.driving), SIZE, SIZE, 3)
    assert got.dtype == np.float32
    assert err.max() <= limit
    if not exact:
        assert err.mean() <= REDUCED_TOLERANCE[precision]["mean"]
    assert float(np.abs(expected[0] - expected[-1]).mean()) > 1e-3  # the reference really moves


def test_trained_numerics_match_the_reference_patched_to_align_corners(small: SmallModels) -> None:
    """--numerics trained (the default is original), against the reference with every grid_sample at
    align_corners=True (the PyTorch 1.0 behaviour the published weights were trained with)."""
    got = _animate(_engine(small, "zip-fp32-b1-trained", "tflite"), small.source, small.driving)
    trained, original = small.reference(numerics="trained"), small.reference(numerics="original")
    err, apart = np.abs(got - trained) * 255, np.abs(trained - original) * 255
    print(f"\ntrained numerics: {err.max():.4f} levels max ({err.mean():.5f} mean) from the patched reference; "
          f"the two numerics {apart.max():.2f} max, {apart.mean():.3f} mean levels apart")
    assert err.max() <= 1.0
    assert apart.max() >= 20 * max(err.max(), 0.01)  # the switch changes the picture, far beyond the error
    assert read_folder(small.model("zip-fp32-b1-trained")).numerics == "trained"
    assert read_folder(small.model("legacy-fp32-b1")).numerics == "original"


@pytest.mark.parametrize("relative,adapt_scale", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("engine", ["tflite", "savedmodel"])
def test_motion_options_match_pytorch(small: SmallModels, engine: str, relative: bool, adapt_scale: bool) -> None:
    got = _animate(_engine(small, "zip-fp32-dynamic", engine), small.source, small.driving, relative, adapt_scale)
    err = np.abs(got - small.reference(relative, adapt_scale))
    print(f"\nrelative={relative} adapt_scale={adapt_scale} {engine}: max abs err {err.max():.2e}")
    assert err.max() <= FP32_TOLERANCE


@pytest.mark.parametrize("precision_key", ["legacy-fp16-dynamic", "zip-int8-b2"])
def test_reduced_precision_against_fp32(small: SmallModels, precision_key: str) -> None:
    precision = MATRIX[precision_key][1]
    fp32 = _animate(_engine(small, "zip-fp32-dynamic", "tflite"), small.source, small.driving)
    got = _animate(_engine(small, precision_key, "tflite"), small.source, small.driving)
    vs_fp32 = np.abs(got - fp32)
    vs_torch = np.abs(got - small.reference())
    print(f"\n{precision} tflite: vs fp32 tflite max {vs_fp32.max():.2e} mean {vs_fp32.mean():.2e}; "
          f"vs PyTorch max {vs_torch.max():.2e} mean {vs_torch.mean():.2e}")
    assert vs_fp32.max() <= REDUCED_TOLERANCE[precision]["max"]
    assert vs_fp32.mean() <= REDUCED_TOLERANCE[precision]["mean"]
    assert vs_fp32.max() > 0  # it really is another model
    # keypoints too: the reduced model still finds the same points (in [-1, 1] coordinates);
    # int8 keeps its keypoint detector at float32, so its keypoints are fp32's
    kp32 = _engine(small, "zip-fp32-dynamic", "tflite").detect_keypoints(small.driving)
    kp = _engine(small, precision_key, "tflite").detect_keypoints(small.driving)
    kp_err = float(np.abs(kp.value - kp32.value).max())
    print(f"{precision} keypoints vs fp32: max abs {kp_err:.2e}")
    assert kp_err <= REDUCED_TOLERANCE[precision]["keypoints"]
    model = read_folder(small.model(precision_key))
    stored = {m: model.find(m, "tflite").precision for m in MODEL_NAMES}
    assert stored == {m: stored_precision(m, precision) for m in MODEL_NAMES}


# --------------------------------------------------------------------------- static batches


@pytest.mark.parametrize("engine", ["tflite", "savedmodel"])
def test_static_batch_padding_matches_batch_one(small: SmallModels, engine: str) -> None:
    """5 frames through a batch-4 model (one full call, one padded) equal the batch-1 model's results."""
    b4, b1 = _engine(small, "legacy-fp32-b4", engine), _engine(small, "legacy-fp32-b1", engine)
    assert (b4.batch, b1.batch) == (4, 1)
    calls: list[tuple[str, int]] = []
    real_run = b4._run

    def spy(model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if model != "source_encoder":
            calls.append((model, len(inputs["image" if model == "kp_detector" else "driving_value"])))
        return real_run(model, inputs)

    b4._run = spy
    try:
        got = _animate(b4, small.source, small.driving)
    finally:
        del b4._run
    want = _animate(b1, small.source, small.driving)
    err = float(np.abs(got - want).max())
    print(f"\n{engine}: batch-4 (padded) vs batch-1 max abs diff {err:.2e}")
    assert got.shape == want.shape == (5, SIZE, SIZE, 3)
    assert err <= 1e-5
    # source keypoints: one padded call; the 5 driving frames: 4 + 1 padded, for each per-frame model
    assert calls == [("kp_detector", 4), ("kp_detector", 4), ("kp_detector", 4), ("kp_processing", 4),
                     ("kp_processing", 4), ("generator", 4), ("generator", 4)]


class _Recorder(Engine):
    """An engine whose models echo their batched input, to check the chunking without TensorFlow."""

    def __init__(self, batch: int | None):
        self.batch, self.frame_size, self.num_kp = batch, (4, 4), 3
        self.seen: list[int] = []

    def _run(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        image = inputs["image"]
        if self.batch is not None:
            assert len(image) == self.batch
        self.seen.append(len(image))
        n = len(image)
        return {"value": image[:, 0, :3, :2], "jacobian": np.zeros((n, 3, 2, 2), np.float32)}


@pytest.mark.parametrize("batch,frames,calls", [(4, 5, [4, 4]), (4, 4, [4]), (4, 1, [4]), (2, 7, [2, 2, 2, 2]),
                                                 (None, 5, [5]), (1, 3, [1, 1, 1])])
def test_batching_splits_and_pads_in_order(batch: int | None, frames: int, calls: list[int]) -> None:
    engine = _Recorder(batch)
    images = np.arange(frames * 4 * 4 * 3, dtype=np.float32).reshape(frames, 4, 4, 3)
    kp = engine.detect_keypoints(images)
    assert engine.seen == calls
    np.testing.assert_array_equal(kp.value, images[:, 0, :3, :2])
    assert kp.jacobian.shape == (frames, 3, 2, 2)


def test_keypoints_and_source_data_types(small: SmallModels) -> None:
    engine = _engine(small, "zip-fp32-dynamic", "tflite")
    src = engine.encode_source(small.source)
    assert isinstance(src, SourceData) and isinstance(src.keypoints, Keypoints)
    assert src.keypoints.value.shape == (1, 5, 2) and src.keypoints.jacobian.shape == (1, 5, 2, 2)
    assert src.features.shape == (1, SIZE // 4, SIZE // 4, 32)
    assert np.all(np.abs(src.keypoints.value) <= 1)
    assert engine.encode_source(small.source[0]).features.shape == src.features.shape  # (H, W, 3) too


# --------------------------------------------------------------------------- bad model folders


def _bad_folder(case: str, small: SmallModels, tmp: Path) -> tuple[Path, str]:
    folder = tmp / "model"
    if case == "missing":
        return folder, "not found"
    if case == "empty":
        folder.mkdir()
        return folder, "not a livepuppet model"
    if case == "photos":
        folder.mkdir()
        (folder / "face.png").write_bytes(b"\x89PNG\r\n")
        return folder, "not a livepuppet model"
    if case == "a-file":
        folder.write_text("x")
        return folder, "not found"
    shutil.copytree(small.model("legacy-fp32-b1"), folder)
    manifest = folder / "manifest.json"
    if case == "other-format":
        data = json.loads(manifest.read_text())
        data["format"], data["livepuppet_version"] = 99, "9.0"
        manifest.write_text(json.dumps(data))
        return folder, "format 99"
    if case == "damaged-manifest":
        manifest.write_text('{"format": 2, "variants": ')
        return folder, "damaged"
    if case == "incomplete-manifest":
        data = json.loads(manifest.read_text())
        del data["signatures"]["generator"]
        manifest.write_text(json.dumps(data))
        return folder, "signatures.generator is missing"
    if case == "missing-tflite":
        (folder / "generator.tflite").unlink()
        return folder, "generator"
    if case == "corrupt-tflite":
        (folder / "generator.tflite").write_bytes(b"\0" * 64)
        return folder, "generator"
    if case == "missing-savedmodel":
        shutil.rmtree(folder / "savedmodel" / "generator")
        return folder, "generator"
    raise AssertionError(case)


COMMON_CASES = ["missing", "empty", "photos", "a-file", "other-format", "damaged-manifest", "incomplete-manifest"]


@pytest.mark.parametrize("engine", ["tflite", "savedmodel"])
@pytest.mark.parametrize("case", COMMON_CASES)
def test_not_a_model_folder(small: SmallModels, tmp_path: Path, case: str, engine: str) -> None:
    folder, word = _bad_folder(case, small, tmp_path)
    with pytest.raises(ModelFolderError) as info:
        open_engine(folder, engine)
    message = str(info.value)
    print(f"\n{case}/{engine}: {message}")
    assert word in message and str(folder) in message and "\n" not in message
    if case == "other-format":
        assert "9.0" in message and "format 2" in message and "convert" in message


@pytest.mark.parametrize("case,engine", [("missing-tflite", "tflite"), ("corrupt-tflite", "tflite"),
                                         ("missing-savedmodel", "savedmodel")])
def test_damaged_model_files(small: SmallModels, tmp_path: Path, case: str, engine: str) -> None:
    folder, word = _bad_folder(case, small, tmp_path)
    with pytest.raises(ModelFolderError) as info:
        open_engine(folder, engine)
    print(f"\n{case}/{engine}: {info.value}")
    assert word in str(info.value) and "convert" in str(info.value)


def test_unknown_engine(small: SmallModels) -> None:
    with pytest.raises(LivepuppetError, match="unknown engine"):
        open_engine(small.model("legacy-fp32-b1"), "no-such-engine")


def test_folder_reader(small: SmallModels) -> None:
    model = read_folder(small.model("legacy-fp16-dynamic"))
    assert model.frame_size == (SIZE, SIZE) and model.num_kp == 5
    assert model.batch is None and model.find("generator", "tflite").precision == "fp16"
    assert model.file(model.find("generator", "tflite")).is_file()


# --------------------------------------------------------------------------- LiteRT without TensorFlow


NO_TF_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, importlib.util, sys
    from pathlib import Path

    blocked = []

    class NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tf_keras", "keras", "tensorflow_core"):
                blocked.append(name)
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, NoTensorFlow())
    import numpy as np
    from livepuppet.runtime.choose import open_engine
    from livepuppet.runtime.pipeline import Pipeline

    folder, work = Path(sys.argv[1]), Path(sys.argv[2])
    source, driving = np.load(work / "source.npy"), np.load(work / "driving.npy")
    engine = open_engine(folder, "tflite", threads=2)
    pipe = Pipeline(engine)
    pipe.set_source(source[0])
    np.save(work / "pipeline.npy", pipe.animate(driving))
    print("PIPELINE_OK", type(engine).__name__)

    from livepuppet.cli import main
    rc = main(["animate", "--model", str(folder), "--source", str(work / "source.png"),
               "--driving", str(work / "driving"), "--output", str(work / "out") + "/", "--batch", "2"])
    assert rc == 0, rc
    print("ANIMATE_OK")

    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
    assert not loaded, loaded
    assert not blocked, blocked  # nothing even tried to import TensorFlow
    print("NO_TENSORFLOW")
    """
)


def test_tflite_engine_runs_without_tensorflow(small: SmallModels, tmp_path: Path) -> None:
    import cv2

    folder = small.model("zip-fp32-dynamic")
    np.save(tmp_path / "source.npy", small.source)
    np.save(tmp_path / "driving.npy", small.driving)
    to_bgr8 = lambda f: cv2.cvtColor(np.round(f * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)  # noqa: E731
    cv2.imwrite(str(tmp_path / "source.png"), to_bgr8(small.source[0]))
    (tmp_path / "driving").mkdir()
    for i, frame in enumerate(small.driving):
        cv2.imwrite(str(tmp_path / "driving" / f"{i:03d}.png"), to_bgr8(frame))
    script = tmp_path / "no_tf.py"
    script.write_text(NO_TF_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    print(f"\nstdout: {proc.stdout}\nstderr tail: {proc.stderr[-2000:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PIPELINE_OK TFLiteEngine" in proc.stdout and "NO_TENSORFLOW" in proc.stdout

    got = np.load(tmp_path / "pipeline.npy")
    in_process = _animate(_engine(small, "zip-fp32-dynamic", "tflite"), small.source, small.driving)
    err = float(np.abs(got - small.reference()).max())
    print(f"no-TensorFlow subprocess vs PyTorch: max abs err {err:.2e}")
    assert err <= FP32_TOLERANCE
    assert float(np.abs(got - in_process).max()) <= 1e-6

    assert "ANIMATE_OK" in proc.stdout
    written = sorted((tmp_path / "out").glob("*.png"))
    print(f"animate wrote {len(written)} frames without TensorFlow")
    assert len(written) == len(small.driving)


@pytest.mark.gpu
def test_savedmodel_on_a_cuda_gpu(small: SmallModels) -> None:
    """Needs a CUDA GPU that TensorFlow sees (Linux, tensorflow[and-cuda]; none on CI or this machine): the savedmodel
    engine runs there, within 1e-3 of PyTorch (TF32 rounds convolutions on Ampere and later).
    benchmarks/gpu_check.py times it on vox-256."""
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("TensorFlow sees no GPU here")
    got = _animate(open_engine(small.model("legacy-fp32-b1"), "savedmodel"), small.source, small.driving)
    err = np.abs(got - small.reference())
    print(f"\nsavedmodel on {tf.config.list_physical_devices('GPU')[0].name}: max abs err {err.max():.2e}")
    assert err.max() <= 1e-3
