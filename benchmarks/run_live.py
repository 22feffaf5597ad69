"""``livepuppet run`` on a file camera: peak memory, first-frame time and frame rate against ``bench``.

Builds a vox-256 model with random weights per precision (or takes ``--model``),
writes a file-camera clip of a moving face (``skimage.data.astronaut()``,
panned and zoomed over 640x480), then, for each model, runs

    python -m livepuppet.cli run --source face.png --model DIR --camera clip.mp4 --every-frame
                                 --no-preview --record out.mp4 --frames N

in a fresh process and reads back the lines it prints at exit (frames per
second, first avatar frame after start, peak memory), and runs ``livepuppet
bench`` on the same model for the frame rate of the model alone, bench and run
taking turns. Prints one table; the issue's bars are 800 MB peak, 5 s to the
first frame and 90% of bench's frame rate.

Usage: python benchmarks/run_live.py [--precisions fp32 fp16 int8] [--frames 40]
                                     [--model DIR ...] [--workdir DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SUMMARY = re.compile(r"(\d+) avatar frames at ([\d.]+) fps")
FIRST = re.compile(r"first avatar frame ([\d.]+) s after start")
PEAK = re.compile(r"peak memory (\d+) MB")


def write_clip(path: Path, frames: int = 120, size: tuple[int, int] = (640, 480)) -> None:
    """A face that drifts and zooms a little, like someone in front of a webcam."""
    import cv2
    from skimage import data

    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, size)
    for i in range(frames):
        t = i / frames * 2 * np.pi
        scale = 0.9 + 0.1 * np.sin(t)
        matrix = np.float32([[scale, 0, 60 + 40 * np.sin(t)], [0, scale, -20 + 25 * np.cos(t)]])
        writer.write(cv2.warpAffine(face, matrix, (w, h), borderMode=cv2.BORDER_REFLECT))
    writer.release()


def live(model: Path, clip: Path, face: Path, frames: int, workdir: Path, engine: str = "auto") -> dict:
    """One ``livepuppet run`` in a fresh process; what it reported at exit."""
    cmd = [sys.executable, "-m", "livepuppet.cli", "run", "--source", str(face), "--model", str(model),
           "--camera", str(clip), "--every-frame",  # every frame: the model's own pace, as bench times it
           "--no-preview", "--record", str(workdir / "out.mp4"), "--frames", str(frames), "--engine", engine]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    text = proc.stderr + proc.stdout
    summary, first, peak = SUMMARY.search(text), FIRST.search(text), PEAK.search(text)
    if not (summary and first and peak):
        raise SystemExit(f"could not read run's summary from:\n{text[-3000:]}")
    return {"frames": int(summary.group(1)), "fps": float(summary.group(2)),
            "first_frame_s": float(first.group(1)), "peak_mb": int(peak.group(1))}


def bench_fps(model: Path, workdir: Path, engine: str = "auto") -> float:
    out = workdir / "bench.json"
    cmd = [sys.executable, "-m", "livepuppet.cli", "bench", "--model", str(model), "--json", str(out),
           "--engine", engine]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if proc.returncode != 0:
        raise SystemExit(f"bench failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return float(json.loads(out.read_text())["fps"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "int8"])
    parser.add_argument("--model", type=Path, nargs="*", help="measure these model folders instead")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--engine", default="auto", help="run and bench on this engine (default auto)")
    parser.add_argument("--repeats", type=int, default=3, help="bench / run pairs per model (default 3)")
    parser.add_argument("--workdir", type=Path, help="keep models and clips here (default: a temporary folder)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lp-run-live-"))
    workdir.mkdir(parents=True, exist_ok=True)
    clip, face = workdir / "camera.mp4", workdir / "face.png"
    if not clip.exists():
        write_clip(clip)
    if not face.exists():
        import cv2
        from skimage import data

        cv2.imwrite(str(face), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    models = args.model or []
    if not models:
        from livepuppet.commands.bench import build_random_model

        for precision in args.precisions:
            folder = workdir / f"vox-{precision}"
            if not (folder / "manifest.json").exists():
                print(f"converting a random vox-256 model, {precision}", file=sys.stderr, flush=True)
                build_random_model(folder, precision=precision)
            models.append(folder)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"livepuppet run, file camera 640x480, --no-preview --record, {args.frames} frames; "
                        f"medians of {args.repeats} alternating bench / run pairs (each value in brackets)")
    for col in ("model", "bench fps", "run fps", "run / bench", "first frame s", "peak MB"):
        table.add_column(col, justify="left" if col == "model" else "right")
    rows = []
    for model in models:
        benches, runs = [], []
        for _ in range(args.repeats):  # alternating, so that load coming and going hits both alike
            benches.append(bench_fps(model, workdir, args.engine))
            runs.append(live(model, clip, face, args.frames, workdir, args.engine))
        bench, fps = statistics.median(benches), statistics.median(r["fps"] for r in runs)
        first = statistics.median(r["first_frame_s"] for r in runs)
        peak = max(r["peak_mb"] for r in runs)
        rows.append({"model": str(model), "bench_fps": benches, "runs": runs})

        def each(values, fmt="{:.2f}"):
            return " [" + " ".join(fmt.format(v) for v in values) + "]"

        table.add_row(model.name, f"{bench:.2f}" + each(benches), f"{fps:.2f}" + each(r["fps"] for r in runs),
                      f"{fps / bench:.0%}", f"{first:.1f}" + each((r["first_frame_s"] for r in runs), "{:.1f}"),
                      f"{peak} (max)" + each((r["peak_mb"] for r in runs), "{}"))
    Console(width=200).print(table)
    print(f"load average now {' '.join(f'{v:.2f}' for v in os.getloadavg())}; results in {workdir / 'run_live.json'}")
    (workdir / "run_live.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
