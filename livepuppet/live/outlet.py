"""An output sink on its own thread, so the main thread never waits for it.

Virtual-camera pacing (``sleep_until_next_frame``) and video encoding used to
run on the main thread and froze keys and the preview for up to a frame period
per sink. Each sink now sits behind a bounded queue drained by its own thread:

* a sink that marks itself ``newest_wins`` (the virtual camera) keeps only the
  newest frame: a late frame is worth nothing to a video call;
* any other sink (a recording) gets every frame, in order. Its queue holds
  ``size`` frames; only a sink that falls that far behind makes ``send`` wait,
  which bounds memory instead of losing frames.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np


class Outlet(threading.Thread):
    """Feeds one sink (``send``/``close``) from a bounded queue on a thread of its own."""

    def __init__(self, sink: object, size: int = 32, *, live: bool = True) -> None:
        super().__init__(name=f"sink:{type(sink).__name__}", daemon=True)
        self.sink, self.size = sink, max(1, size)
        # A file camera is animated frame by frame and every stage applies backpressure instead.
        self.newest_wins = live and bool(getattr(sink, "newest_wins", False))
        self.stage = str(getattr(sink, "stage", "sink"))
        self.ms: deque[float] = deque(maxlen=10000)  # work per frame, pacing waits left out
        self.dropped = 0
        self.error: BaseException | None = None
        self._items: deque[np.ndarray] = deque()
        self._cond = threading.Condition()
        self._closing = False

    def send(self, frame: np.ndarray) -> None:
        """Queue a frame; raises the sink's own error, if it had one, on the caller's thread."""
        with self._cond:
            if self.error is not None:
                raise self.error
            if self.newest_wins:
                self.dropped += len(self._items)
                self._items.clear()
            else:
                self._cond.wait_for(lambda: len(self._items) < self.size or self.error is not None)
            self._items.append(frame)
            self._cond.notify_all()

    def run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._items or self._closing)
                if not self._items:
                    return
                frame = self._items.popleft()
                self._cond.notify_all()
            t0 = time.perf_counter()
            try:
                self.sink.send(frame)  # type: ignore[attr-defined]
            except BaseException as e:  # raised again on the main thread by send()/close()
                with self._cond:
                    self.error = e
                    self._items.clear()
                    self._cond.notify_all()
                return
            self.ms.append((time.perf_counter() - t0) * 1000 - getattr(self.sink, "last_sleep_ms", 0.0))

    def close(self) -> None:
        """Write what is queued, then close the sink; safe to call twice."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self.is_alive():
            self.join()
        self.sink.close()  # type: ignore[attr-defined]
        if self.error is not None:
            raise self.error
