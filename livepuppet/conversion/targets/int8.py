"""The ``int8`` target (``convert --fast``): the plain-graph generator quantised to int8 with NNCF.

Calibrated on generator inputs the folder's own float32 networks make from the
bundled face (:mod:`livepuppet.conversion.quantize`); the result is run at
once, the whole frame compared with float32's on the probe clip, and that
error recorded in the variant: ``auto`` picks int8 only within the budget.
"""

from __future__ import annotations

from dataclasses import replace

from livepuppet.conversion.job import Check, Job
from livepuppet.conversion.quantize import calibration_inputs, quantize_generator
from livepuppet.conversion.targets.openvino import DIRNAME
from livepuppet.errors import LivepuppetError
from livepuppet.modelfolder.schema import Variant, Verified
from livepuppet.runtime import timing
from livepuppet.runtime.engines import open_plan
from livepuppet.runtime.plan import Machine, Request, plan

GRAPH = "plain"  # int8 from the plain graph ran 1.1x faster than from the XNNPACK one (benchmarks/README.md)
SANITY_LEVELS = 64.0  # mean levels from float32 past which the file is broken, not merely coarse


def build(job: Job) -> None:
    source = job.scratch.get("generator.plain.fp32.xml")
    if source is None:
        raise LivepuppetError("--fast (the int8 target) needs the openvino target too")
    try:
        import nncf  # noqa: F401
    except ImportError:
        raise LivepuppetError("--fast needs NNCF: pip install nncf") from None
    task = job.progress.add_task("generator (int8, NNCF)", total=3, step="calibrating")
    machine = Machine.current()
    exact = open_plan(job.folder(), plan(job.folder(), machine, Request("openvino", exact=True)), cache=False)
    samples = calibration_inputs(exact)
    job.progress.update(task, advance=1, step="quantising")
    xml = job.tmp / DIRNAME / "generator.plain.int8.xml"
    kept = quantize_generator(source, xml, samples, final_convs=1)
    variant = Variant("generator", "openvino", GRAPH, "int8", (job.entry(xml), job.entry(xml.with_suffix(".bin"))),
                      Verified("fp32", "int8"), kept_precise=tuple(kept))
    job.progress.update(task, advance=1, step="measuring")
    reference = timing.measure(exact).frames
    exact.close()
    job.add(variant)
    fast = open_plan(job.folder(), plan(job.folder(), machine, Request("openvino", fast=True)), cache=False)
    mean, max_ = timing.levels(timing.measure(fast).frames, reference)
    fast.close()
    job.variants[-1] = replace(variant, verified=Verified("fp32", "int8", None, mean, max_))
    job.checks.append(Check(f"{variant.short}, a frame", mean, SANITY_LEVELS,
                            against="float32", unit="mean levels"))
    job.progress.update(task, advance=1, step="done")
    job.console.print(f"int8 generator: {mean:.2f} mean / {max_:.1f} max levels from float32 on the bundled face "
                      f"({len(kept)} layers kept at the float precision)")
