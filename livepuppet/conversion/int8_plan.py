"""Which of the int8 generator's convolutions stay in float: measured, group by group, on the bundled face.

Every convolution group (:mod:`.int8_graph`) is measured alone at int8, the
rest of the generator at the engine's float precision: its error against
float32 on the probe's head motion (the frames ``auto`` checks every candidate
on) is that group's sensitivity, recorded with the plan. If the generator
with every group at int8 is over the fidelity budget, the most sensitive
groups are put back in float, one more at a time, until the whole is within
it. Two limits keep int8 worth having and the search bounded: at most
:data:`MAX_FLOAT_SHARE` of the work goes back to float, and if the float
generator alone is over the budget (no mix can be within it) nothing is
kept. The result says which, and why.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from livepuppet.conversion.int8_graph import ConvGroup, describe, groups, keep_in_float
from livepuppet.runtime.timing import BUDGET, levels, within_budget

MAX_FLOAT_SHARE = 0.5  # of the quantised convolutions' GFLOP: past this int8 buys too little over float
NOISE = 0.05  # a group whose error alone is within 5% of the float generator's is not sensitive


@dataclass
class GroupError:
    """One group's sensitivity: the generator's error with only this group at int8."""

    label: str
    convs: list[str]
    gflop: float
    mean: float
    max: float

    @property
    def score(self) -> float:
        """Its use of the budget, mean and max alike (either over 1 alone breaks it)."""
        return self.mean / BUDGET["mean"] + self.max / BUDGET["max"]


@dataclass
class Int8Plan:
    """The mixed-precision plan recorded in the model folder (``fast.plan``)."""

    float_precision: str
    kept: list[str] = field(default_factory=list)  # labels of the groups kept in float, most sensitive first
    kept_convs: list[str] = field(default_factory=list)
    int8_gflop: float = 0.0
    float_gflop: float = 0.0  # quantisable work kept in float
    mean: float = 0.0  # the generator's error with this plan, levels against float32 on the probe
    max: float = 0.0
    float_only: tuple[float, float] = (0.0, 0.0)  # the generator at float precision alone
    all_int8: tuple[float, float] = (0.0, 0.0)
    reason: str = ""
    groups: list[GroupError] = field(default_factory=list)  # every group's sensitivity, most sensitive first
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Evaluator:
    """Compiles a generator variant and measures its error on fixed generator inputs against float32."""

    def __init__(self, original: Any, feeds: list[dict[str, np.ndarray]], precision_hint: str, threads: int):
        import openvino as ov

        self.core, self.feeds, self.threads = ov.Core(), feeds, threads
        self.hint = precision_hint
        self.reference = self._run(original, "f32")

    def _run(self, model: Any, hint: str) -> np.ndarray:
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": self.threads, "ENABLE_CPU_PINNING": False}
        compiled = self.core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()
        out = []
        for feed in self.feeds:
            request.infer(feed)
            out.append(request.get_output_tensor(0).data.copy())
        return np.concatenate(out)

    def __call__(self, model: Any) -> tuple[float, float]:
        return levels(self._run(model, self.hint), self.reference)


def make_plan(quantized: Any, original: Any, evaluate: Callable[[Any], tuple[float, float]], float_precision: str,
              step: Callable[[str, int], None] = lambda what, total: None) -> tuple[Int8Plan, Any]:
    """(the plan, the generator it describes). ``step(what, total)`` is called before each measurement."""
    start = time.perf_counter()
    found = groups(quantized, describe(original))
    total = sum(g.gflop for g in found)
    plan = Int8Plan(float_precision, int8_gflop=total)
    step("float alone", 2 + len(found))
    plan.float_only = evaluate(keep_in_float(quantized, original, found))
    step("every group at int8", 2 + len(found))
    plan.all_int8 = plan.mean, plan.max = evaluate(quantized)
    plan.groups = _sensitivities(quantized, original, found, evaluate, step)  # recorded whatever the plan
    if within_budget(*plan.all_int8):
        plan.reason = "every convolution at int8 is within the budget"
    elif not within_budget(*plan.float_only):
        plan.reason = (f"the generator at {float_precision} alone is over the budget, so no mix can be within it: "
                       "every convolution at int8")
    else:
        chosen = _keep_until_within(quantized, original, found, plan, evaluate, step)
        quantized = keep_in_float(quantized, original, chosen)
    plan.seconds = time.perf_counter() - start
    return plan, quantized


def _sensitivities(quantized: Any, original: Any, found: list[ConvGroup], evaluate, step) -> list[GroupError]:
    out = []
    for group in found:
        step(f"sensitivity: {group.label}", 2 + len(found))
        others = [g for g in found if g is not group]
        mean, max_ = evaluate(keep_in_float(quantized, original, others))
        out.append(GroupError(group.label, list(group.convs), group.gflop, mean, max_))
    return sorted(out, key=lambda m: -m.score)


def _keep_until_within(quantized: Any, original: Any, found: list[ConvGroup], plan: Int8Plan, evaluate,
                       step) -> list[ConvGroup]:
    """Put the most sensitive groups back in float until the budget holds or the float share is used up."""
    by_label = {g.label: g for g in found}
    total, kept = plan.int8_gflop, []
    floor = GroupError("", [], 0.0, *plan.float_only).score
    for measured in plan.groups:
        group = by_label[measured.label]
        if measured.score <= floor * (1 + NOISE):
            break  # this group at int8 is no worse than none at all: nothing more to gain
        if sum(g.gflop for g in kept) + group.gflop > MAX_FLOAT_SHARE * total:
            continue  # too much work to give back to float; a less costly one may still fit
        kept.append(group)
        step(f"keeping {len(kept)} in float", 2 + len(found) + len(kept))
        plan.mean, plan.max = evaluate(keep_in_float(quantized, original, kept))
        if within_budget(plan.mean, plan.max):
            break
    plan.kept = [g.label for g in kept]
    plan.kept_convs = [c for g in kept for c in g.convs]
    plan.float_gflop = sum(g.gflop for g in kept)
    plan.int8_gflop = total - plan.float_gflop
    plan.reason = (f"the {len(kept)} most sensitive group(s) kept at {plan.float_precision}: within the budget"
                   if within_budget(plan.mean, plan.max) else
                   f"over the budget with {len(kept)} group(s) kept at {plan.float_precision}, as far as int8 "
                   f"is worth it (at most {MAX_FLOAT_SHARE:.0%} of the work in float)")
    return kept
