"""Issue 23: ``--engine onnx`` (ONNX Runtime) against the PyTorch reference, its provider choice, its placement
report, and the ONNX graph convert writes.

The SMALL model folders come from test_convert's session cache; its float32 ones
hold ONNX models beside the .tflite files (``--targets ...,onnx``; the test extra
installs tf2onnx and ONNX Runtime). Only the CPU provider exists here: the provider choice
is tested on forced provider lists, and the GPU providers on a lent GPU
(tests marked ``gpu``; benchmarks/gpu_check.py measures them).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from livepuppet.cli import main
from livepuppet.errors import LivepuppetError, ModelFolderError
from livepuppet.modelfolder.read import read_folder
from livepuppet.modelfolder.schema import NETWORKS as MODEL_NAMES
from livepuppet.runtime import cpu
from livepuppet.runtime.choose import open_engine
from livepuppet.runtime import devices
from livepuppet.runtime.devices import BY_NAME, resolve
from livepuppet.runtime.engines import onnx as onnx_engine
from livepuppet.runtime.engines.onnx import ONNXEngine, describe_placement, provider_list
from livepuppet.runtime.plan import Machine, Request, candidates
from livepuppet.runtime.pipeline import Pipeline
from tests.test_convert import SmallModels

FP32_TOLERANCE = 1e-4  # as every float32 engine (prediction in [0, 1]); measured 5.5e-6 on SMALL


def _animate(engine, small: SmallModels, relative: bool = True, adapt_scale: bool = True) -> np.ndarray:
    pipe = Pipeline(engine, relative=relative, adapt_scale=adapt_scale)
    pipe.set_source(small.source[0])
    return pipe.animate(small.driving)


@pytest.fixture(scope="module")
def engine(small: SmallModels) -> ONNXEngine:
    return open_engine(small.model("zip-fp32-dynamic"), "onnx", threads=2)


# --------------------------------------------------------------------------- against PyTorch


@pytest.mark.parametrize("relative,adapt_scale", [(True, True), (False, False), (True, False), (False, True)])
def test_onnx_engine_matches_pytorch(small: SmallModels, engine: ONNXEngine, relative: bool,
                                     adapt_scale: bool) -> None:
    """The CPU provider, every motion mode (the switches are (1,) inputs in this graph): float32 to the last level."""
    got = _animate(engine, small, relative, adapt_scale)
    err = np.abs(got - small.reference(relative, adapt_scale))
    print(f"\nonnx CPU relative={relative} adapt_scale={adapt_scale}: max abs err {err.max():.2e} "
          f"({err.max() * 255:.3f} levels), mean {err.mean() * 255:.4f} levels")
    assert engine.label == "onnx fp32"
    assert err.max() <= FP32_TOLERANCE
    assert got.shape == (len(small.driving), 64, 64, 3) and got.dtype == np.float32


def test_static_batch_onnx_matches_batch_one(small: SmallModels) -> None:
    """5 frames through the batch-4 folder's ONNX models (one full call, one padded) equal the batch-1 folder's
    to float32 rounding (measured 5.6e-6: another batch size, another blocking of the same convolutions)."""
    b4, b1 = (open_engine(small.model(key), "onnx", threads=2) for key in ("legacy-fp32-b4", "legacy-fp32-b1"))
    assert np.abs(_animate(b4, small) - _animate(b1, small)).max() <= 2e-5


def test_onnx_graph_uses_gridsample_and_standard_ops(small: SmallModels) -> None:
    """Each warp is ONNX's GridSample (no gathers), upsampling is the standard 'asymmetric' nearest, opset 17."""
    model = read_folder(small.model("legacy-fp32-b1"))
    generator = onnx.load(str(model.file(model.find("generator", "onnx"))))
    ops = [n.op_type for n in generator.graph.node]
    assert ops.count("GridSample") == 2 and "Gather" not in ops and "PyFuncStateless" not in ops
    assert [o.version for o in generator.opset_import] == [17] and generator.opset_import[0].domain == ""
    for name in MODEL_NAMES:
        for node in onnx.load(str(model.file(model.find(name, "onnx")))).graph.node:
            if node.op_type == "Resize":
                mode = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                assert mode["coordinate_transformation_mode"] == b"asymmetric", name
    variants = [model.find(name, "onnx") for name in MODEL_NAMES]
    assert {v.graph for v in variants} == {"onnx"} and max(v.verified.max_abs for v in variants) <= FP32_TOLERANCE


# --------------------------------------------------------------------------- providers


CUDA, TRT, DML, COREML, OV, CPU = (BY_NAME[n] for n in ("cuda", "tensorrt", "directml", "coreml", "openvino", "cpu"))


@pytest.mark.parametrize("offered, device, expected", [
    ([TRT, CUDA, CPU], "gpu", "tensorrt"),
    ([TRT, CUDA, CPU], "auto", "tensorrt"),
    ([TRT, CUDA, CPU], "cuda", "cuda"),
    ([TRT, CUDA, CPU], "cpu", "cpu"),
    ([DML, CPU], "gpu", "directml"),
    ([COREML, CPU], "auto", "coreml"),
    ([OV, CPU], "auto", "openvino"),
    ([CPU], "auto", "cpu"),
])
def test_device_picks_the_best_provider_offered(offered, device: str, expected: str) -> None:
    assert resolve(device, offered).name == expected


@pytest.mark.parametrize("offered, device, words", [
    ([OV, CPU], "gpu", "no GPU provider (it offers: openvino, cpu)"),
    ([CPU], "cuda", "no CUDA provider (it offers: cpu)"),
    ([CPU], "npu", "unknown device 'npu'"),
])
def test_a_provider_not_offered_is_one_line(offered, device: str, words: str) -> None:
    with pytest.raises(LivepuppetError) as err:
        resolve(device, offered)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_provider_lists_fall_back_to_the_cpu(tmp_path: Path) -> None:
    """What ONNX Runtime is handed: the provider with its options, those behind it, then the CPU for the rest."""
    trt = provider_list(TRT, "fp16", tmp_path)
    assert [name for name, _ in trt] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert trt[0][1]["trt_fp16_enable"] is True and trt[0][1]["trt_engine_cache_path"] == str(tmp_path)
    assert provider_list(CUDA, "fp32", None) == [("CUDAExecutionProvider", {"use_tf32": 0}), ("CPUExecutionProvider", {})]
    assert provider_list(CUDA, "tf32", None)[0][1] == {"use_tf32": 1}
    assert provider_list(CPU, "fp32", None) == [("CPUExecutionProvider", {})]


def test_auto_times_each_provider_the_device_asks_for(small: SmallModels, monkeypatch) -> None:
    model = read_folder(small.model("legacy-fp32-b1"))
    machine = Machine(cpu.current(), frozenset({"tflite", "openvino", "onnx"}))

    def plans(device: str, exact: bool = False):
        return candidates(model, machine, Request(device=device, exact=exact))

    onnx_of = lambda device: [(p.device, p.precision) for p in plans(device) if p.engine == "onnx"]  # noqa: E731
    assert onnx_of("cpu") == [("cpu", "fp32")]
    monkeypatch.setattr(devices, "available", lambda: [TRT, CUDA, CPU])
    assert onnx_of("gpu") == [  # float32 first, the reference's kind
        ("tensorrt", "fp32"), ("cuda", "fp32"), ("tensorrt", "fp16"), ("cuda", "tf32")]
    assert [p.engine for p in plans("cuda")] == ["tflite", "onnx", "onnx"]
    # no Intel GPU here: --device gpu leaves OpenVINO out instead of failing on it
    assert "openvino" not in [p.engine for p in plans("gpu")]
    assert [(p.device, p.precision) for p in plans("gpu", exact=True) if p.engine == "onnx"] == [
        ("tensorrt", "fp32"), ("cuda", "fp32")]
    assert [p.label for p in plans("tensorrt") if p.engine == "onnx"] == ["onnx fp32 on tensorrt",
                                                                           "onnx fp16 on tensorrt"]


def test_placement_is_recorded_after_the_first_frame(small: SmallModels, tmp_path: Path) -> None:
    """After each model's first call the engine knows which provider ran each op, and keeps it for doctor."""
    folder = tmp_path / "model"
    shutil.copytree(small.model("legacy-fp32-b1"), folder)
    engine = open_engine(folder, "onnx", threads=2)
    assert engine.placement == {}
    _animate(engine, small)
    assert set(engine.placement) == set(MODEL_NAMES)
    generator = engine.placement["generator"]
    assert list(generator) == ["CPU"] and generator["CPU"]["GridSample"] == 2
    assert onnx_engine.read_placement(read_folder(folder)) == {"cpu": engine.placement}  # in the user's cache
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in small.model("legacy-fp32-b1").iterdir())
    assert describe_placement(generator).startswith("all ") and describe_placement(generator).endswith(" on CPU")
    mixed = {"CoreML": {"Conv": 30, "Relu": 20}, "CPU": {"GridSample": 2, "Resize": 1}}
    assert describe_placement(mixed) == "50 on CoreML; 3 on CPU (GridSample 2, Resize 1)"


# --------------------------------------------------------------------------- bad input


def test_folder_without_onnx_models_is_one_line(small: SmallModels, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "old"
    shutil.copytree(small.model("legacy-fp32-b1"), folder)
    doc = json.loads((folder / "manifest.json").read_text())
    doc["variants"] = [v for v in doc["variants"] if v["backend"] != "onnx"]
    (folder / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFolderError, match="has no onnx models.*--targets onnx"):
        open_engine(folder, "onnx")
    assert not [p for p in candidates(read_folder(folder), Machine.current(), Request()) if p.engine == "onnx"]
    capsys.readouterr()
    assert main(["bench", "--model", str(folder), "--engine", "onnx", "--repeats", "1"]) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("livepuppet: error:")]
    assert "has no onnx models" in line and "--targets onnx" in line and "Traceback" not in err


def test_a_damaged_onnx_file_is_one_line(small: SmallModels, tmp_path: Path) -> None:
    folder = tmp_path / "damaged"
    shutil.copytree(small.model("legacy-fp32-b1"), folder)
    path = folder / "onnx" / "generator.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelFolderError, match="generator.onnx .*truncated or replaced.*convert the checkpoint again"):
        open_engine(folder, "onnx")
    doc = json.loads((folder / "manifest.json").read_text())  # its size listed to match: ONNX Runtime refuses it
    for v in doc["variants"]:
        for f in v["files"]:
            if f["path"] == "onnx/generator.onnx":
                f["bytes"] = 1000
    (folder / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFolderError, match="ONNX Runtime cannot load .*generator.onnx.*convert again"):
        open_engine(folder, "onnx")


def test_without_onnxruntime_the_engine_says_how_to_get_it(small: SmallModels, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(LivepuppetError, match=r"needs ONNX Runtime \(pip install 'livepuppet\[onnx\]'"):
        open_engine(small.model("legacy-fp32-b1"), "onnx")
    assert devices.available() == []
    assert not [p for p in candidates(read_folder(small.model("legacy-fp32-b1")), Machine.current(), Request())
                if p.engine == "onnx"]


# --------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@pytest.mark.parametrize("device", ["cuda", "tensorrt", "directml", "coreml"])
def test_onnx_on_a_gpu_provider(small: SmallModels, device: str) -> None:
    """Needs a GPU and the onnxruntime build for it (none on CI or this machine): float32 within 1e-3 of PyTorch,
    the model's ops on that provider (what falls back to the CPU is printed)."""
    if BY_NAME[device] not in devices.available():
        pytest.skip(f"this onnxruntime build has no {BY_NAME[device].label} provider")
    engine = open_engine(small.model("legacy-fp32-b1"), "onnx", device=device)
    err = np.abs(_animate(engine, small) - small.reference())
    print(f"\n{engine.label}: max abs err {err.max():.2e}; "
          + "; ".join(f"{m}: {describe_placement(p)}" for m, p in engine.placement.items()))
    assert err.max() <= 1e-3
    assert BY_NAME[device].label in engine.placement["generator"]
