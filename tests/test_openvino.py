"""The OpenVINO engine, the plan chosen for the CPU, ``--engine auto``, and ``--fast``.

The SMALL model folders come from test_convert's session cache. CPU-dependent
choices are tested on both sides with ``cpu.forced``, whatever this machine has.
"""

from __future__ import annotations

import gc
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from livepuppet.cli import main
from livepuppet.errors import LivepuppetError, ModelFolderError
from livepuppet.modelfolder.read import read_folder
from livepuppet.modelfolder.schema import NETWORKS
from livepuppet.runtime import choose, cpu, timing
from livepuppet.runtime.choose import open_engine
from livepuppet.runtime.engines.openvino import OpenVINOEngine, devices
from livepuppet.runtime.pipeline import Pipeline
from livepuppet.runtime.plan import Machine, Request, candidates, plan
from tests.test_convert import SmallModels

FP32_TOLERANCE = 1e-4
# bf16 on the SMALL test weights (whose heads are tuned to be sensitive), against PyTorch:
# measured max 0.11..0.15, mean 6e-3..9e-3 (Zen 4, AVX512-BF16); bounds at about 3x.
BF16_TOLERANCE = {"max": 0.4, "mean": 0.03}
NO_BF16 = ("avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
ALL_RUNTIMES = frozenset({"tflite", "openvino", "savedmodel"})
needs_bf16 = pytest.mark.skipif(not cpu.current().bf16, reason="this CPU computes no bf16 (AMX or AVX512-BF16)")


def _animate(engine, small: SmallModels) -> np.ndarray:
    pipe = Pipeline(engine)
    pipe.set_source(small.source[0])
    return pipe.animate(small.driving)


def _machine(*, amx: bool = False, bf16: bool = True) -> Machine:
    if not bf16:
        return Machine(cpu.without(*NO_BF16), ALL_RUNTIMES)
    flags = ("amx_tile", "amx_bf16") if amx else ("avx512_bf16",)
    base = cpu.with_flags(*flags) if amx else cpu.CPU("zen", "x86_64", cpu.without(*NO_BF16).flags | set(flags))
    return Machine(base, ALL_RUNTIMES)


@pytest.mark.parametrize("key", ["legacy-fp32-b1", "zip-fp32-dynamic", "zip-int8-b2"])
def test_openvino_fp32_matches_pytorch(small: SmallModels, key: str) -> None:
    """OpenVINO runs float32 files (the .tflite ones, or float32 IR beside reduced ones) exactly with --exact."""
    engine = open_engine(small.model(key), "openvino", exact=True)
    assert isinstance(engine, OpenVINOEngine) and engine.plan.exact and engine.label == "openvino fp32"
    err = np.abs(_animate(engine, small) - small.reference())
    print(f"\n{key} openvino fp32: max abs err {err.max():.2e} mean {err.mean():.2e}")
    assert err.max() <= FP32_TOLERANCE


@needs_bf16
def test_openvino_bf16_error_is_bounded(small: SmallModels) -> None:
    model = read_folder(small.model("zip-fp32-dynamic"))
    (bf16,) = [p for p in candidates(model, Machine.current(), Request("openvino")) if p.kp_precision == "bf16"
               and p.precision == "bf16"]
    engine = choose.open_plan(model, bf16)
    err = np.abs(_animate(engine, small) - small.reference())
    print(f"\n{engine.label} vs PyTorch: max {err.max():.3f} mean {err.mean():.4f}")
    assert err.max() <= BF16_TOLERANCE["max"] and err.mean() <= BF16_TOLERANCE["mean"]
    assert err.max() > 1e-4  # it really ran at bf16


def test_folder_lists_the_openvino_variants(small: SmallModels) -> None:
    """OpenVINO reads the float32 .tflite files themselves; the plain-graph generator is its own IR."""
    model = read_folder(small.model("legacy-fp32-b1"))
    for name in NETWORKS:
        assert model.find(name, "openvino", "xnnpack", "fp32").files == model.find(name, "tflite").files
    plain = model.find("generator", "openvino", "plain", "bf16")
    assert [f.path for f in plain.files] == ["openvino/generator.plain.bf16.xml", "openvino/generator.plain.bf16.bin"]
    assert "DepthToSpace" not in model.file(plain).read_text()  # no fused upsampling, no Winograd tiles
    assert 0 < plain.verified.max_abs < 0.1  # bf16 weights at fp32: rounding of the weights alone


def test_bf16_weights_halve_the_file_and_compute_the_same(small: SmallModels, tmp_path: Path) -> None:
    """At bf16 the bf16-weights IR computes what float32 weights compute, to the bit, from half the file."""
    from livepuppet.conversion import openvino_ir
    from livepuppet.conversion.graphs import Graphs
    from livepuppet.conversion.targets.openvino import ir_from
    from livepuppet.fomm import config as cfgmod
    from livepuppet.fomm.checkpoint import load_checkpoint

    ckpt = load_checkpoint(small.checkpoint("zip"))
    graphs = Graphs(ckpt, cfgmod.infer(ckpt.generator, ckpt.kp_detector).with_frame_shape(64, 64), 1)
    network = graphs.traced("plain", tmp_path / "scratch", ["generator"])["generator"]
    fp32, bf16 = tmp_path / "generator.xml", tmp_path / "generator.bf16.xml"
    ir_from(network.saved, fp32)
    stored = openvino_ir.save_with_bf16_weights(fp32, bf16)
    ratio = bf16.with_suffix(".bin").stat().st_size / fp32.with_suffix(".bin").stat().st_size
    print(f"\nbf16 weights: {stored} tensors, .bin {ratio:.2f}x the float32 one")
    assert stored > 0 and ratio < 0.6
    if not cpu.current().bf16:
        pytest.skip("this CPU computes no bf16: the same-to-the-bit half cannot run here")
    want, got = (openvino_ir.run(xml, network.inputs, precision="bf16") for xml in (fp32, bf16))
    diff = max(float(np.abs(want[k] - got[k]).max()) for k in want)
    print(f"{diff:.1e} from float32 weights at bf16")
    assert diff == 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page residency is read from /proc")
def test_engine_gives_back_the_weight_pages_it_read(small: SmallModels, monkeypatch) -> None:
    """OpenVINO reads the mapped weights once, at compile; the engine pages them out after (run's peak memory)."""
    from livepuppet.runtime import weight_pages

    folder = small.model("legacy-fp32-b1")

    def held(engine) -> tuple[int, int]:  # the folder's files, and the compiled models OpenVINO maps instead
        pairs = [weight_pages.resident(root) for root in (folder, engine.cache_dir) if root is not None]
        return sum(m for m, _ in pairs), sum(r for _, r in pairs)

    kept = open_engine(folder, "openvino", exact=True)
    mapped, resident = held(kept)
    del kept
    gc.collect()
    monkeypatch.setattr(weight_pages, "release", lambda folder: 0)
    unreleased = open_engine(folder, "openvino", exact=True)
    mapped_without, resident_without = held(unreleased)
    print(f"\nweights mapped {mapped / 1e6:.2f} MB, resident {resident / 1e6:.2f} MB; without the release "
          f"{resident_without / 1e6:.2f} of {mapped_without / 1e6:.2f} MB")
    assert mapped > 0 and resident_without > 0.5 * mapped_without
    assert resident < 0.25 * mapped


# --------------------------------------------------------------------------- the plan, on both sides of each CPU


@pytest.mark.parametrize("flags,arch,expected", [
    ({"avx2", "avx512f", "avx512_bf16"}, "x86_64", "bf16"),
    ({"avx2", "amx_tile", "amx_bf16"}, "x86_64", "bf16"),
    ({"avx2", "fma"}, "x86_64", "fp32"),
    ({"asimd", "fphp"}, "aarch64", "fp16"),
])
def test_precision_fits_the_cpu(flags: set[str], arch: str, expected: str) -> None:
    other = cpu.CPU("test CPU", arch, frozenset(flags))
    assert other.fast_precision() == expected
    with cpu.forced(other):
        assert cpu.current() is other and Machine.current().cpu is other
    assert cpu.current() is not other


def test_plan_gives_amx_the_plain_generator(small: SmallModels) -> None:
    """AMX: the plain graph's generator (oneDNN's own kernels); AVX512-BF16 alone: the XNNPACK graph."""
    model = read_folder(small.model("legacy-fp32-b1"))
    amx = plan(model, _machine(amx=True), Request("openvino"))
    zen = plan(model, _machine(amx=False), Request("openvino"))
    assert amx.steps["generator"].variant.graph == "plain" and amx.precision == "bf16"
    assert zen.steps["generator"].variant.graph == "xnnpack" and zen.precision == "bf16"
    for chosen in (amx, zen):
        assert chosen.kp_precision == "fp32" and chosen.steps["kp_processing"].compute == "fp32"
    assert plan(model, _machine(amx=True), Request("openvino", exact=True)).exact
    assert plan(model, _machine(bf16=False), Request("openvino")).exact  # nothing faster to offer


@pytest.mark.parametrize("bf16", [True, False])
def test_auto_candidates_follow_the_cpu(small: SmallModels, bf16: bool) -> None:
    model = read_folder(small.model("legacy-fp32-b1"))
    machine = _machine(bf16=bf16)
    labels = [p.label for p in candidates(model, machine, Request())]
    assert labels[0] == "tflite fp32"  # the reference, always first
    assert "openvino fp32" in labels and "savedmodel fp32" not in labels  # TensorFlow: only when asked
    assert ("openvino bf16" in labels) == bf16
    assert [p.label for p in candidates(model, machine, Request(exact=True))] == ["tflite fp32", "openvino fp32"]
    int8 = read_folder(small.model("zip-int8-b2"))
    assert [p.label for p in candidates(int8, machine, Request(exact=True))] == ["openvino fp32"]


def test_default_convert_is_portable(small: SmallModels, tmp_path: Path) -> None:
    """What convert writes does not depend on the converting CPU: the same variants, the same weights."""
    from livepuppet.commands.convert import convert_checkpoint

    made = {}
    for name, forced in (("amx", cpu.with_flags("amx_tile", "amx_bf16")), ("avx2", cpu.without(*NO_BF16))):
        with cpu.forced(forced):
            made[name] = read_folder(convert_checkpoint(small.checkpoint("zip"), tmp_path / name, size=(64, 64)))
    amx, avx2 = made["amx"], made["avx2"]
    assert {v.key for v in amx.variants} == {v.key for v in avx2.variants}
    assert amx.backends() == avx2.backends() == {"tflite", "openvino"}
    weights = lambda m: {f.path: f.sha256 for v in m.variants for f in v.files if f.path.endswith((".tflite", ".bin"))}  # noqa: E731
    assert weights(amx) == weights(avx2)
    print(f"\nportable: {len(weights(amx))} weight files identical; {amx.total_bytes() / 1e3:.0f} kB")


# --------------------------------------------------------------------------- --engine auto


def test_auto_measures_once_then_uses_the_cache(small: SmallModels, tmp_path: Path, monkeypatch, capsys) -> None:
    folder = tmp_path / "model"
    shutil.copytree(small.model("legacy-fp32-b1"), folder)
    choose.cache_file(read_folder(folder)).unlink(missing_ok=True)  # keyed by content: the copy shares it
    calls = []
    real = timing.measure
    monkeypatch.setattr(timing, "measure", lambda engine, *a: calls.append(engine.label) or real(engine, *a))
    first = open_engine(folder, "auto")
    said = capsys.readouterr().out
    assert "engine: " in said and "generator" in said
    model = read_folder(folder)
    assert len(calls) == len(candidates(model, Machine.current(), Request()))
    (entry,) = json.loads(choose.cache_file(model).read_text()).values()
    assert timing.within_budget(entry["mean"], entry["max"])
    fastest_ok = min(r["frame_ms"] for r in entry["all"] if timing.within_budget(r["mean"], r["max"]))
    assert entry["frame_ms"] == fastest_ok
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in small.model("legacy-fp32-b1").iterdir())

    calls.clear()
    second = open_engine(folder, "auto")
    assert calls == [] and second.label == first.label
    assert "measured before" in capsys.readouterr().out
    with cpu.forced(cpu.without(*NO_BF16)):  # another machine: measured again
        open_engine(folder, "auto")
    assert calls


def test_auto_exact_picks_a_float32_engine(small: SmallModels) -> None:
    engine = open_engine(small.model("zip-int8-b2"), "auto", exact=True)
    assert engine.label.startswith("openvino fp32")
    err = np.abs(_animate(engine, small) - small.reference())
    assert err.max() <= FP32_TOLERANCE


def test_folder_without_openvino_variants(small: SmallModels, tmp_path: Path, capsys) -> None:
    """A folder converted with --targets tflite: one line for --engine openvino; auto keeps to LiteRT."""
    from livepuppet.commands.convert import convert_checkpoint

    folder = convert_checkpoint(small.checkpoint("zip"), tmp_path / "lite", size=(64, 64), targets=("tflite",))
    assert sorted(p.name for p in folder.iterdir()) == sorted(["manifest.json", *(f"{n}.tflite" for n in NETWORKS)])
    with pytest.raises(ModelFolderError, match="has no openvino models.*--targets openvino"):
        open_engine(folder, "openvino")
    assert open_engine(folder, "auto").label == "tflite fp32"
    code = main(["bench", "--model", str(folder), "--engine", "openvino", "--repeats", "1"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and err[-1].startswith("livepuppet: error:") and "Traceback" not in "\n".join(err)


def test_gpu_device_without_a_gpu_is_one_line(small: SmallModels) -> None:
    if any(d.startswith("GPU") for d in devices()):
        pytest.skip("OpenVINO sees a GPU here; test_openvino_gpu covers it")
    with pytest.raises(LivepuppetError, match="sees no GPU"):
        open_engine(small.model("legacy-fp32-b1"), "openvino", device="gpu")


@pytest.mark.gpu
def test_openvino_gpu(small: SmallModels) -> None:
    """Needs an Intel GPU that OpenVINO drives (none on CI or this machine)."""
    if not any(d.startswith("GPU") for d in devices()):
        pytest.skip("OpenVINO sees no GPU here")
    engine = open_engine(small.model("legacy-fp32-b1"), "openvino", device="gpu", exact=True)
    err = np.abs(_animate(engine, small) - small.reference())
    print(f"\nopenvino GPU fp32: max abs err {err.max():.2e}")
    assert err.max() <= 1e-3


def test_bench_shows_every_engine(small: SmallModels, capsys) -> None:
    code = main(["bench", "--model", str(small.model("legacy-fp32-b1")), "--repeats", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "engines here" in out and "openvino fp32" in out and "tflite fp32" in out
    assert "floor:" in out and "fp32 peak" in out
    assert ("openvino bf16" in out) == cpu.current().bf16


# --------------------------------------------------------------------------- --fast: more in tests/test_int8.py


def test_fast_without_an_int8_model_is_one_line(small: SmallModels) -> None:
    with pytest.raises(ModelFolderError, match="--fast"):
        open_engine(small.model("legacy-fp32-b1"), "openvino", fast=True)
