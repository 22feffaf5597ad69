"""What ``convert`` writes for each back end: one module a target, each with ``build(job)``.

A target adds its variants to the :class:`~livepuppet.conversion.job.Job`,
each checked against the TensorFlow graph (or, for int8, against float32 on
the bundled face); :mod:`livepuppet.conversion.export` runs the targets asked
for and writes the folder only when every check has passed.
"""

from __future__ import annotations

from typing import Iterable

from livepuppet.errors import LivepuppetError

# target -> the module whose build(job) writes it, in the order they are built; imported only to build
TARGETS: dict[str, str] = {
    "tflite": "livepuppet.conversion.targets.tflite",
    "openvino": "livepuppet.conversion.targets.openvino",
    "savedmodel": "livepuppet.conversion.targets.savedmodel",
    "int8": "livepuppet.conversion.targets.int8",
    "web": "livepuppet.conversion.targets.web",
    "onnx": "livepuppet.conversion.targets.onnx",
}
DEFAULT_TARGETS = ("tflite", "openvino")
NEEDS = {"int8": ("openvino",)}  # the int8 generator is quantised from the openvino target's float32 IR


def resolve_targets(names: Iterable[str]) -> tuple[str, ...]:
    """The targets to build, with what they need, in build order; unknown names are a one-line error."""
    wanted = set()
    for name in names:
        if name not in TARGETS:
            raise LivepuppetError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
        wanted |= {name, *NEEDS.get(name, ())}
    if not wanted:
        raise LivepuppetError(f"no target named; choose from {', '.join(TARGETS)}")
    return tuple(t for t in TARGETS if t in wanted)
