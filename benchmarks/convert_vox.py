"""Convert a full vox-256 checkpoint at every precision and measure what it costs and how close it is.

Writes a vox-256 checkpoint with seeded random weights (tests/reference/factory.py),
converts it with ``python -m livepuppet.cli convert`` once per precision, each
under ``/usr/bin/time`` for the wall time and the peak RSS of the converting
process, then animates a short random video with the PyTorch reference and with
each converted model through the Pipeline, and prints one table:

    precision | convert s | peak RSS MB | .tflite MB (per model) | max / mean abs error vs PyTorch

Usage: python benchmarks/convert_vox.py [--precisions fp32 fp16 int8] [--frames 4]
                                        [--workdir DIR] [--keep] [--savedmodel]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ("kp_detector", "source_encoder", "kp_processing", "generator")


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def convert(checkpoint: Path, out: Path, precision: str, targets: str = "tflite,openvino") -> dict:
    """Run the CLI converter in a fresh process; wall time and peak RSS of that process."""
    cmd = [sys.executable, "-m", "livepuppet.cli", "convert", str(checkpoint), "--out", str(out),
           "--precision", precision, "--targets", targets]
    stats = Path(tempfile.mkstemp(prefix="lp-time-")[1])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    time_bin = shutil.which("time") or "/usr/bin/time"
    start = time.perf_counter()
    if Path(time_bin).exists():
        # /usr/bin/time's own child starts from its small address space, so %M is the converter's peak.
        proc = subprocess.run([time_bin, "-f", "%M", "-o", str(stats), *cmd], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        peak_kb = int(stats.read_text().split()[-1]) if proc.returncode == 0 else 0
    else:  # ru_maxrss of a child is at least its parent's at fork time: an over-estimate
        child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        proc = subprocess.CompletedProcess(cmd, os.waitstatus_to_exitcode(status), child.stdout.read(),
                                           child.stderr.read())
        peak_kb = usage.ru_maxrss
    wall = time.perf_counter() - start
    stats.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise SystemExit(f"convert {precision} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    from livepuppet.modelfolder.read import read_folder

    model = read_folder(out)
    return {
        "convert_s": wall,
        "peak_rss_mb": peak_kb / 1024,
        "tflite_bytes": {m: model.find(m, "tflite").files[0].bytes for m in MODELS},
        "savedmodel_bytes": model.total_bytes("savedmodel"),
        "folder_bytes": _folder_bytes(out),
        "checkpoint_bytes": checkpoint.stat().st_size,
        "log": proc.stderr,
    }


def animate(folder: Path, engine: str, source, driving):
    from livepuppet.runtime.choose import open_engine
    from livepuppet.runtime.pipeline import Pipeline

    pipe = Pipeline(open_engine(folder, engine))
    pipe.set_source(source)
    start = time.perf_counter()
    out = pipe.animate(driving)
    return out, (time.perf_counter() - start) / len(driving)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "int8"])
    parser.add_argument("--frames", type=int, default=4, help="driving frames to compare (default 4)")
    parser.add_argument("--workdir", type=Path, help="where the checkpoint and models go (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint and models")
    parser.add_argument("--savedmodel", action="store_true", help="also compare the SavedModel engine (fp32)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="lp-vox-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        import numpy as np
        import torch

        from tests.reference import VOX_PARAMS, animate_reference, make_checkpoint, random_frames, random_video
        from tests.reference import to_torch_nchw

        checkpoint = work / "vox-random.pth.tar"
        start = time.perf_counter()
        generator, kp_detector = make_checkpoint(checkpoint, VOX_PARAMS, seed=args.seed)
        print(f"checkpoint {checkpoint.stat().st_size / 2**20:.1f} MB written in {time.perf_counter() - start:.1f} s",
              file=sys.stderr)

        results = {}
        for precision in args.precisions:
            print(f"converting {precision} ...", file=sys.stderr)
            targets = "tflite,openvino" + (",savedmodel" if args.savedmodel and precision == "fp32" else "")
            results[precision] = convert(checkpoint, work / f"vox-{precision}", precision, targets)
            print(f"  {results[precision]['convert_s']:.1f} s, peak {results[precision]['peak_rss_mb']:.0f} MB",
                  file=sys.stderr)

        source = random_frames(1, 256, 256, seed=args.seed + 1)
        driving = random_video(args.frames, 256, 256, seed=args.seed + 2, speed=0.03)
        start = time.perf_counter()
        torch.set_num_threads(os.cpu_count() or 1)
        reference = animate_reference(generator, kp_detector, to_torch_nchw(source), to_torch_nchw(driving))
        reference = reference.numpy().transpose(0, 2, 3, 1)
        torch_ms = (time.perf_counter() - start) / len(driving) * 1000

        rows = []
        fp32_out = None
        for precision in args.precisions:
            engines = ["tflite"] + (["savedmodel"] if args.savedmodel and precision == "fp32" else [])
            for engine in engines:
                out, per_frame = animate(work / f"vox-{precision}", engine, source, driving)
                if precision == "fp32" and engine == "tflite":
                    fp32_out = out
                err = np.abs(out - reference)
                rows.append((precision, engine, float(err.max()), float(err.mean()), per_frame * 1000,
                             None if fp32_out is None or precision == "fp32"
                             else float(np.abs(out - fp32_out).max())))

        print()
        print(f"vox-256 ({os.cpu_count()} CPU cores), {args.frames} driving frames; PyTorch reference "
              f"{torch_ms:.0f} ms/frame")
        print()
        print("| precision | convert s | peak RSS MB | kp_detector | source_encoder | kp_processing | generator "
              "| .tflite total MB | SavedModels MB | folder MB | x checkpoint |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for precision, r in results.items():
            sizes = " | ".join(f"{r['tflite_bytes'][m] / 2**20:.2f}" for m in MODELS)
            print(f"| {precision} | {r['convert_s']:.1f} | {r['peak_rss_mb']:.0f} | {sizes} "
                  f"| {sum(r['tflite_bytes'].values()) / 2**20:.1f} | {r['savedmodel_bytes'] / 2**20:.1f} "
                  f"| {r['folder_bytes'] / 2**20:.1f} | {r['folder_bytes'] / r['checkpoint_bytes']:.2f} |")
        if "fp32" in results:
            base = sum(results["fp32"]["tflite_bytes"].values())
            ratios = ", ".join(f"{p} {sum(r['tflite_bytes'].values()) / base:.3f}" for p, r in results.items())
            print(f"\n.tflite size relative to fp32: {ratios}")
        print()
        print("| precision | engine | max abs err vs PyTorch | mean abs err vs PyTorch | max abs vs fp32 tflite "
              "| ms/frame (pipeline) |")
        print("|---|---|---:|---:|---:|---:|")
        for precision, engine, emax, emean, ms, vs32 in rows:
            print(f"| {precision} | {engine} | {emax:.2e} | {emean:.2e} | {'-' if vs32 is None else f'{vs32:.2e}'} "
                  f"| {ms:.0f} |")
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
