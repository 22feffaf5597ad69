"""The frames a client has sent and not yet had back, and how many may be out at once: 1 or 2, measured.

Two frames in flight let the client's own work (keypoints, decoding) and the
network overlap the server's rendering; when the server alone is the
bottleneck a second frame only waits behind the first, adding a whole frame
of latency. So the second slot opens only while the time the server would
otherwise wait for us (the network's share of the round trip, plus the
client's time from a free slot to its next frame) is at least
:data:`OVERLAP` of the server's own time. The network's share is measured on
frames sent while none was in flight: one sent behind another waits in the
server's queue, which is not network.

All methods but :meth:`InFlight.wait_slot`, :meth:`InFlight.wait_idle` and
:meth:`InFlight.told` are called with the owner's condition held; those take it
themselves. Frames leave ``pending`` under the lock but their callers are told
outside it, so ``telling`` counts them until then: idle means both are empty.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from livepuppet.remote import protocol as P

MOST = 2          # frames in flight, at most
OVERLAP = 0.25    # the second slot opens when the server would wait this share of its own time

OnFrame = Callable[["P.Frame | None", float], None]  # (the frame, or None if it was lost; round-trip ms)


@dataclass
class Pending:
    sent: float
    on_frame: OnFrame
    alone: bool  # nothing else was in flight: its round trip has no queueing in it


class InFlight:
    def __init__(self, cond: threading.Condition, up: Callable[[], bool]) -> None:
        self.cond, self.up = cond, up
        self.pending: dict[int, Pending] = {}
        self.next_id = 1
        self.telling = 0  # frames answered or lost whose callers are not yet told
        self.freed = 0.0  # when a slot last opened (perf_counter)
        self.recent_ms = {"server": 0.0, "network": 0.0, "client": 0.0}  # recent means (exponential)

    def limit(self) -> int:
        ms = self.recent_ms
        return MOST if ms["network"] + ms["client"] >= OVERLAP * ms["server"] else 1

    def slot_open(self) -> bool:
        return len(self.pending) < self.limit() or not self.up()

    def wait_slot(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(self.slot_open, timeout)

    def wait_idle(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: not self.pending and not self.telling, timeout)

    def told(self, n: int) -> None:
        """``n`` frames taken by :meth:`answer` or :meth:`lose` have been handed to their callers."""
        with self.cond:
            self.telling -= n
            self.cond.notify_all()

    def add(self, on_frame: OnFrame) -> int:
        """A new frame id, counted in flight from now."""
        now = time.perf_counter()
        if self.freed:
            self._mean("client", (now - self.freed) * 1e3)
        frame_id, self.next_id = self.next_id, self.next_id + 1
        self.pending[frame_id] = Pending(now, on_frame, not self.pending)
        return frame_id

    def answer(self, frame: P.Frame, now: float) -> list[tuple[Pending, P.Frame | None]]:
        """The frames ``frame`` answers: its own, and earlier ones the server skipped (answered with None)."""
        done = sorted(i for i in self.pending if i <= frame.frame_id)
        answered = [(i, self.pending.pop(i)) for i in done]
        if answered and answered[-1][0] == frame.frame_id:
            own = answered[-1][1]
            self._mean("server", frame.server_ms)
            if own.alone:
                self._mean("network", max(0.0, (now - own.sent) * 1e3 - frame.server_ms))
        self.freed = now
        self.telling += len(answered)
        self.cond.notify_all()
        return [(p, frame if i == frame.frame_id else None) for i, p in answered]

    def lose(self, frame_id: int | None = None) -> list[Pending]:
        """Take one frame (or, with None, all of them) out of flight, as lost."""
        if frame_id is None:
            lost, self.pending = list(self.pending.values()), {}
        else:
            lost = [p for p in [self.pending.pop(frame_id, None)] if p is not None]
        self.telling += len(lost)
        self.cond.notify_all()
        return lost

    def _mean(self, key: str, ms: float) -> None:
        self.recent_ms[key] = ms if not self.recent_ms[key] else 0.8 * self.recent_ms[key] + 0.2 * ms
