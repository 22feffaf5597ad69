"""``livepuppet animate``: a portrait + a driving clip -> frames, through the CLI.

One SMALL checkpoint is converted at 64x64 for the whole module; every output
is checked against the PyTorch reference (``tests/reference/fomm.py``) as
``np.rint(prediction * 255)``, to within one level.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from livepuppet import media
from livepuppet.cli import build_parser, main
from tests.reference.factory import random_frames, random_video, to_torch_nchw
from tests.reference.fomm import animate_reference, normalize_kp

SIZE = 64
N_FRAMES = 6
PLANTED = 3  # index of the source image inside the best-frame driving clip
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- helpers


def _u8(frames: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(frames, 0, 1) * 255).astype(np.uint8)


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
    return path


def _write_folder(folder: Path, frames_u8: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames_u8):
        _write_png(folder / f"frame{i}.png", frame)  # frame10 sorts after frame9: natural order
    return folder


def _read_pngs(folder: Path) -> np.ndarray:
    files = sorted(folder.glob("*.png"))
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(len(files))]
    return np.stack([cv2.imread(str(f), cv2.IMREAD_UNCHANGED)[..., ::-1] for f in files])


def _as_float(frames_u8: np.ndarray) -> np.ndarray:
    return frames_u8.astype(np.float32) / np.float32(255)  # what read_image gives


def _compare(name: str, got: np.ndarray, pred: np.ndarray) -> None:
    """got: uint8 frames; pred: reference predictions in [0, 1]."""
    want = np.rint(np.clip(pred, 0, 1) * 255).astype(np.int16)
    assert got.shape == want.shape, (got.shape, want.shape)
    diff = np.abs(got.astype(np.int16) - want)
    print(f"\n  {name}: max level difference {diff.max()}, {int((diff > 0).sum())} of {diff.size} values differ")
    assert diff.max() <= 1


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["animate", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _nchw_to_nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def _reference_with_initial(generator, kp_detector, source: np.ndarray, driving: np.ndarray, initial: int,
                            relative: bool = True, adapt_scale: bool = True) -> np.ndarray:
    """The reference demo, but calibrated on driving frame ``initial`` instead of frame 0."""
    src = to_torch_nchw(source[None])
    drv = to_torch_nchw(driving)
    kp_source = kp_detector(src)
    kp_initial = kp_detector(drv[initial:initial + 1])
    preds = []
    for i in range(len(drv)):
        kp_norm = normalize_kp(kp_source, kp_detector(drv[i:i + 1]), kp_initial,
                               adapt_movement_scale=adapt_scale, use_relative_movement=relative,
                               use_relative_jacobian=relative)
        preds.append(generator(src, kp_driving=kp_norm, kp_source=kp_source)["prediction"])
    return _nchw_to_nhwc(torch.cat(preds))


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def setup(tmp_path_factory, small):
    """Converted SMALL model at 64x64 (the session's), the reference models, and input files at model size."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference is tiny; thread hand-offs cost more than they save on a busy CPU
    root = tmp_path_factory.mktemp("animate")
    model = small.model("legacy-fp32-b1")  # SMALL, seed 0, fp32, batch 1, 64x64
    generator, kp_detector = small.torch_models

    source_u8 = _u8(random_frames(1, SIZE, SIZE, seed=7))[0]
    driving_u8 = _u8(random_video(N_FRAMES, SIZE, SIZE, seed=1, speed=0.05))
    planted_u8 = driving_u8.copy()
    planted_u8[PLANTED] = source_u8
    yield {
        "root": root,
        "model": model,
        "generator": generator,
        "kp_detector": kp_detector,
        "source_u8": source_u8,
        "driving_u8": driving_u8,
        "planted_u8": planted_u8,
        "source": _write_png(root / "source.png", source_u8),
        "driving": _write_folder(root / "driving", driving_u8),
        "planted": _write_folder(root / "planted", planted_u8),
    }
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- parity


MODES = {
    "relative+adapt": ([], True, True),
    "relative-only": (["--no-adapt-scale"], True, False),
    "absolute": (["--no-relative"], False, True),
}


@pytest.mark.parametrize("engine", ["tflite", "savedmodel"])
@pytest.mark.parametrize("mode", list(MODES))
def test_png_output_matches_reference(setup, tmp_path, capsys, engine, mode):
    flags, relative, adapt = MODES[mode]
    out = tmp_path / "frames"
    rc, _, err = _cli(capsys, "--source", setup["source"], "--driving", setup["driving"], "--output", f"{out}/",
                      "--model", setup["model"], "--engine", engine, *flags)
    assert rc == 0, err
    assert f"animated {N_FRAMES} frames" in err and str(out) in err
    src = to_torch_nchw(_as_float(setup["source_u8"])[None])
    drv = to_torch_nchw(_as_float(setup["driving_u8"]))
    pred = animate_reference(setup["generator"], setup["kp_detector"], src, drv, relative=relative, adapt_scale=adapt)
    _compare(f"{engine} {mode}", _read_pngs(out), _nchw_to_nhwc(pred))


def test_defaults_and_switches():
    parse = build_parser().parse_args
    base = ["animate", "--source", "s.png", "--driving", "d.mp4", "--output", "o.mp4"]
    args = parse(base)
    assert args.relative and args.adapt_scale and not args.best_frame and not args.side_by_side
    args = parse(base + ["--no-relative", "--no-adapt-scale"])
    assert not args.relative and not args.adapt_scale
    args = parse(base + ["--no-relative", "--relative", "--no-adapt-scale", "--adapt-scale"])
    assert args.relative and args.adapt_scale


# ---------------------------------------------------------------- streaming


def test_batch_size_does_not_change_frames_and_memory_stays_flat(setup, tmp_path, capsys, monkeypatch):
    state = {"read": 0, "written": 0, "held": 0}
    real_next, real_write = media.FrameSource.__next__, media.FrameFolderWriter.write

    def counting_next(self):
        frame = real_next(self)
        state["read"] += 1
        state["held"] = max(state["held"], state["read"] - state["written"])
        return frame

    def counting_write(self, frame):
        state["written"] += 1
        return real_write(self, frame)

    monkeypatch.setattr(media.FrameSource, "__next__", counting_next)
    monkeypatch.setattr(media.FrameFolderWriter, "write", counting_write)
    results = {}
    for batch in (1, 3, 4):
        state.update(read=0, written=0, held=0)
        out = tmp_path / f"b{batch}"
        rc, _, err = _cli(capsys, "--source", setup["source"], "--driving", setup["driving"], "--output", f"{out}/",
                          "--model", setup["model"], "--batch", batch)
        assert rc == 0, err
        results[batch] = _read_pngs(out)
        assert len(results[batch]) == N_FRAMES
        assert state["held"] <= batch, f"batch {batch}: {state['held']} driving frames held at once"
    for batch in (3, 4):
        diff = np.abs(results[batch].astype(int) - results[1]).max()
        print(f"\n  batch {batch} vs batch 1: max level difference {diff}")
        assert np.array_equal(results[batch], results[1])


def test_frames_limit(setup, tmp_path, capsys):
    out = tmp_path / "some"
    rc, _, err = _cli(capsys, "--source", setup["source"], "--driving", setup["driving"], "--output", f"{out}/",
                      "--model", setup["model"], "--frames", 4, "--batch", 3)
    assert rc == 0, err
    assert len(_read_pngs(out)) == 4


# ---------------------------------------------------------------- inputs


def test_input_at_model_size_is_not_resampled(setup, tmp_path, capsys, monkeypatch):
    from livepuppet.runtime.pipeline import Pipeline

    resized, seen_source, seen_frames = [], [], []
    real_resize, real_set_source, real_animate = cv2.resize, Pipeline.set_source, Pipeline.animate

    def spy_resize(*a, **k):
        resized.append(a[0].shape)
        return real_resize(*a, **k)

    def spy_set_source(self, image):
        seen_source.append(np.array(image))
        return real_set_source(self, image)

    def spy_animate(self, frames):
        seen_frames.append(np.array(frames))
        return real_animate(self, frames)

    monkeypatch.setattr(cv2, "resize", spy_resize)
    monkeypatch.setattr(Pipeline, "set_source", spy_set_source)
    monkeypatch.setattr(Pipeline, "animate", spy_animate)
    rc, _, err = _cli(capsys, "--source", setup["source"], "--driving", setup["driving"],
                      "--output", f"{tmp_path / 'out'}/", "--model", setup["model"])
    assert rc == 0, err
    assert resized == []
    assert np.array_equal(seen_source[0], _as_float(setup["source_u8"]))
    assert np.array_equal(np.concatenate(seen_frames), _as_float(setup["driving_u8"]))

    # Other sizes and formats are converted and resized (stretched, never cropped).
    gray16 = (cv2.resize(setup["source_u8"], (90, 100)).mean(axis=2) * 257).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "gray16.png"), gray16)
    rgba = tmp_path / "rgba"
    rgba.mkdir()
    for i in range(2):
        frame = cv2.resize(setup["driving_u8"][i], (96, 80))
        cv2.imwrite(str(rgba / f"{i}.png"), np.dstack([frame[..., ::-1], np.full((80, 96), 128, np.uint8)]))
    resized.clear()
    out = tmp_path / "converted"
    rc, _, err = _cli(capsys, "--source", tmp_path / "gray16.png", "--driving", rgba, "--output", f"{out}/",
                      "--model", setup["model"])
    assert rc == 0, err
    assert (100, 90, 3) in resized and (80, 96, 3) in resized
    assert _read_pngs(out).shape == (2, SIZE, SIZE, 3)


# ---------------------------------------------------------------- best frame


def test_choose_best_frame_finds_the_planted_source(setup):
    from livepuppet.commands.animate import choose_best_frame
    from livepuppet.runtime.choose import open_engine
    from livepuppet.runtime.pipeline import Pipeline

    pipeline = Pipeline(open_engine(setup["model"], "tflite"))
    pipeline.set_source(_as_float(setup["source_u8"]))
    frames = iter(_as_float(setup["planted_u8"]))
    assert choose_best_frame(pipeline, frames, batch=2) == PLANTED
    np.testing.assert_array_equal(pipeline.initial.value, pipeline.source.keypoints.value)


def test_best_frame_cli(setup, tmp_path, capsys):
    out = tmp_path / "best"
    rc, _, err = _cli(capsys, "--source", setup["source"], "--driving", setup["planted"], "--output", f"{out}/",
                      "--model", setup["model"], "--best-frame", "--batch", 4)
    assert rc == 0, err
    assert f"calibrated on frame {PLANTED} " in err
    got = _read_pngs(out)
    source, planted = _as_float(setup["source_u8"]), _as_float(setup["planted_u8"])
    # The planted frame reproduces the source: relative motion from the calibration frame is zero.
    recon = _reference_with_initial(setup["generator"], setup["kp_detector"], source, source[None], 0)
    _compare("best frame: planted frame vs source reconstruction", got[PLANTED:PLANTED + 1], recon)
    # Every frame is normalised against the planted frame's keypoints (forwards and backwards from it).
    ref = _reference_with_initial(setup["generator"], setup["kp_detector"], source, planted, PLANTED)
    _compare("best frame: all frames vs reference calibrated on the planted frame", got, ref)


# ---------------------------------------------------------------- outputs


def test_side_by_side(setup, tmp_path, capsys):
    plain, panels = tmp_path / "plain", tmp_path / "panels"
    for out, extra in ((plain, []), (panels, ["--side-by-side"])):
        rc, _, err = _cli(capsys, "--source", setup["source"], "--driving", setup["driving"], "--output", f"{out}/",
                          "--model", setup["model"], *extra)
        assert rc == 0, err
    got = _read_pngs(panels)
    assert got.shape == (N_FRAMES, SIZE, 3 * SIZE, 3)
    assert np.array_equal(got[:, :, :SIZE], np.broadcast_to(setup["source_u8"], (N_FRAMES, SIZE, SIZE, 3)))
    assert np.array_equal(got[:, :, SIZE:2 * SIZE], setup["driving_u8"])
    assert np.array_equal(got[:, :, 2 * SIZE:], _read_pngs(plain))


def test_mp4_with_audio_in_a_subprocess(setup, tmp_path):
    """A real process: driving mp4 (10 fps, sine track) -> H.264 mp4 with that audio, TensorFlow never loaded."""
    exe = media._ffmpeg_exe()
    if exe is None:
        pytest.skip("no ffmpeg binary")
    driving = tmp_path / "driving.mp4"
    subprocess.run(
        [exe, "-hide_banner", "-loglevel", "error", "-y",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{SIZE}x{SIZE}", "-framerate", "10", "-i", "pipe:0",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", f"{N_FRAMES / 10}",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(driving)],
        input=setup["driving_u8"].tobytes(), check=True,
    )  # fmt: skip
    assert media.probe_video(driving)["has_audio"]
    out = tmp_path / "out.mp4"
    code = ("import sys; from livepuppet.cli import main; rc = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules, 'the tflite path imported tensorflow'; sys.exit(rc)")
    result = subprocess.run(
        [sys.executable, "-c", code, "animate", "--source", str(setup["source"]), "--driving", str(driving),
         "--output", str(out), "--model", str(setup["model"])],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = [line for line in result.stderr.splitlines() if line.startswith("animated ")]
    assert len(summary) == 1 and f"animated {N_FRAMES} frames" in summary[0] and str(out) in summary[0]
    info = media.probe_video(out)
    print(f"\n  mp4 output: {info}")
    assert info["frame_count"] == N_FRAMES
    assert info["fps"] == pytest.approx(10.0)
    assert info["size"] == (SIZE, SIZE)
    assert info["has_audio"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["driving.mp4", "out.mp4"]  # no partial file left


# ---------------------------------------------------------------- bad input


def _bad_input(setup, tmp: Path, case: str) -> list[str]:
    args = {"--source": setup["source"], "--driving": setup["driving"], "--model": setup["model"],
            "--output": tmp / "out" / "result.mp4"}
    if case == "missing source":
        args["--source"] = tmp / "nope.png"
    elif case == "unreadable source":
        args["--source"] = tmp / "noise.png"
        args["--source"].write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "corrupt video":
        args["--driving"] = tmp / "corrupt.mp4"
        args["--driving"].write_bytes(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(1).bytes(8192))
    elif case == "empty video":
        args["--driving"] = tmp / "empty.mp4"
        args["--driving"].write_bytes(b"")
    elif case == "empty folder":
        args["--driving"] = tmp / "nothing"
        args["--driving"].mkdir()
    elif case == "not a model folder":
        args["--model"] = tmp / "not-a-model"
        args["--model"].mkdir()
        (args["--model"] / "readme.txt").write_text("hello")
    elif case == "missing model folder":
        args["--model"] = tmp / "no-model"
    elif case == "unsupported output":
        args["--output"] = tmp / "out" / "result.txt"
    (tmp / "out").mkdir()
    return [str(v) for kv in args.items() for v in kv]


BAD = ["missing source", "unreadable source", "corrupt video", "empty video", "empty folder",
       "not a model folder", "missing model folder", "unsupported output"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input(setup, tmp_path, capsys, case):
    rc, out, err = _cli(capsys, *_bad_input(setup, tmp_path, case))
    assert rc == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    print(f"\n  {case}: {lines}")
    assert len(lines) == 1 and lines[0].startswith("livepuppet: error: ")
    assert os.listdir(tmp_path / "out") == []  # nothing left behind, not even a hidden partial file


def test_bad_input_in_a_subprocess(setup, tmp_path):
    argv = _bad_input(setup, tmp_path, "corrupt video")
    result = subprocess.run([sys.executable, "-m", "livepuppet.cli", "animate", *argv],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert os.listdir(tmp_path / "out") == []
