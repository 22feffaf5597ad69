"""The server's model: one engine shared by every session, one call at a time, portraits held in memory only.

Sessions wait for the engine in arrival order (a FIFO capacity limiter of 1),
so with each session waiting for at most one frame at a time they take turns.
Concurrent sessions' generator calls are not batched: the exported generator
takes one source per call (its source features have batch 1), and on the CPU
even one source's batch of 4 bought little (``benchmarks/remote_sessions.py``).
The encoded source of a portrait is kept by the hash of its bytes (a few
recent ones, in memory, never on disk or in a log), so a session that
reconnects, or a second session with the same portrait, names it instead of
sending it again.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import anyio
import anyio.to_thread
import numpy as np

from livepuppet.media import to_uint8
from livepuppet.runtime.engines import Engine, Keypoints, SourceData


class Renderer:
    def __init__(self, engine: Engine, max_sources: int = 8) -> None:
        self.engine = engine
        self.frame_size, self.num_kp = engine.frame_size, engine.num_kp
        self.max_sources = max(1, max_sources)
        self._sources: OrderedDict[str, SourceData] = OrderedDict()
        self._limiter: anyio.CapacityLimiter | None = None

    def warm_up(self) -> float:
        """One portrait and one frame through the engine before any session (first calls are slow); ms taken."""
        from livepuppet.runtime import probe

        start = time.perf_counter()
        source = self.engine.encode_source(probe.portrait(self.frame_size))
        self.engine.generate(source.keypoints, source)
        return (time.perf_counter() - start) * 1e3

    async def _in_turn(self, fn, *args):
        if self._limiter is None:  # made in the event loop that uses it
            self._limiter = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def held(self, digest: str) -> SourceData | None:
        source = self._sources.get(digest)
        if source is not None:
            self._sources.move_to_end(digest)
        return source

    async def add_source(self, digest: str, image: np.ndarray) -> SourceData:
        source = await self._in_turn(self.engine.encode_source, image)
        self._sources[digest] = source
        self._sources.move_to_end(digest)
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
        return source

    async def render(self, value: np.ndarray, jacobian: np.ndarray, source: SourceData) -> np.ndarray:
        """One frame: (H, W, 3) RGB uint8."""
        def work() -> np.ndarray:
            return to_uint8(self.engine.generate(Keypoints(value, jacobian), source)[0])

        return await self._in_turn(work)
