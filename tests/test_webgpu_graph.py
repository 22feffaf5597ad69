"""Issue 23: the browser graph (every op on LiteRT.js's WebGPU) and the ONNX graph compute the plain graph.

The graphs are compared in TensorFlow on the SMALL weights, and the browser
graph's ``.tflite`` files convert writes are read with the flatbuffer schema and
held to the rules LiteRT.js's WebGPU back end states when it refuses an op (see
livepuppet/fomm/modules/webgpu.py): the page test in tests/test_web.py then
checks LiteRT.js's own report in Chromium.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from livepuppet.conversion.graphs import networks, sample_inputs
from livepuppet.fomm import config as cfgmod
from livepuppet.fomm.checkpoint import load_checkpoint
from livepuppet.fomm.modules import FOMM, GRAPHS
from livepuppet.modelfolder.read import read_folder
from livepuppet.modelfolder.schema import NETWORKS as MODEL_NAMES
from tests.test_convert import SIZE, SmallModels


@pytest.fixture(scope="module")
def graphs(small: SmallModels) -> dict[str, FOMM]:
    ckpt = load_checkpoint(small.checkpoint("legacy"))
    cfg = cfgmod.infer(ckpt.generator, ckpt.kp_detector).with_frame_shape(SIZE, SIZE)
    return {name: FOMM(cfg, ckpt.generator, ckpt.kp_detector, rewrites=GRAPHS[name])
            for name in ("plain", "browser", "onnx")}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("graph", ["browser", "onnx"])
def test_graph_computes_the_plain_graph(graphs: dict[str, FOMM], graph: str, batch: int) -> None:
    """The same products and sums in the same order, laid out differently: equal to float32 rounding (measured 0)."""
    for plain, other in zip(networks(graphs["plain"], batch), networks(graphs[graph], batch)):
        inputs = sample_inputs(graphs["plain"], plain, batch)
        want = plain.fn(**{k: tf.constant(v) for k, v in inputs.items()})
        switches = {s.name: s.shape.as_list() for s in other.inputs}
        got = other.fn(**{k: tf.constant(np.reshape(v, switches[k])) for k, v in inputs.items()})
        for key in want:
            assert got[key].shape == want[key].shape, (plain.name, key)
            assert float(np.abs(got[key].numpy() - want[key].numpy()).max()) <= 1e-6, (graph, plain.name, key)


def _schema():
    from ai_edge_litert import schema_py_generated as fb

    return fb


def webgpu_problems(path: Path) -> list[str]:
    """Where a .tflite file breaks what LiteRT.js's WebGPU takes: a tensor above rank 4, a computed scalar,
    GATHER with indices of rank > 1, STRIDED_SLICE dropping an axis, an op version past 2 for STRIDED_SLICE
    or SUB, SUB of a tensor from itself."""
    fb = _schema()
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(path.read_bytes(), 0))
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    graph = model.subgraphs[0]
    constant = [model.buffers[t.buffer].data is not None for t in graph.tensors]
    rank = [0 if t.shape is None else len(t.shape) for t in graph.tensors]
    problems = [f"tensor {t.name.decode()} of rank {rank[i]}" for i, t in enumerate(graph.tensors)
                if rank[i] > 4 or (rank[i] == 0 and not constant[i])]
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = names[max(code.builtinCode, code.deprecatedBuiltinCode)]
        if name == "GATHER" and rank[op.inputs[1]] > 1:
            problems.append(f"GATHER with rank-{rank[op.inputs[1]]} indices")
        if name in ("STRIDED_SLICE", "SUB") and code.version > 2:
            problems.append(f"{name} version {code.version}")
        if name == "STRIDED_SLICE" and op.builtinOptions.shrinkAxisMask:
            problems.append("STRIDED_SLICE dropping an axis")
        if name == "SUB" and op.inputs[0] == op.inputs[1]:
            problems.append("SUB of a tensor from itself")
    return problems


def test_browser_graph_files_keep_to_webgpu(small: SmallModels) -> None:
    """The browser graph's files (``--targets web``): every op of all four keeps to WebGPU's rules, which the
    XNNPACK graph's files break."""
    model = read_folder(small.model("legacy-fp32-b1"))
    for name in MODEL_NAMES:
        assert webgpu_problems(model.file(model.find(name, "litertjs", "browser"))) == [], name
    broken = webgpu_problems(model.file(model.find("generator", "tflite"))) + webgpu_problems(
        model.file(model.find("kp_processing", "tflite")))
    print(f"\nthe XNNPACK graph's generator and keypoint processing break WebGPU's rules {len(broken)} times, e.g. "
          f"{sorted(set(broken))[:4]}")
    assert any("rank 5" in p for p in broken) and any("GATHER" in p for p in broken)
    assert any("rank 0" in p for p in broken)


def test_web_target_needs_one_frame_a_call(small: SmallModels, tmp_path: Path, capsys) -> None:
    from livepuppet.cli import main

    assert main(["convert", str(small.checkpoint("zip")), "--out", str(tmp_path / "m"), "--size", f"{SIZE}x{SIZE}",
                 "--batch", "2", "--targets", "tflite,web"]) == 2
    assert "--batch 1" in capsys.readouterr().err and not (tmp_path / "m").exists()
