"""Choosing and opening the engine a command runs: an explicit ``--engine``'s plan, or ``auto``'s pick.

``auto`` times every candidate plan (:func:`livepuppet.runtime.plan.candidates`)
on the bundled portrait's head motion (:mod:`livepuppet.runtime.timing`),
compares its frames with float32's, and keeps the fastest within the fidelity
budget. The choice is measured once per folder content and machine and cached
in the user's cache folder (never in the model folder), then said at start.
LiteRT float32 is always a candidate where the folder is float32, so auto is
never slower than it. One candidate is open at a time: a vox-256 engine holds
several hundred MB, and a first run must not hold two.
"""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path

from rich.console import Console

from livepuppet import paths
from livepuppet.modelfolder.read import read_folder
from livepuppet.modelfolder.schema import ModelFolder
from livepuppet.runtime import cpu as cpumod
from livepuppet.runtime import timing
from livepuppet.runtime.cache import read_record, update_record
from livepuppet.runtime.engines import Engine, open_plan
from livepuppet.runtime.plan import Machine, Plan, Request, candidates, plan

console = Console()  # stdout: a status line, kept apart from the one-line errors on stderr


def open_engine(folder: str | Path | ModelFolder, engine: str = "auto", threads: int | None = None, *,
                exact: bool = False, fast: bool = False, device: str = "cpu") -> Engine:
    """Open ``folder`` on ``engine`` (or the one ``auto`` picks) for ``--exact`` / ``--fast`` / ``--device``."""
    model = folder if isinstance(folder, ModelFolder) else read_folder(folder)
    request = Request(engine, exact, fast, device)
    machine = Machine.current()
    if engine != "auto" or fast:  # --fast forces the int8 plan; its error was measured at convert
        chosen = plan(model, machine, Request("openvino" if engine == "auto" else engine, exact, fast, device))
        if fast:
            _say_fast(chosen)
        return open_plan(model, chosen, threads)
    return open_auto(model, machine, request, threads)


def open_auto(folder: ModelFolder, machine: Machine, request: Request, threads: int | None = None) -> Engine:
    """The engine auto picks for this folder and machine, measured on first use, then cached."""
    key = _machine_key(threads, request)
    cache = cache_file(folder)
    known = {p.key: p for p in candidates(folder, machine, request)}
    cached = read_record(cache).get(key)
    if cached and cached.get("plan") in known:
        chosen = known[cached["plan"]]
        engine = open_plan(folder, chosen, threads)
        _say(chosen, cached["generator_ms"], cached["frame_ms"], "measured before on this machine")
        return engine
    console.print(f"engine: choosing the fastest engine for {folder.path.name} on this machine (once)...")
    results = timing.measure_plans(folder, candidates(folder, machine, request), threads)
    winner = timing.fastest_within_budget(results)
    engine = open_plan(folder, winner.plan, threads)  # with its compiled models cached
    _write(cache, key, winner, results)
    _say(winner.plan, winner.timing.stages_ms["generate"], winner.timing.per_frame_ms,
         f"{winner.mean:.2f} mean / {winner.max:.1f} max levels from fp32")
    return engine


def _say(chosen: Plan, generator_ms: float, frame_ms: float, note: str) -> None:
    unit = cpumod.current().matrix_unit if "bf16" in (chosen.precision, chosen.kp_precision) else ""
    console.print(f"engine: {chosen.label}{f' ({unit})' if unit else ''}, generator {generator_ms:.0f} ms, "
                  f"frame {frame_ms:.0f} ms ({note})")


def _say_fast(chosen: Plan) -> None:
    verified = chosen.steps["generator"].variant.verified
    error = ("its error was not measured" if verified.mean_levels is None or verified.max_levels is None else
             f"{verified.mean_levels:.2f} mean / {verified.max_levels:.1f} max levels from fp32, measured at convert")
    console.print(f"engine: {chosen.label} (--fast: {error})")


def _machine_key(threads: int | None, request: Request) -> str:
    versions = ",".join(f"{p}={_version(p)}" for p in ("openvino", "ai-edge-litert"))
    return (f"{cpumod.current().fingerprint}|threads={threads or cpumod.usable_cores()}|{request.device}|"
            f"exact={request.exact}|{versions}")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def cache_file(folder: ModelFolder) -> Path | None:
    root = paths.user_cache("engine-choice")
    return None if root is None else root / f"{folder.content_key[:32]}.json"


def _write(path: Path | None, key: str, winner: timing.Measured, results: list[timing.Measured]) -> None:
    """Remember the choice; where the cache cannot be written, auto measures again next time."""
    update_record(path, key, {
        "plan": winner.plan.key, "label": winner.label, "frame_ms": winner.timing.per_frame_ms,
        "generator_ms": winner.timing.stages_ms["generate"], "mean": winner.mean, "max": winner.max,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "all": [{"label": r.label, "frame_ms": r.timing.per_frame_ms, "mean": r.mean, "max": r.max}
                for r in results]})
