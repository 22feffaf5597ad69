"""Issue 6: ``livepuppet bench`` — per-stage timings, GFLOP/s, the floor, the machine, JSON.

Runs on the small architecture at 64x64 only (the no-model default, vox-256
with random weights, takes minutes); no timing thresholds, only that every
number is there and sane.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from livepuppet.commands import bench
from livepuppet.fomm.random_weights import random_state
from livepuppet.runtime import peak
from livepuppet.fomm import config as cfgmod
from livepuppet.cli import main
from tests.reference import SMALL_PARAMS

ROOT = Path(__file__).resolve().parent.parent
SIZE = 64


def small_config() -> cfgmod.ModelConfig:
    return cfgmod.from_dict({"model_params": SMALL_PARAMS, "dataset_params": {"frame_shape": [SIZE, SIZE, 3]}})


@pytest.fixture(scope="module")
def small_model(small) -> Path:
    return small.model("legacy-fp32-b1")  # the session's SMALL model, converted once


def _check_result(result: dict, engine: str, batch: int) -> None:
    assert result["engine"].split()[0] == engine
    assert result["batch"] == batch
    assert set(result["stages"]) == set(bench.STAGES)
    for name, stage in result["stages"].items():
        assert stage["ms"] > 0, name
        if stage["gflop"] > 0:
            assert stage["gflops"] > 0, name
        if stage["when"] == "per frame":
            assert stage["ms_per_frame"] == pytest.approx(stage["ms"] / batch)
    assert result["stages"]["generation"]["gflop"] > 0
    assert result["per_frame_ms"] > 0 and result["latency_ms"] >= result["per_frame_ms"]
    assert result["fps"] == pytest.approx(1000 / result["per_frame_ms"])
    gflop = cfgmod.conv_gflop(small_config())
    assert result["gflop_per_frame"] == pytest.approx(gflop["per_frame"])
    assert result["peak"]["gflops"] > 0 and result["floor_ms"] > 0
    assert ("floor_ratio" in result) == result["quiet"]  # stated only when nothing else used the CPU
    machine = result["machine"]
    for key in ("cpu", "cores", "os", "python", "tensorflow", "litert", "load_average"):
        assert key in machine, key
    assert machine["cores"] >= 1 and machine["cpu"]


def test_bench_cli_writes_every_stage(small_model, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(small_model), "--engine", "tflite", "--repeats", "2", "--json",
                 str(out)]) == 0
    result = json.loads(out.read_text())
    _check_result(result, "tflite", 1)
    assert result["model"]["frame_size"] == f"{SIZE}x{SIZE}" and not result["model"]["random_weights"]
    printed = capsys.readouterr().out
    for label, _, _ in bench.STAGES.values():
        assert label in printed
    assert "avatar frames per second" in printed and "floor" in printed
    assert max(len(line) for line in printed.splitlines()) <= 80


def test_bench_default_times_every_engine(small_model, tmp_path):
    """--engine auto (the default): a row per engine and precision, the chosen one timed in full."""
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(small_model), "--repeats", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {row["engine"]: row for row in result["engines"]}
    assert {"tflite fp32", "openvino fp32"} <= set(rows)
    assert rows["tflite fp32"]["mean"] == 0 and rows["tflite fp32"]["floor_ms"] > 0
    (chosen,) = [name for name, row in rows.items() if row["auto"]]
    assert rows[chosen]["within_budget"] and result["engine"] == chosen


@pytest.mark.parametrize("others", [0.0, 0.5])
def test_bench_states_the_floor_only_on_a_quiet_machine(small_model, monkeypatch, capsys, others):
    from livepuppet.runtime import timing

    class Fixed(timing.Contention):
        def __exit__(self, *exc):
            self.others_share = others

    monkeypatch.setattr(timing, "Contention", Fixed)
    assert main(["bench", "--model", str(small_model), "--engine", "tflite", "--repeats", "1"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert ("x the floor" in printed) == (others == 0.0)
    assert ("no fraction of the floor is stated" in printed) == (others > 0)


def test_contention_counts_others_not_us(monkeypatch):
    """Others' share is the machine's busy time less this process's own, over the cores and the time."""
    from livepuppet.runtime import timing

    clock = iter([100.0, 110.0])  # 10 s
    busy = iter([1000.0, 1015.0])  # 15 CPU-seconds busy in all
    own = iter([50.0, 55.0])  # 5 of them ours
    monkeypatch.setattr(timing, "_busy_seconds", lambda: next(busy))
    monkeypatch.setattr(timing, "_own_seconds", lambda: next(own))
    monkeypatch.setattr(timing.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr("livepuppet.runtime.cpu.usable_cores", lambda: 2)
    with timing.Contention() as watch:
        pass
    assert watch.others_share == pytest.approx(10 / (10 * 2))


def test_contention_sees_another_process():
    """A process spinning on a core while we measure shows up as others' use of the CPU."""
    from livepuppet.runtime import timing

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with timing.Contention() as busy:
            sum(i * i for i in range(3_000_000))
    finally:
        spinner.kill()
        spinner.wait()
    print(f"\nothers' share with a spinner: {busy.others_share:.2f}")
    assert busy.others_share > 0.2  # a whole core of two is 0.5; a loaded machine shares it out


def test_bench_uses_the_default_model(small_model, tmp_path, monkeypatch, capsys):
    import shutil

    from livepuppet.commands.default_model import default_model_folder

    monkeypatch.setenv("LIVEPUPPET_HOME", str(tmp_path))
    shutil.copytree(small_model, default_model_folder())
    out = tmp_path / "bench.json"
    assert main(["bench", "--engine", "tflite", "--repeats", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["model"]["folder"] == str(default_model_folder())
    assert "timing the default model" in capsys.readouterr().err


def test_bench_batch_and_threads(small_model, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(small_model), "--engine", "tflite", "--batch", "3", "--threads", "1",
                 "--repeats", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    _check_result(result, "tflite", 3)
    assert result["threads"] == 1 and result["peak"]["threads"] == 1


def test_bench_savedmodel_engine(small_model, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(small_model), "--engine", "savedmodel", "--repeats", "1",
                 "--json", str(out)]) == 0
    _check_result(json.loads(out.read_text()), "savedmodel", 1)


def test_bench_tflite_never_imports_tensorflow(small_model, tmp_path):
    out = tmp_path / "bench.json"
    code = (
        "import sys; from livepuppet.cli import main; "
        f"rc = main(['bench', '--model', {str(small_model)!r}, '--repeats', '1', '--json', {str(out)!r}]); "
        "assert 'tensorflow' not in sys.modules, 'bench imported tensorflow'; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(out.read_text())["fps"] > 0


def test_bench_without_model_builds_random_weights(tmp_path, capsys):
    """The no-model path, at the small architecture through ``random_config`` (not on the command line)."""
    from livepuppet.commands.options import BenchOptions

    out = tmp_path / "bench.json"
    assert bench.run(BenchOptions(engine="tflite", repeats=1, json=out, random_config=small_config())) == 0
    result = json.loads(out.read_text())
    _check_result(result, "tflite", 1)
    assert result["model"]["random_weights"]
    assert not Path(result["model"]["folder"]).exists()  # the temporary model is cleaned up


def test_bench_without_model_converts_what_the_engine_and_precision_need() -> None:
    """`bench --fast` (or `--engine onnx`) with no model converts the files those run on, not only the default's
    (it used to build the default targets and then stop: no int8 generator)."""
    from livepuppet.commands.bench import _targets_for
    from livepuppet.commands.options import BenchOptions

    assert _targets_for(BenchOptions()) == ("tflite", "openvino")
    assert "int8" in _targets_for(BenchOptions(fast=True))
    assert "onnx" in _targets_for(BenchOptions(engine="onnx"))
    assert "savedmodel" in _targets_for(BenchOptions(engine="savedmodel"))


def test_bench_bad_model_folder_is_a_user_error(tmp_path, capsys):
    assert main(["bench", "--model", str(tmp_path / "nowhere")]) == 2
    assert "livepuppet: error:" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["vox", "mgif"])
def test_random_state_fits_the_architecture(preset):
    cfg = cfgmod.preset(preset)
    generator, kp_detector = random_state(cfg, seed=1)
    cfgmod.validate(cfg, generator, kp_detector)  # every tensor, right shapes, nothing extra
    for state in (generator, kp_detector):
        for name, value in state.items():
            assert value.dtype == np.float32 and np.isfinite(value).all(), name
            if name.endswith("running_var"):
                assert (value > 0).all(), name
    assert np.array_equal(kp_detector["jacobian.bias"][:4], [1, 0, 0, 1])
    again, _ = random_state(cfg, seed=1)
    assert all(np.array_equal(again[k], generator[k]) for k in generator)


def test_peak_model_is_a_correct_convolution():
    """The hand-written flatbuffer computes a 3x3 'same' convolution."""
    from ai_edge_litert import interpreter as lite

    h, w, cin, cout = 6, 5, 4, 3
    interp = lite.Interpreter(model_content=peak.peak_model(h, w, cin, cout, seed=2))
    interp.allocate_tensors()
    x = np.random.default_rng(0).standard_normal((1, h, w, cin)).astype(np.float32)
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    rng = np.random.default_rng(2)
    weights = (rng.standard_normal((cout, 3, 3, cin)) * (2 / (9 * cin)) ** 0.5).astype(np.float32)
    padded = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))
    want = np.zeros((h, w, cout), np.float32)
    for dy in range(3):
        for dx in range(3):
            want += padded[dy:dy + h, dx:dx + w] @ weights[:, dy, dx, :].T
    np.testing.assert_allclose(got[0], want, atol=1e-5)
    measured = peak.measure_peak(threads=1, repeats=2, shape=(16, 16, 32, 32))
    assert measured["gflops"] > 0 and measured["threads"] == 1


# ---------------------------------------------------------------- the faster formulations bench led to
# (livepuppet/fomm/modules/blocks.py); each must equal the plain computation up to float32 rounding.

def _conv_state(rng, cin: int, cout: int, k: int, norm: bool = True) -> dict[str, np.ndarray]:
    state = {"c.weight": rng.standard_normal((cout, cin, k, k)) * (2 / (k * k * cin)) ** 0.5,
             "c.bias": rng.standard_normal(cout) * 0.1}
    if norm:
        state.update({"n.weight": rng.uniform(0.7, 1.3, cout), "n.bias": rng.normal(0, 0.05, cout),
                      "n.running_mean": rng.normal(0, 0.2, cout), "n.running_var": rng.uniform(0.5, 2, cout)})
    return state


def _reference_conv(x: np.ndarray, state: dict[str, np.ndarray], pad: int) -> np.ndarray:
    """float64 'same' convolution + eval batch norm, NHWC."""
    w = state["c.weight"].transpose(2, 3, 1, 0)
    k = w.shape[0]
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h, wd = xp.shape[1] - k + 1, xp.shape[2] - k + 1
    out = sum(xp[:, dy:dy + h, dx:dx + wd] @ w[dy, dx] for dy in range(k) for dx in range(k)) + state["c.bias"]
    if "n.weight" in state:
        scale = state["n.weight"] / np.sqrt(state["n.running_var"] + 1e-5)
        out = out * scale + state["n.bias"] - state["n.running_mean"] * scale
    return out


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("shape", [(2, 8, 8, 64, 64), (1, 7, 9, 64, 96), (1, 5, 4, 128, 64)])
def test_winograd_conv(shape, fold):
    import tensorflow as tf

    from livepuppet.fomm.modules.blocks import Conv, StateReader

    n, h, w, cin, cout = shape
    rng = np.random.default_rng(0)
    state = _conv_state(rng, cin, cout, 3)
    reader = StateReader(state, fold=fold)
    conv = Conv(reader.child("c"), reader.child("n"), winograd=True)
    assert conv.winograd
    x = rng.standard_normal((n, h, w, cin)).astype(np.float32)
    got = conv(tf.constant(x), activation=tf.nn.relu).numpy()
    np.testing.assert_allclose(got, np.maximum(_reference_conv(x, state, 1), 0), atol=2e-5)
    small = Conv(StateReader(_conv_state(rng, 8, 8, 3)).child("c"), winograd=True)
    assert not small.winograd  # few channels: plain CONV_2D


@pytest.mark.parametrize("fold", [True, False])
def test_upsampling_conv_is_nearest_then_conv(fold):
    import tensorflow as tf

    from livepuppet.fomm.modules.blocks import UpBlock2d, StateReader

    rng = np.random.default_rng(1)
    state = {f"b.{k.replace('c.', 'conv.').replace('n.', 'norm.')}": v for k, v in _conv_state(rng, 6, 5, 3).items()}
    block = UpBlock2d(StateReader(state, fold=fold).child("b"), fused=True)
    assert block.fused
    x = rng.standard_normal((2, 5, 7, 6)).astype(np.float32)
    got = block(tf.constant(x)).numpy()
    up = x.repeat(2, axis=1).repeat(2, axis=2)
    plain = {k.replace("b.conv.", "c.").replace("b.norm.", "n."): v for k, v in state.items()}
    np.testing.assert_allclose(got, np.maximum(_reference_conv(up, plain, 1), 0), atol=1e-5)


def test_few_channel_conv_split_into_rows_and_columns():
    import tensorflow as tf

    from livepuppet.fomm.modules.blocks import Conv, StateReader

    rng = np.random.default_rng(2)
    state = _conv_state(rng, 16, 3, 7, norm=False)
    conv = Conv(StateReader(state).child("c"), split_taps=True)
    assert hasattr(conv, "rows")  # 3 outputs: the 1x7 + 7x1 form
    x = rng.standard_normal((2, 12, 10, 16)).astype(np.float32)
    np.testing.assert_allclose(conv(tf.constant(x)).numpy(), _reference_conv(x, state, 3), atol=1e-5)

