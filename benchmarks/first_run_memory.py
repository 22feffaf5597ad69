"""A user's first run, measured: a hand-placed vox-256 checkpoint -> convert -> engine choice -> avatar frames.

Runs the real command in a fresh process with an empty home and cache, the
way a new user does, and reports its peak resident memory (``/usr/bin/time``'s
maximum RSS, which is the process's own high-water mark), the wall time, the
model folder's size against the checkpoint's, and the peak of a second run
(converted model, engine choice cached). The checkpoint has random weights
(tests/reference/factory.py, the published weights cannot be downloaded here).

    .venv/bin/python benchmarks/first_run_memory.py [--frames 8] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _inputs(work: Path) -> tuple[Path, Path]:
    """A face photo and a short clip of it moving (scikit-image's astronaut)."""
    import cv2
    import numpy as np
    from skimage import data

    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(work / "face.png"), face)
    clip = work / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 240))
    for i in range(40):
        m = cv2.getRotationMatrix2D((256, 256), 6 * np.sin(i / 6), 1.0)
        writer.write(cv2.resize(cv2.warpAffine(face, m, (512, 512)), (320, 240)))
    writer.release()
    return work / "face.png", clip


def _run(work: Path, face: Path, clip: Path, frames: int) -> dict:
    env = {**os.environ, "LIVEPUPPET_HOME": str(work / "home"), "LIVEPUPPET_CACHE": str(work / "cache")}
    stats = work / "time.txt"
    cmd = ["/usr/bin/time", "-v", "-o", str(stats), sys.executable, "-m", "livepuppet.cli", "run", "--source",
           str(face), "--camera", str(clip), "--no-preview", "--every-frame", "--frames", str(frames), "--yes"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stats.read_text()).group(1))
    return {"peak_mb": peak_kb / 1024, "wall_s": wall, "said": proc.stdout + proc.stderr}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    if not Path("/usr/bin/time").exists():
        raise SystemExit("needs GNU time: apt-get install time")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="livepuppet-first-run-"))
    try:
        from livepuppet.hub.registry import get_entry
        from tests.reference import VOX_PARAMS, make_checkpoint

        checkpoint = work / "home" / "checkpoint" / get_entry().filename
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        make_checkpoint(checkpoint, VOX_PARAMS, seed=0)
        face, clip = _inputs(work)
        first = _run(work, face, clip, args.frames)
        second = _run(work, face, clip, args.frames)
        folder = next((work / "home" / "models").iterdir())
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"first run (convert, engine choice, {args.frames} frames): peak {first['peak_mb']:.0f} MB, "
              f"{first['wall_s']:.0f} s")
        print(f"second run (all cached):                      peak {second['peak_mb']:.0f} MB, "
              f"{second['wall_s']:.0f} s")
        print(f"model folder {size / 1e6:.0f} MB for a {checkpoint.stat().st_size / 1e6:.0f} MB checkpoint "
              f"({size / checkpoint.stat().st_size:.2f}x)")
        print("engine line:", next((l for l in first["said"].splitlines() if l.startswith("engine:")), "?"))
        print(f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
