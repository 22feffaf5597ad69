"""Time and peak memory of ``load_checkpoint`` on a ~250 MB checkpoint.

Writes a FOMM-sized checkpoint with torch (legacy format by default), then reads
it in a fresh interpreter that never imports torch, and prints the read time,
the sha256 pass on its own, the RSS after imports and the peak RSS. The file is
deleted afterwards. Usage: python benchmarks/checkpoint_read.py [--zip] [--keep PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

READER = r"""
import json, sys, time
sys.modules["torch"] = None  # prove the reader needs no torch
import numpy
from livepuppet.fomm.checkpoint import file_sha256, load_checkpoint

def rss_mb(field="VmRSS"):
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (torch-sized) parent.
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":")) / 1024

base = rss_mb()
t0 = time.perf_counter()
ckpt = load_checkpoint(sys.argv[1])
t1 = time.perf_counter()
file_sha256(sys.argv[1])
t2 = time.perf_counter()
arrays = sum(a.nbytes for sd in (ckpt.generator, ckpt.kp_detector) for a in sd.values())
print(json.dumps({"load_s": t1 - t0, "sha256_s": t2 - t1, "rss_after_imports_mb": base,
                  "rss_after_load_mb": rss_mb(), "arrays_mb": arrays / 2**20,
                  "peak_rss_mb": rss_mb("VmHWM")}))
"""


def make_checkpoint(path: Path, zipped: bool) -> None:
    """60 tensors of 1M float32 plus conv/BN-like small ones, split like FOMM's two models."""
    import torch

    torch.manual_seed(0)
    gen = {f"block{i}.conv.weight": torch.randn(256, 256, 4, 4) for i in range(40)}
    gen.update({f"block{i}.norm.num_batches_tracked": torch.tensor(5) for i in range(40)})
    kp = {f"block{i}.conv.weight": torch.randn(1024, 1024) for i in range(20)}
    kp["odd.weight"] = torch.randn(1000, 1000).t()  # non-contiguous: one copy on load
    torch.save({"generator": gen, "kp_detector": kp, "epoch": 1}, path, _use_new_zipfile_serialization=zipped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", action="store_true", help="use the zip serialisation")
    parser.add_argument("--keep", type=Path, help="write the checkpoint here and keep it")
    args = parser.parse_args()
    path = args.keep or Path(tempfile.gettempdir()) / "livepuppet-bench.pth.tar"
    try:
        make_checkpoint(path, args.zip)
        size_mb = path.stat().st_size / 2**20
        out = subprocess.run([sys.executable, "-c", READER, str(path)], cwd=ROOT,
                             check=True, capture_output=True, text=True).stdout
        result = json.loads(out)
        print(f"format: {'zip' if args.zip else 'legacy'}, file: {size_mb:.0f} MB")
        print(f"load_checkpoint: {result['load_s']:.2f} s (incl. sha256), "
              f"sha256 pass alone: {result['sha256_s']:.2f} s")
        print(f"RSS after imports: {result['rss_after_imports_mb']:.0f} MB, after load: "
              f"{result['rss_after_load_mb']:.0f} MB, peak: {result['peak_rss_mb']:.0f} MB "
              f"(arrays: {result['arrays_mb']:.0f} MB)")
    finally:
        if args.keep is None:
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
