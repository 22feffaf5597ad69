"""The ``int8`` target (``convert --fast``): int8 convolutions wherever the frame stays within the budget.

The generator, traced in the int8 graph (:mod:`livepuppet.fomm.modules.rewrites`),
gets int8 convolutions (:mod:`livepuppet.conversion.quantize`, calibrated on
inputs the folder's own float32 networks make from the bundled face); then
:mod:`livepuppet.conversion.int8_plan` measures each convolution group's error
and keeps the most sensitive at the float precision until the generator is
within the budget. The keypoint detector is quantised the same way and kept (a
variant of its own, which ``--fast`` then runs) only where the whole frame
with it is within the budget. The plan goes with the generator's files
(``generator.int8.plan.json``: every group's error alone at int8, what stayed
in float and why, the keypoint precisions measured); the whole frame's error
against float32 is the variant's ``verified``, which ``bench`` and ``--fast``
state and ``auto`` measures again like any candidate's.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from livepuppet.conversion import openvino_ir, quantize
from livepuppet.conversion.graphs import max_error
from livepuppet.conversion.job import Check, Job
from livepuppet.conversion.targets.openvino import DIRNAME, ir_from
from livepuppet.conversion.targets.tflite import FP32_TOLERANCE
from livepuppet.errors import LivepuppetError
from livepuppet.modelfolder.schema import Variant, Verified
from livepuppet.runtime import cpu as cpumod
from livepuppet.runtime import timing
from livepuppet.runtime.engines import open_plan
from livepuppet.runtime.plan import Machine, Plan, Request, Step, plan

GRAPH = "int8"
SANITY_LEVELS = 64.0  # mean levels from float32 past which the file is broken, not merely coarse
GROUPS_SHOWN = 8  # the most sensitive convolution groups in the table convert prints


def build(job: Job) -> None:
    try:
        import nncf  # noqa: F401
        import openvino as ov
    except ImportError:
        raise LivepuppetError("--fast needs OpenVINO and NNCF: pip install openvino nncf") from None
    quantize.check_cpu()
    if job.find("generator", "openvino") is None:
        raise LivepuppetError("--fast (the int8 target) needs the openvino target too")
    source = _float_generator(job)
    report = _Reporter(job)
    machine = Machine.current()
    calibration, probe_inputs, reference = _inputs(job, machine)
    images = quantize.calibration_images(job.graphs.cfg.frame_shape)
    report.start("calibrating", len(calibration) + len(images))
    core = ov.Core()
    quantized = quantize.quantize_convolutions(core.read_model(str(source)), calibration, report.tick)
    kp_source = job.find("kp_detector", "openvino")
    feeds = [{kp_source.tensors.get(k, k): v for k, v in image.items()} for image in images]
    keypoints = quantize.quantize_convolutions(core.read_model(str(job.tmp / kp_source.files[0].path)), feeds,
                                               report.tick)
    generator, record = _generator(job, core, source, quantized, probe_inputs, machine.cpu.fast_precision(), report)
    job.add(generator)
    record["keypoints"] = _keypoints(job, kp_source, keypoints, reference, machine, report)
    levels = record["keypoints"]["levels"][record["keypoints"]["runs"]]
    path = job.tmp / DIRNAME / "generator.int8.plan.json"
    path.write_text(json.dumps(record, indent=1))
    final = replace(generator, files=(*generator.files, job.entry(path)), verified=Verified("fp32", "int8", None,
                                                                                           *levels))
    job.variants[job.variants.index(generator)] = final
    job.checks.append(Check(f"{final.short}, a frame", levels[0], SANITY_LEVELS, against="float32",
                            unit="mean levels"))
    report.done()
    print_plan(job.console, record)


def _float_generator(job: Job) -> Path:
    """The float32 generator IR in the int8 graph (scratch), checked against its TensorFlow graph."""
    task = job.progress.add_task(f"generator (OpenVINO, {GRAPH} graph, fp32)", total=2, step="tracing")
    network = job.graphs.traced(GRAPH, job.scratch_dir, ["generator"])["generator"]
    xml = job.scratch_dir / f"generator.{GRAPH}.fp32.xml"
    ir_from(network.saved, xml)
    job.progress.update(task, advance=1, step="verifying")
    error = max_error(network.expected, openvino_ir.run(xml, network.inputs))
    job.checks.append(Check(f"generator openvino/{GRAPH}/fp32 (quantised)", error, FP32_TOLERANCE))
    job.progress.update(task, advance=1, step="done")
    return xml


def _inputs(job: Job, machine: Machine) -> tuple[list, list, Any]:
    """Calibration inputs, the probe's generator inputs, and float32's frames on the probe."""
    exact = open_plan(job.folder(), plan(job.folder(), machine, Request("openvino", exact=True)), cache=False)
    calibration = quantize.generator_inputs(exact, quantize.CALIBRATION_FRAMES, seed=3)
    probe_inputs = quantize.generator_inputs(exact, timing.PROBE_FRAMES, seed=0)
    reference = timing.measure(exact).frames
    exact.close()
    return calibration, probe_inputs, reference


def _generator(job: Job, core, source: Path, quantized, probe_inputs: list, fast: str, report) -> tuple:
    """The generator as the measured plan makes it: its variant (files written) and the plan's record."""
    import openvino as ov

    from livepuppet.conversion.int8_plan import Evaluator, make_plan
    from livepuppet.runtime.engines.openvino import HINTS

    original = core.read_model(str(source))
    evaluate = Evaluator(original, probe_inputs, HINTS[fast], cpumod.usable_cores())
    measured, model = make_plan(quantized, original, evaluate, fast, report.step)
    xml = job.tmp / DIRNAME / "generator.int8.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    variant = Variant("generator", "openvino", GRAPH, "int8", (job.entry(xml), job.entry(xml.with_suffix(".bin"))),
                      Verified("fp32", "int8"), kept_precise=tuple(measured.kept))
    return variant, measured.to_dict()


def _keypoints(job: Job, source: Variant, model, reference, machine: Machine, report) -> dict[str, Any]:
    """The whole frame's error with the keypoint detector at int8, at the float precision and at fp32; the int8
    variant is kept (and ``--fast`` runs it) only where its frame is within the budget."""
    import openvino as ov

    xml = job.tmp / DIRNAME / "kp_detector.int8.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    int8 = replace(source, precision="int8", files=(job.entry(xml), job.entry(xml.with_suffix(".bin"))),
                   verified=Verified("fp32", "int8"))
    base = plan(job.folder(), machine, Request("openvino", fast=True))  # keypoints at the float precision
    fast = base.steps["kp_detector"].compute
    options = {"int8": _with_step(base, "kp_detector", Step(int8, fast)), fast: base,
               "fp32": _with_step(base, "kp_detector", Step(base.steps["kp_detector"].variant, "fp32"))}
    report.start("keypoints", len(options))
    levels = {}
    for name, option in options.items():
        report.tick()
        engine = open_plan(job.folder(), option, cache=False)
        levels[name] = timing.levels(timing.measure(engine).frames, reference)
        engine.close()
    if timing.within_budget(*levels["int8"]):
        job.add(replace(int8, verified=Verified("fp32", "int8", None, *levels["int8"])))
        runs = "int8"
    else:
        xml.unlink()
        xml.with_suffix(".bin").unlink()
        runs = fast
    return {"runs": runs, "levels": {k: list(v) for k, v in levels.items()}}


def _with_step(chosen: Plan, network: str, step: Step) -> Plan:
    return replace(chosen, steps={**chosen.steps, network: step})


def print_plan(console: Console, record: dict[str, Any]) -> None:
    """The plan: each convolution group's error alone at int8, which stayed in float, the whole frame's error."""
    table = Table(title=f"--fast: levels from float32 on the bundled face (budget {timing.BUDGET['mean']} "
                        f"mean / {timing.BUDGET['max']:g} max)", title_justify="left")
    for col in ("at int8", "GFLOP", "mean", "max", ""):
        table.add_column(col, justify="left" if col in ("at int8", "") else "right")
    float_precision = record["float_precision"]
    table.add_row(f"no convolution (all {float_precision})", "0", *_levels(record["float_only"]), "")
    table.add_row("every convolution", f"{record['int8_gflop'] + record['float_gflop']:.1f}",
                  *_levels(record["all_int8"]), "")
    for group in record["groups"][:GROUPS_SHOWN]:
        table.add_row(f"  only {group['label']}", f"{group['gflop']:.2f}", *_levels((group["mean"], group["max"])),
                      f"kept {float_precision}" if group["label"] in record["kept"] else "")
    table.add_section()
    table.add_row("generator as planned", f"{record['int8_gflop']:.1f}", *_levels((record["mean"], record["max"])),
                  "")
    keypoints = record["keypoints"]
    for name, err in keypoints["levels"].items():
        table.add_row(f"whole frame, keypoints {name}", "", *_levels(err), "[bold]--fast[/]" if name == keypoints["runs"]
                      else "")
    console.print(table)
    levels = keypoints["levels"][keypoints["runs"]]
    verdict = "within" if timing.within_budget(*levels) else "[yellow]over[/]"
    console.print(f"int8: {record['reason']}; --fast: {levels[0]:.2f} mean / {levels[1]:.1f} max levels from "
                  f"float32, {verdict} the budget (plan {record['seconds']:.0f} s)")


def _levels(err) -> tuple[str, str]:
    return f"{err[0]:.2f}", f"{err[1]:.1f}"


class _Reporter:
    """One progress-bar task for the whole of ``--fast``: calibration, the plan's measurements, the keypoints."""

    def __init__(self, job: Job):
        self.progress, self.phase = job.progress, ""
        self.task = job.progress.add_task("int8 (NNCF, plan by measured error)", total=1, step="")

    def start(self, phase: str, total: int) -> None:
        self.phase = phase
        self.progress.reset(self.task, total=total, step=phase[:12])

    def tick(self) -> None:
        self.progress.advance(self.task)

    def step(self, what: str, total: int) -> None:
        """make_plan's report, before each of its ``total`` measurements."""
        if self.phase != "plan":
            self.start("plan", total)
        self.progress.update(self.task, total=total, advance=1, step=what[:12])

    def done(self) -> None:
        self.progress.update(self.task, total=1, completed=1, step="done")
