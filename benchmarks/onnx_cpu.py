"""``--engine onnx`` on the CPU provider beside LiteRT and OpenVINO, vox-256: error against PyTorch, speed.

One checkpoint, the vox-256 architecture with random weights from the test
factory (``tests/reference``), converted once at fp32, batch 1 (the folder then
holds the TFLite, OpenVINO and ONNX models). Each engine animates the bundled
portrait's head motion (``runtime/probe.py``) through livepuppet's pipeline,
and the frames are compared, in 8-bit levels, with the PyTorch reference (the
original demo's order of calls) on the same checkpoint. Then the engines'
frames are timed interleaved, round-robin, one frame each in turn, so a machine
that gets busier or quieter meanwhile affects them alike: median ms a frame end
to end and of the generator. The load average is printed before and after.

Usage: python benchmarks/onnx_cpu.py [--workdir DIR] [--frames 8] [--rounds 8] [--threads N]
Needs the test extras (torch). About 10 minutes on 2 cores, most of it the convert.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENGINES = [("tflite", {}), ("openvino", {"exact": True}), ("openvino", {}), ("onnx", {"device": "cpu"})]


def folder(workdir: Path) -> tuple[Path, tuple]:
    """The vox-256 checkpoint (random weights) and its model folder, made once in ``workdir``."""
    from livepuppet.commands.convert import convert_checkpoint
    from tests.reference import VOX_PARAMS, make_checkpoint

    checkpoint, out = workdir / "vox-random.pth.tar", workdir / "vox"
    models = make_checkpoint(checkpoint, VOX_PARAMS, seed=0)  # the same bytes each time
    if not (out / "manifest.json").exists():
        convert_checkpoint(checkpoint, out, "vox", targets=("tflite", "openvino", "onnx"))
    return out, models


def reference(models, source: np.ndarray, driving: np.ndarray) -> np.ndarray:
    import torch

    from tests.reference import animate_reference, to_torch_nchw

    with torch.no_grad():
        out = animate_reference(*models, to_torch_nchw(source[None]), to_torch_nchw(driving))
    return out.numpy().transpose(0, 2, 3, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--frames", type=int, default=8, help="frames compared with PyTorch")
    parser.add_argument("--rounds", type=int, default=8, help="timed frames per engine")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    from livepuppet.runtime import probe
    from livepuppet.runtime.choose import open_engine
    from livepuppet.runtime.pipeline import Pipeline

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="onnx-cpu-"))
    model, models = folder(workdir)
    size = (256, 256)
    source, clip = probe.portrait(size), probe.head_motion(size, args.frames)
    want = reference(models, source, clip)
    load_before = os.getloadavg()
    pipes, errors = {}, {}
    for kind, options in ENGINES:
        engine = open_engine(model, kind, args.threads, **options)
        pipe = Pipeline(engine)
        pipe.set_source(source)
        got = pipe.animate(clip)
        diff = np.abs(got - want) * 255
        errors[engine.label] = (float(diff.mean()), float(diff.max()))
        pipe.recalibrate()
        pipe.animate(clip[:1])  # calibrated again, and warm
        pipes[engine.label] = pipe
    times = {label: ([], []) for label in pipes}
    for i in range(args.rounds):
        frame = clip[1 + i % (len(clip) - 1)][None]
        for label, pipe in pipes.items():
            start = time.perf_counter()
            pipe.animate(frame)
            times[label][0].append((time.perf_counter() - start) * 1e3)
            times[label][1].append(pipe.timings["generate"])
    print(f"vox-256, random weights (test factory, seed 0), {args.frames} frames of the bundled face vs PyTorch; "
          f"{args.rounds} interleaved frames timed, {args.threads or os.cpu_count()} threads")
    print(f"{'engine':34s} {'frame ms':>9s} {'generator ms':>13s}  levels vs PyTorch (mean / max)")
    for label, (frame_ms, gen_ms) in times.items():
        mean, worst = errors[label]
        print(f"{label:34s} {statistics.median(frame_ms):9.1f} {statistics.median(gen_ms):13.1f}  "
              f"{mean:.3f} / {worst:.1f}")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in load_before)}; "
          f"after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
