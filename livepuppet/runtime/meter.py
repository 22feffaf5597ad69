"""The one definition of the live numbers: frames per second and latency, as every report states them.

* **fps**: avatar frames out per second: frames the model made and the loop
  sent to its outputs, over the time from the first such frame to the last.
  Camera frames passed through (key ``t``), frames dropped and loop passes do
  not count.
* **latency**: from the camera grab of a frame to its avatar going out, in
  milliseconds; the median is reported.

The live overlay shows both over the last :data:`RECENT` frames, the summary at
exit over the whole run; ``bench`` times a frame without a camera and states
its numbers with the same two functions (a frame whose input was ready when its
timing began has its latency from then). All times are ``time.monotonic()``
seconds, the clock camera grabs are stamped with.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from typing import Sequence

RECENT = 30  # frames: what the overlay's numbers are taken over
KEPT = 10000  # frames kept for the run's median latency: bounded over a day-long run


def frames_per_second(out_times: Sequence[float]) -> float:
    """Avatar frames out per second from the times they went out; 0 when there is no rate to tell
    (fewer than two frames, or all of them out at one instant, as one batch leaves)."""
    if len(out_times) < 2 or out_times[-1] <= out_times[0]:
        return 0.0
    return (len(out_times) - 1) / (out_times[-1] - out_times[0])


def latency_ms(grabbed: float, out: float) -> float:
    """Camera grab to avatar out, in milliseconds."""
    return (out - grabbed) * 1000.0


class AvatarMeter:
    """Counts avatar frames out: when each went out and how long after its camera grab."""

    def __init__(self) -> None:
        self.frames = 0
        self.first = self.last = 0.0  # monotonic seconds of the first and last avatar frame out
        self._times: deque[float] = deque(maxlen=RECENT)
        self._latency: deque[float] = deque(maxlen=KEPT)

    def out(self, grabbed: float, now: float | None = None) -> None:
        """One avatar frame went out (``now``: when; default the present) for a camera frame grabbed at ``grabbed``."""
        now = time.monotonic() if now is None else now
        self.frames += 1
        self.first = self.first or now
        self.last = now
        self._times.append(now)
        self._latency.append(latency_ms(grabbed, now))

    def fps(self, recent: bool = False) -> float:
        """Over the last RECENT frames (the overlay) or the whole run (the summary)."""
        if recent:
            return frames_per_second(self._times)
        return (self.frames - 1) / (self.last - self.first) if self.frames > 1 and self.last > self.first else 0.0

    def latency(self, recent: bool = False) -> float | None:
        """Median camera-grab-to-avatar-out milliseconds, over the last RECENT frames or the run; None before any."""
        values = list(self._latency)[-RECENT:] if recent else self._latency
        return statistics.median(values) if values else None

    def text(self, recent: bool = False) -> str:
        """'12.5 fps, latency 96 ms': how the overlay and the summary say it."""
        latency = self.latency(recent)
        return f"{self.fps(recent):.1f} fps, latency {'-' if latency is None else f'{latency:.0f}'} ms"
