"""A remote generator: keypoints here, the generator on a ``livepuppet serve`` machine, the camera never sent.

Keypoint detection and processing run on a local engine (the user's own
model, or the server's two small keypoint models fetched once); only the
processed driving keypoints go up, and the avatar frame comes down. While the
server is away the engine renders on ``fallback`` (a local model of the same
checkpoint) and says so, or, with none, holds the last frame with a notice;
the client reconnects by itself and remote rendering resumes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from livepuppet.remote import protocol as P
from livepuppet.remote.client import RemoteClient
from livepuppet.runtime.engines.base import Engine, Keypoints, SourceData

FRAME_TIMEOUT = 10.0  # s a synchronous generate waits for one frame before rendering it locally (or holding)
_EMPTY = np.zeros((0,), np.float32)


class _Wait:
    """One frame of a synchronous generate, answered on the link thread."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.frame: P.Frame | None = None
        self.rtt = 0.0

    def __call__(self, frame: P.Frame | None, rtt: float) -> None:
        self.frame, self.rtt = frame, rtt
        self.event.set()


class RemoteEngine(Engine):
    name = "remote"

    def __init__(self, client: RemoteClient, keypoints: Engine, fallback: Engine | None = None) -> None:
        super().__init__(keypoints.folder, keypoints.plan)
        self.client, self.local, self.fallback = client, keypoints, fallback
        self.counts = {"remote": 0, "local": 0, "held": 0}
        self.timings: dict[str, float] = {}
        self._image: np.ndarray | None = None             # the portrait crop, for the fallback's source
        self._fallback_source: SourceData | None = None
        self._last: np.ndarray | None = None              # the newest frame out, (1, H, W, 3) float32
        self._newest = 0.0                                # send time of the newest frame delivered
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        welcome = self.client.welcome or {}
        kp = f"{self.local.plan.engine} {self.local.plan.kp_precision}"
        return f"remote {welcome.get('engine', '?')} at {self.client.url} (keypoints here on {kp})"

    @property
    def notice(self) -> str | None:
        if self.client.up:
            return None
        doing = "rendering locally" if self.fallback is not None else "holding the last frame"
        if self.client.state == "refused":
            return f"remote refused ({self.client.reason[:60]}): {doing}"
        return f"server away: {doing}; reconnecting..."

    def _run(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError("a remote engine runs models through its local engine or its server")

    def detect_keypoints(self, images: np.ndarray) -> Keypoints:
        return self.local.detect_keypoints(images)

    def process_keypoints(self, source: Keypoints, driving: Keypoints, initial: Keypoints,
                          relative: bool, adapt_scale: bool) -> Keypoints:
        return self.local.process_keypoints(source, driving, initial, relative, adapt_scale)

    def encode_source(self, source: np.ndarray) -> SourceData:
        """The portrait's keypoints here; the portrait itself goes to the server (once; again after a reconnect)."""
        image = np.ascontiguousarray(source, np.float32).reshape(*self.frame_size, 3)
        keypoints = self.local.detect_keypoints(image[None])
        message = P.portrait_png(image)
        with self._lock:
            self._image, self._fallback_source, self._last = image, None, None
        self.client.set_portrait(P.sha256_hex(message[4:]), message)
        return SourceData(keypoints, _EMPTY, _EMPTY)

    # -- frames ---------------------------------------------------------------------------------------------

    def generate(self, driving: Keypoints, source: SourceData) -> np.ndarray:
        """Every frame, in order: sent (two in flight), and any the server did not answer rendered here."""
        waits = []
        for i in range(len(driving.value)):
            wait = _Wait()
            waits.append((wait, self.client.send_frame(driving.value[i], driving.jacobian[i], wait)))
        out = []
        for i, (wait, sent) in enumerate(waits):
            if sent and wait.event.wait(FRAME_TIMEOUT) and wait.frame is not None:
                out.append(self._arrived(wait.frame, wait.rtt, time.perf_counter())[0])
            else:
                out.append(self._stand_in(driving[i], source)[0])
        return np.stack(out)

    def generate_async(self, driving: Keypoints, source: SourceData,
                       done: Callable[[np.ndarray, dict[str, float]], None]) -> None:
        """One frame sent, ``done`` called from the link thread when it is back; a frame lost with the
        connection is dropped (a newer one follows). While the server is away: rendered here, or held."""
        if len(driving.value) != 1:
            done(self.generate(driving, source), dict(self.timings))
            return
        sent_at = time.perf_counter()

        def arrived(frame: P.Frame | None, rtt: float) -> None:
            if frame is not None and sent_at > self._newest:  # newest wins: an older frame is never shown
                done(self._arrived(frame, rtt, sent_at), dict(self.timings))

        if not self.client.send_frame(driving.value[0], driving.jacobian[0], arrived):
            done(self._stand_in(driving, source), {})

    def drain(self, timeout: float) -> None:
        self.client.in_flight.wait_idle(timeout)

    def wait_ready(self, timeout: float) -> bool:
        """Wait until a frame would be sent at once, so the frame the caller takes next is the newest."""
        return self.client.in_flight.wait_slot(timeout)

    def _arrived(self, frame: P.Frame, rtt: float, sent_at: float) -> np.ndarray:
        out = (frame.image.astype(np.float32) * np.float32(1 / 255))[None]
        with self._lock:
            self._last, self._newest = out, max(self._newest, sent_at)
            self.timings = {"remote": rtt, "server": frame.server_ms}
            self.counts["remote"] += 1
        return out

    def _stand_in(self, driving: Keypoints, source: SourceData) -> np.ndarray:
        """A frame the server could not render: the fallback's, else the last frame (else the portrait)."""
        if self.fallback is None:
            with self._lock:
                self.counts["held"] += len(driving.value)
                held = self._last if self._last is not None else self._image[None]
            return np.repeat(held, len(driving.value), axis=0)
        with self._lock:
            if self._fallback_source is None:
                self._fallback_source = self.fallback.encode_source(self._image)
            local_source = self._fallback_source
        start = time.perf_counter()
        out = self.fallback.generate(driving, local_source)
        with self._lock:
            self._last = out[-1:]
            self.counts["local"] += len(driving.value)
            self.timings = {"local": (time.perf_counter() - start) * 1e3}
        return out

    def summary(self) -> str:
        c = self.counts
        parts = [f"{c['remote']} frames rendered remotely"]
        parts += [f"{c['local']} locally while the server was away"] if c["local"] else []
        parts += [f"{c['held']} held while it was away"] if c["held"] else []
        client = self.client
        up = (client.bytes_up - client.portrait_bytes) / max(1, c["remote"])
        down = client.bytes_down / max(1, c["remote"])
        return (f"remote: {', '.join(parts)}; {client.reconnects} reconnects; {up / 1e3:.2f} KB up and "
                f"{down / 1e3:.1f} KB down a frame, portraits {client.portrait_bytes / 1e3:.0f} KB up")

    def close(self) -> None:
        self.client.close()
        self.local.close()
