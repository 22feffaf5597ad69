"""The browser page's own frame rate against native LiteRT (`livepuppet bench --engine tflite`), same model.

Serves ``--model`` with ``livepuppet web``'s server, opens the live page in
Debian's headless Chromium with a fake camera playing the astronaut clip, picks a
portrait, and times ``--frames`` avatar frames after ``--warmup``: on WebAssembly
with threads (all cores) and with one thread, and with ``--webgpu`` also on
WebGPU (``?backend=webgpu``: here Chromium's software adapter, SwiftShader).
Then runs ``livepuppet bench`` on the same model at the same thread counts.
Prints one table: frame ms, fps, the page's mean ms per stage over the timed
frames (the three models' runs; 'copies', their tensors into and out of the
runtime; 'page', the rest of the frame: camera, crop, canvas), the page's frame
time over native's, and the load average before and after.

Usage: python benchmarks/web_fps.py --model models/vox [--frames 10] [--warmup 3] [--webgpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from livepuppet.web.page_server import make_server  # noqa: E402
from tests import browser  # noqa: E402


def page_fps(pw, base: str, clip: Path, portrait: Path, query: str, frames: int, warmup: int) -> dict:
    b = browser.launch(pw, clip, gpu="webgpu" in query)
    try:
        page = b.new_page()
        page.goto(f"{base}?{query}")
        page.wait_for_function("document.body.dataset.state", timeout=300_000)
        page.set_input_files("#portrait", str(portrait))
        count = "Number(document.body.dataset.frames || 0)"
        page.wait_for_function(f"{count} >= {warmup}", timeout=600_000, polling=50)
        totals = "JSON.parse(document.body.dataset.totals || '{}')"
        start, first, before = time.perf_counter(), page.evaluate(count), page.evaluate(totals)
        page.wait_for_function(f"{count} >= {first + frames}", timeout=900_000, polling=50)
        seconds, done, after = time.perf_counter() - start, page.evaluate(count) - first, page.evaluate(totals)
        mean = {k: (v - before.get(k, 0)) / done for k, v in after.items()}  # the timed frames' mean ms per stage
        return {"ms": seconds * 1e3 / done, "fps": done / seconds, "backend": page.inner_text("#backend"),
                "stages": " · ".join(f"{k} {v:.1f}" for k, v in mean.items())}
    finally:
        b.close()


def native(model: Path, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        subprocess.run([sys.executable, "-m", "livepuppet.cli", "bench", "--engine", "tflite", "--model", str(model),
                        "--threads", str(threads), "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
        result = json.loads(out.read_text())
    return {"ms": result["per_frame_ms"], "fps": result["fps"],
            "stages": " · ".join(f"{k} {v['ms']:.1f}" for k, v in result["stages"].items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--webgpu", action="store_true", help="also the page on WebGPU (software adapter here)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    variants = [(f"threads={cores}&backend=wasm", f"page, WebAssembly, {cores} threads"),
                ("threads=1&backend=wasm", "page, WebAssembly, 1 thread")]
    if args.webgpu:
        variants.append(("backend=webgpu", "page, WebGPU"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = browser.write_y4m(Path(tmp) / "clip.y4m", browser.face_frames(30, 480, 640))
        portrait = Path(tmp) / "portrait.png"
        cv2.imwrite(str(portrait), browser.face_frames(1)[0, :, 40:280, ::-1])
        with browser.serving(make_server(args.model)) as base, sync_playwright() as pw:
            for query, label in variants:
                rows.append((label, page_fps(pw, base, clip, portrait, query, args.frames, args.warmup)))
    native_rows = [(f"native LiteRT, {n} thread{'s' * (n > 1)}", native(args.model, n)) for n in (cores, 1)]
    against = [nat for _, nat in native_rows] + [native_rows[1][1]]  # WebGPU's CPU part runs on one thread
    print(f"{'variant':40s} {'frame ms':>9s} {'fps':>6s} {'page/native':>11s}  stages (ms)")
    for (label, r), nat in zip(rows, against):
        print(f"{label:40s} {r['ms']:9.1f} {r['fps']:6.2f} {r['ms'] / nat['ms']:10.2f}x  {r['stages']}  [{r['backend']}]")
    for label, r in native_rows:
        print(f"{label:40s} {r['ms']:9.1f} {r['fps']:6.2f} {'':>11s}  {r['stages']}")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in load_before)}; "
          f"after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
