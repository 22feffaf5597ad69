"""`run --remote` on loopback against a local run: frame rate, latency, bytes a frame (issue 22's bars).

The server is `livepuppet serve` in its own process on this machine; the
client is the live loop (run_live) in this one, its keypoints on the same
engine as the local run, a camera that plays a 640x480 clip of a moving face
live (newest frame wins) at a fixed rate. Local and remote take turns,
``--repeats`` times; medians are printed.

* fps: camera at 30 fps, faster than the model: the rate frames come out (and
  the latency then, which includes a frame's wait for the model).
* latency: camera at ``--latency-fps`` (below what either can do, so no frame
  waits behind another): the median from a camera frame's grab to its avatar
  frame leaving for the sinks, as the loop's summary reports it. "added" is
  remote minus local, each repeat's pair, median.
* bytes: WebSocket payloads a frame, up (keypoints) and down (the frame), after
  the portrait, counted by the client.

On one machine the server and the client share the cores; on a real network
the client's work overlaps the server's.

Usage: python benchmarks/remote_loopback.py --model DIR [--engine auto] [--frames 80] [--repeats 3]
                                            [--latency-fps 4] [--format jpeg] [--quality 90]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from remote_kit import PacedClip, clip_frames, load, spawn_server

from livepuppet.live import FaceFramer, open_camera, run_live
from livepuppet.remote.client import RemoteClient
from livepuppet.runtime import probe
from livepuppet.runtime.choose import open_engine
from livepuppet.runtime.engines.remote import RemoteEngine
from livepuppet.runtime.pipeline import Pipeline


class _Null:
    def send(self, frame) -> None:
        pass

    def close(self) -> None:
        pass


def one_run(engine, frames, fps: float, count: int) -> dict:
    from rich.console import Console

    capture = open_camera(0, opener=PacedClip(frames, fps), live=True, lister=lambda: [])
    pipe = Pipeline(engine, smoothing=0.5)
    stats = run_live(pipe, capture, FaceFramer(), [_Null()], frames=count, sources=[probe.portrait(engine.frame_size)],
                     console=Console(quiet=True))
    capture.release()
    client = getattr(engine, "client", None)
    return {"fps": stats.fps, "latency": stats.latency_ms or 0.0, "remote": stats.stage_ms.get("remote"),
            "server": stats.stage_ms.get("server"),
            "stages": {k: round(v, 1) for k, v in stats.stage_ms.items()},
            "in flight": client and (client.in_flight.limit(),
                                     {k: round(v, 1) for k, v in client.in_flight.recent_ms.items()})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--frames", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--latency-fps", type=float, default=4.0)
    ap.add_argument("--format", default="jpeg")
    ap.add_argument("--quality", type=int, default=90)
    args = ap.parse_args()
    print(f"load before: {load()}")
    server, port = spawn_server(args.model, args.engine)
    try:
        local = open_engine(args.model, args.engine)
        client = RemoteClient(f"ws://127.0.0.1:{port}", fmt=args.format, quality=args.quality)
        assert client.start(30), client.reason
        remote = RemoteEngine(client, local, local)
        frames = clip_frames()
        rows: dict[str, list[dict]] = {"local": [], "remote": [], "local latency": [], "remote latency": []}
        one_run(local, frames, 30, 10)  # warm-up, both
        one_run(remote, frames, 30, 10)
        for _ in range(args.repeats):
            for name, engine in (("local", local), ("remote", remote)):
                rows[name].append(one_run(engine, frames, 30, args.frames))
                rows[f"{name} latency"].append(one_run(engine, frames, args.latency_fps,
                                                       max(12, int(args.frames * args.latency_fps / 30))))
        up = (client.bytes_up - client.portrait_bytes) / max(1, remote.counts["remote"])
        down = client.bytes_down / max(1, remote.counts["remote"])
        client.close()
    finally:
        server.kill()
        server.wait()
    med = {k: {m: statistics.median(r[m] for r in v if r[m] is not None) for m in ("fps", "latency")}
           for k, v in rows.items()}
    added = statistics.median(r["latency"] - l["latency"] for r, l in zip(rows["remote latency"],
                                                                         rows["local latency"]))
    rt = statistics.median(r["remote"] for r in rows["remote latency"])
    sv = statistics.median(r["server"] for r in rows["remote latency"])
    print(f"model {args.model.name}, engine {args.engine} ({local.label}), frames {args.format} q{args.quality}, "
          f"{args.repeats} repeats interleaved, load after: {load()}")
    print("| | local | remote (loopback) | remote / local |")
    print("|---|---|---|---|")
    print(f"| fps (camera 30 fps) | {med['local']['fps']:.2f} | {med['remote']['fps']:.2f} | "
          f"{med['remote']['fps'] / med['local']['fps']:.1%} |")
    print(f"| latency ms (camera 30 fps: frames wait for the model) | {med['local']['latency']:.1f} | "
          f"{med['remote']['latency']:.1f} | {med['remote']['latency'] - med['local']['latency']:+.1f} ms |")
    print(f"| latency ms (camera {args.latency_fps:g} fps) | {med['local latency']['latency']:.1f} | "
          f"{med['remote latency']['latency']:.1f} | +{added:.1f} ms |")
    print(f"| round trip / server ms | | {rt:.1f} / {sv:.1f} | |")
    print(f"| bytes a frame up / down | | {up:.0f} / {down:.0f} | |")
    print("per repeat:", {k: [f"{r['fps']:.2f} fps {r['latency']:.0f} ms" for r in v] for k, v in rows.items()})
    print("stage medians, last repeat:", {k: v[-1]["stages"] for k, v in rows.items()})
    print("frames in flight at the end of each remote run, and the recent ms it was chosen on:",
          [r["in flight"] for r in rows["remote"] + rows["remote latency"]])


if __name__ == "__main__":
    main()
