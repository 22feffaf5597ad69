"""Issue 20: the int8 generator of ``convert --fast``, its mixed-precision plan, and auto's choice of it.

Two SMALL models with bench's random weights (``bench.random_state``): one
whose first bottleneck convolution reads an outlier channel (int8 over the
budget until the plan keeps that one convolution in float: weights that
quantise well once planned), one with outliers before most of the decoder's
work (over the budget at any plan int8 is worth: weights that do not).
CPU-dependent paths: the VNNI kernels are forced with oneDNN's
``ONEDNN_MAX_CPU_ISA`` in a subprocess, a CPU without int8 dot products with
``cpu.forced``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from livepuppet.cli import main
from livepuppet.commands.bench import random_state
from livepuppet.errors import LivepuppetError
from livepuppet.fomm import config as cfgmod
from livepuppet.modelfolder.manifest import read_manifest
from livepuppet.runtime import cpu
from livepuppet.runtime.engines import auto, open_engine, open_from_args
from tests.reference import SMALL_PARAMS

pytest.importorskip("nncf")

ROOT = Path(__file__).resolve().parent.parent
SIZE = 64
ONE_OUTLIER = ("bottleneck.r0.conv1",)
OUTLIERS_EVERYWHERE = ("bottleneck.r0.conv1", "bottleneck.r0.conv2", "bottleneck.r1.conv1", "bottleneck.r1.conv2",
                       "up_blocks.1.conv", "final")
NO_INT8 = ("amx_int8", "avx512_vnni", "avx_vnni")


def _checkpoint(path: Path, outliers: tuple[str, ...]) -> Path:
    cfg = cfgmod.from_dict({"model_params": SMALL_PARAMS, "dataset_params": {"frame_shape": [SIZE, SIZE, 3]}})
    generator, kp_detector = random_state(cfg, seed=0, outliers=outliers)
    torch.save({name: {k: torch.from_numpy(v) for k, v in state.items()}
                for name, state in (("generator", generator), ("kp_detector", kp_detector))}, path)
    return path


def _fast_folder(factory: pytest.TempPathFactory, name: str, outliers: tuple[str, ...]) -> Path:
    root = factory.mktemp(name)
    out = root / "model"
    assert main(["convert", str(_checkpoint(root / "ckpt.pth.tar", outliers)), "--out", str(out),
                 "--size", f"{SIZE}x{SIZE}", "--fast"]) == 0
    return out


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not cpu.current().int8:
        pytest.skip("this CPU has no int8 dot products: test_fast_needs_int8_dot_products covers it")
    return _fast_folder(tmp_path_factory, "planned", ONE_OUTLIER)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not cpu.current().int8:
        pytest.skip("this CPU has no int8 dot products: test_fast_needs_int8_dot_products covers it")
    return _fast_folder(tmp_path_factory, "hostile", OUTLIERS_EVERYWHERE)


def _fast(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())["fast"]


def test_plan_keeps_the_sensitive_convolution_in_float(planned: Path) -> None:
    """Every convolution at int8 is over the budget; the plan measures each group, keeps the most sensitive
    in float, and the generator it writes is within the budget, with exactly that group's int8 undone."""
    import openvino as ov

    from livepuppet.conversion.int8_graph import groups

    fast = _fast(planned)
    plan = fast["plan"]
    print(f"\nplan: {plan['reason']}; all int8 {plan['all_int8']}, float {plan['float_only']}, planned "
          f"{plan['mean']:.3f} / {plan['max']:.2f}; most sensitive {plan['groups'][0]}")
    assert not auto.within_budget(*plan["all_int8"]) and auto.within_budget(*plan["float_only"])
    assert plan["kept"] == [plan["groups"][0]["label"]]
    assert plan["groups"][0]["mean"] > 2 * max(g["mean"] for g in plan["groups"][1:])  # the outlier's, by far
    assert auto.within_budget(plan["mean"], plan["max"]) and fast["within_budget"]
    manifest = read_manifest(planned)
    int8 = ov.Core().read_model(str(manifest.path("generator", "openvino_int8")))
    still_int8 = {name for group in groups(int8) for name in group.convs}
    assert still_int8 and not still_int8 & set(plan["kept_convs"])
    assert len(still_int8) + len(plan["kept_convs"]) == sum(len(g["convs"]) for g in plan["groups"])
    assert manifest.model("kp_detector").get("openvino_int8")
    assert fast["kp_precision"] in fast["kp_errors"]
    assert plan["seconds"] < 60


def test_plan_stops_where_int8_stops_paying(hostile: Path) -> None:
    """Outliers before most of the work: the plan gives back to float at most half of it, stays over the
    budget, and says so; the folder records it as over."""
    from livepuppet.conversion.int8_plan import MAX_FLOAT_SHARE

    fast = _fast(hostile)
    plan = fast["plan"]
    print(f"\nplan: {plan['reason']}; planned {plan['mean']:.3f} / {plan['max']:.2f}; kept {plan['kept']}")
    assert not fast["within_budget"] and "over the budget" in plan["reason"]
    assert 0 < plan["float_gflop"] <= MAX_FLOAT_SHARE * (plan["float_gflop"] + plan["int8_gflop"])


def _choose_with_int8_fastest(folder: Path, monkeypatch) -> tuple[list, auto.Measured]:
    """auto.choose with each candidate's real frames and errors, timed as if int8 were the fastest: whether
    it is picked then depends on its measured error alone (SMALL's timings say nothing about vox-256's)."""
    real = auto.measure

    def measure(engine, *args):
        frames, _, _ = real(engine, *args)
        ms = 1.0 if engine.label.startswith("openvino int8") else 2.0
        return frames, ms, ms

    monkeypatch.setattr(auto, "measure", measure)
    return auto.choose(read_manifest(folder))


def test_auto_picks_int8_exactly_when_within_budget(planned: Path, hostile: Path, monkeypatch) -> None:
    for folder in (planned, hostile):
        results, winner = _choose_with_int8_fastest(folder, monkeypatch)
        (int8,) = [r for r in results if r.candidate.precision == "int8"]
        fast = _fast(folder)
        print(f"\n{folder.parent.name}: int8 {int8.mean:.3f} / {int8.max:.2f} (recorded {fast['mean_levels']:.3f} / "
              f"{fast['max_levels']:.2f}); auto picks {winner.candidate.label}")
        assert int8.candidate.kp_precision == auto.fast_kp_precision(read_manifest(folder))
        assert int8.mean == pytest.approx(fast["mean_levels"], abs=1e-3)
        assert (winner.candidate == int8.candidate) == int8.within_budget == fast["within_budget"]
    assert _fast(planned)["within_budget"] and not _fast(hostile)["within_budget"]


def test_fast_forces_int8_and_bench_states_its_error_and_floor(hostile: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "240")  # the whole engines table
    engine = open_from_args(hostile, argparse.Namespace(engine="auto", fast=True, exact=False, threads=None))
    assert engine.label.startswith("openvino int8")
    assert main(["bench", "--model", str(hostile), "--repeats", "1"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
    line = out[out.index("(--fast)"):][:300]
    print(f"\n{line}")
    fast = _fast(hostile)
    assert f"{fast['mean_levels']:.2f} mean" in line and "original FOMM" in line and "x its floor" in line
    assert "peak int8" in out and "over budget" in out


def test_int8_runs_on_vnni_where_amx_is_hidden(planned: Path) -> None:
    """oneDNN capped below AMX (as on a VNNI-only CPU): livepuppet sees the cap, the int8 generator runs on
    VNNI kernels, and computes what it computes on AMX (both exact int8 arithmetic, up to float parts)."""
    if cpu.current().int8 != "AMX-INT8":
        pytest.skip("the other side (AMX-INT8 hidden) needs an AMX CPU; on VNNI this is the native path")
    script = f"""
import json, numpy as np
from livepuppet.runtime import cpu
from livepuppet.runtime.engines import auto, open_engine
assert cpu.current().int8 == "AVX512-VNNI", cpu.current().simd
import openvino as ov
from livepuppet.modelfolder.manifest import read_manifest
manifest = read_manifest({str(planned)!r})
hint = {{"PERF_COUNT": True, "INFERENCE_PRECISION_HINT": "f32"}}  # as the engine asks where bf16 is hidden
compiled = ov.Core().compile_model(str(manifest.path("generator", "openvino_int8")), "CPU", hint)
request = compiled.create_infer_request()
from livepuppet.conversion.quantize import generator_inputs
request.infer(generator_inputs(open_engine(manifest.folder, "openvino", exact=True), 1, 0)[0])
kinds = sorted({{p.exec_type for p in request.get_profiling_info() if p.node_type == "Convolution"}})
engine = open_engine(manifest.folder, "openvino", precision="int8", kp_precision=auto.fast_kp_precision(manifest))
frames, _, _ = auto.measure(engine)
print(json.dumps({{"kinds": kinds, "frames": frames.tolist()}}))
"""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    manifest = read_manifest(planned)
    here, _, _ = auto.measure(open_engine(planned, "openvino", precision="int8",
                                          kp_precision=auto.fast_kp_precision(manifest)))
    diff = np.abs(np.asarray(result["frames"]) - here) * 255
    print(f"\nVNNI kernels {result['kinds']}; VNNI (fp32 float parts) vs AMX: {diff.mean():.3f} mean / "
          f"{diff.max():.2f} max levels")
    assert any("I8" in k for k in result["kinds"]) and not any("amx" in k or "bf16" in k for k in result["kinds"])
    assert diff.mean() < 0.2 and diff.max() < 3


def test_fast_needs_int8_dot_products(tmp_path: Path) -> None:
    """Without AMX-INT8 or VNNI, int8 would be slower than float: convert --fast and run --fast refuse in one
    line, and auto does not offer int8 (the folder's bf16/fp32 stay)."""
    assert sorted(cpu.hidden_by_isa_cap("AVX2") & {"amx_int8", "avx512_vnni", "avx_vnni"}) == sorted(NO_INT8)
    assert cpu.hidden_by_isa_cap("ALL") == frozenset() and cpu.hidden_by_isa_cap("") == frozenset()
    with cpu.forced(cpu.without(*NO_INT8)):
        assert cpu.current().int8 == ""
        with pytest.raises(LivepuppetError, match="int8 dot products"):
            open_from_args(tmp_path, argparse.Namespace(engine="auto", fast=True, exact=False, threads=None))
        from livepuppet.conversion.export import build

        with pytest.raises(LivepuppetError, match="int8 dot products"):
            build(None, None, tmp_path / "out", fast=True)  # refused before any work
    assert not (tmp_path / "out").exists()


def test_int8_candidate_follows_the_cpu(planned: Path) -> None:
    manifest = read_manifest(planned)
    with_int8 = [c.label for c in auto.candidates(manifest, cpu.current())]
    without = [c.label for c in auto.candidates(manifest, cpu.without(*NO_INT8))]
    assert any(label.startswith("openvino int8") for label in with_int8)
    assert not any(label.startswith("openvino int8") for label in without)
