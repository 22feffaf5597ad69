"""One `livepuppet serve` and 1, 2, 4 sessions at once: aggregate frame rate and each session's latency.

The server runs in its own process; each session is a thread here that
animates the bundled portrait's head-motion clip as fast as the protocol lets
it (two frames in flight), for ``--seconds``. ``--client full``: each session
computes its keypoints (the server's keypoint models, on LiteRT, one thread
each) and decodes the frames, as `run --remote` does, end to end; ``--client
keys``: the keypoints are computed once beforehand and only sent, so the
server's own throughput shows (on a 2-core machine the clients' work would
take cores from it). Latency is a frame's round trip (keypoints sent -> frame
decoded), median and 90th percentile per session.

Usage: python benchmarks/remote_sessions.py --model DIR [--engine auto] [--sessions 1 2 4] [--seconds 15]
                                            [--client keys|full] [--format jpeg] [--url ws://HOST:PORT]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import numpy as np
from remote_kit import load, spawn_server

from livepuppet.modelfolder.read import read_folder
from livepuppet.remote.client import RemoteClient
from livepuppet.runtime import probe
from livepuppet.runtime.engines.remote import RemoteEngine
from livepuppet.remote.keypoint_models import keypoint_engine as kp_engine
from livepuppet.runtime.pipeline import Pipeline


def keypoint_engine(model: Path):
    return kp_engine(read_folder(model), threads=1)


def session(url: str, model: Path, fmt: str, clip: np.ndarray, keys, seconds: float, start: threading.Barrier,
            out: list) -> None:
    client = RemoteClient(url, fmt=fmt)
    assert client.start(30), client.reason
    engine = RemoteEngine(client, keypoint_engine(model))
    pipe = Pipeline(engine)
    pipe.set_source(probe.portrait(engine.frame_size))
    rtts: list[float] = []

    def on_frame(frame, rtt: float) -> None:  # keys: the frame as the client decoded it
        if frame is not None:
            rtts.append(rtt)

    def on_output(out: np.ndarray, timings: dict[str, float]) -> None:  # full: the frame as the live loop gets it
        if "remote" in timings:
            rtts.append(timings["remote"])

    pipe.animate(clip[:1])  # calibration frame, and warm-up
    start.wait()
    t0 = time.perf_counter()
    sent = 0
    while time.perf_counter() - t0 < seconds:
        i = sent % len(clip)
        if keys is not None:  # keypoints computed beforehand: only sent
            client.send_frame(keys.value[i], keys.jacobian[i], on_frame)
        else:  # what the live loop's worker does a frame: keypoints, processing, sent, answered later
            pipe.animate_async(clip[i:i + 1], on_output)
        sent += 1
    client.in_flight.wait_idle(30)
    elapsed = time.perf_counter() - t0
    out.append({"frames": len(rtts), "fps": len(rtts) / elapsed, "rtt": statistics.median(rtts),
                "p90": float(np.percentile(rtts, 90)), "replica": client.welcome["replica"]})
    engine.close()


def precomputed_keys(model: Path, clip: np.ndarray):
    """The clip's processed driving keypoints, against the bundled portrait, as a session would send them."""
    engine = keypoint_engine(model)
    source_kp = engine.detect_keypoints(probe.portrait(engine.frame_size)[None])
    driving = engine.detect_keypoints(clip)
    return engine.process_keypoints(source_kp, driving, driving[0], True, True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="the server's model folder (also the clients')")
    ap.add_argument("--engine", default="auto", help="the server's --engine")
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--client", choices=("keys", "full"), default="keys")
    ap.add_argument("--format", default="jpeg")
    ap.add_argument("--url", help="an already running server (default: start one here)")
    args = ap.parse_args()
    print(f"load before: {load()}")
    server = None
    if args.url:
        url = args.url
    else:
        server, port = spawn_server(args.model, args.engine, extra=("--max-sessions", str(max(args.sessions))))
        url = f"ws://127.0.0.1:{port}"
    try:
        size = read_folder(args.model).frame_size
        clip = probe.head_motion(size, 60)
        keys = precomputed_keys(args.model, clip) if args.client == "keys" else None
        rows = []
        for n in args.sessions:
            out: list[dict] = []
            barrier = threading.Barrier(n)
            threads = [threading.Thread(target=session, args=(url, args.model, args.format, clip, keys, args.seconds,
                                                              barrier, out)) for _ in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rows.append((n, out))
    finally:
        if server is not None:
            server.kill()
            server.wait()
    print(f"model {args.model.name}, server engine {args.engine}, client {args.client}, frames {args.format}, "
          f"{args.seconds:g} s each; load after: {load()}")
    print("| sessions | aggregate fps | x one session | per session fps | round trip ms median (p90), per session |")
    print("|---|---|---|---|---|")
    one = sum(r["fps"] for r in rows[0][1])
    for n, out in rows:
        total = sum(r["fps"] for r in out)
        fps = " / ".join(f"{r['fps']:.1f}" for r in out)
        rtt = " / ".join(f"{r['rtt']:.0f} ({r['p90']:.0f})" for r in out)
        print(f"| {n} | {total:.1f} | {total / one:.2f} | {fps} | {rtt} |")


if __name__ == "__main__":
    main()
