"""The int8 generator's graph: its convolutions grouped by the quantisers they share, and groups put back in float.

NNCF quantises a convolution with a FakeQuantize on its input activations
(placed before layout-only ops such as Transpose, Concat or a nearest
Interpolate, so one quantiser may feed several convolutions: the dense motion
network's mask and occlusion heads share theirs) and int8 weights behind a
Convert and a Multiply. Convolutions that share a quantiser can only change
precision together: each such set is one :class:`ConvGroup`, the unit the
mixed-precision plan (:mod:`.int8_plan`) measures and keeps in float.

:func:`keep_in_float` undoes a set of groups on a copy of the quantised
model: their quantisers are bypassed and their original float weights and
biases put back (fast bias correction moved the biases of quantised layers),
so a kept group computes exactly as in the float model, at the engine's float
precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

# Ops a quantiser is moved across: they only move or pick values (NNCF's "quantisation-agnostic" ops)
PASS_THROUGH = frozenset({"Transpose", "Reshape", "Concat", "Interpolate", "Pad", "StridedSlice", "Squeeze",
                          "Unsqueeze", "Split", "VariadicSplit", "MaxPool", "DepthToSpace", "SpaceToDepth"})
CONVOLUTIONS = ("Convolution", "GroupConvolution")


@dataclass(frozen=True)
class ConvGroup:
    """Convolutions that share activation quantisers (friendly names), and their work."""

    convs: tuple[str, ...]
    quantizers: tuple[str, ...]
    gflop: float
    label: str  # for people: where in the network, shapes


def conv_gflop(op: Any) -> float:
    """Multiply-adds x 2 of one convolution, from its static shapes, in GFLOP."""
    out = list(op.get_output_shape(0))
    weights = list(op.get_input_shape(1))
    per_output = int(np.prod(weights[-3:]))  # Cin/groups x kh x kw (GroupConvolution: G, O, I, kh, kw)
    return 2.0 * int(np.prod(out)) * per_output / 1e9


def _quantizers_above(op: Any) -> set[str]:
    """The FakeQuantize nodes that feed ``op``'s activation input through pass-through ops only."""
    found, stack = set(), [op.input_value(0).get_node()]
    while stack:
        node = stack.pop()
        kind = node.get_type_name()
        if kind == "FakeQuantize":
            found.add(node.get_friendly_name())
        elif kind in PASS_THROUGH:
            stack.extend(node.input_value(i).get_node() for i in range(node.get_input_size())
                         if node.input_value(i).get_node().get_type_name() != "Constant")
    return found


def _is_int8(op: Any) -> bool:
    """A convolution NNCF quantised: its weights come through a dequantising Multiply, not straight from a Constant."""
    return op.input_value(1).get_node().get_type_name() != "Constant"


def groups(quantized: Any, labels: dict[str, str] | None = None) -> list[ConvGroup]:
    """The quantised convolutions of ``quantized``, grouped by shared quantisers, in graph order."""
    convs = [op for op in quantized.get_ordered_ops() if op.get_type_name() in CONVOLUTIONS and _is_int8(op)]
    owner: dict[str, int] = {}  # quantiser -> group index
    members: list[tuple[list[Any], set[str]]] = []
    for op in convs:
        quantizers = _quantizers_above(op)
        hits = sorted({owner[q] for q in quantizers if q in owner})
        if hits:  # merge every group this convolution touches into the first
            first = hits[0]
            for other in reversed(hits[1:]):
                members[first][0].extend(members[other][0])
                members[first][1].update(members[other][1])
                members[other] = ([], set())
        else:
            first = len(members)
            members.append(([], set()))
        members[first][0].append(op)
        members[first][1].update(quantizers)
        for q in members[first][1]:
            owner[q] = first
    labels = labels or {}
    out = []
    for ops, quantizers in members:
        if ops:
            names = tuple(op.get_friendly_name() for op in ops)
            out.append(ConvGroup(names, tuple(sorted(quantizers)), sum(conv_gflop(op) for op in ops),
                                 " + ".join(labels.get(n, n) for n in names)))
    return out


def describe(model: Any, downstream_of: str = "features") -> dict[str, str]:
    """A label per convolution for people: its part of the generator, its order there and its shape."""
    inputs = [p.get_node() for p in model.inputs if downstream_of in p.get_names()]
    reached = _downstream({n.get_friendly_name() for n in inputs}, model)
    counts: dict[str, int] = {}
    labels = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() not in CONVOLUTIONS:
            continue
        part = "decoder" if op.get_friendly_name() in reached else "motion"
        counts[part] = counts.get(part, 0) + 1
        w, out = list(op.get_input_shape(1)), list(op.get_output_shape(0))
        labels[op.get_friendly_name()] = (f"{part} {counts[part]}: {w[-3]}->{w[-4]} {w[-2]}x{w[-1]} "
                                          f"at {out[-2]}x{out[-1]}")
    return labels


def _downstream(names: set[str], model: Any) -> set[str]:
    """Friendly names of every node fed, directly or not, by the nodes named."""
    by_name = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    reached, stack = set(), [by_name[n] for n in names]
    while stack:
        node = stack.pop()
        for out in node.outputs():
            for target in out.get_target_inputs():
                child = target.get_node()
                if child.get_friendly_name() not in reached:
                    reached.add(child.get_friendly_name())
                    stack.append(child)
    return reached


def keep_in_float(quantized: Any, original: Any, kept: Iterable[ConvGroup]) -> Any:
    """A copy of ``quantized`` with the ``kept`` groups computing in float, as in ``original``."""
    import openvino as ov

    model = quantized.clone()
    ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    source = {op.get_friendly_name(): op for op in original.get_ordered_ops()}
    for group in kept:
        for name in group.quantizers:
            fq = ops[name]
            fq.output(0).replace(fq.input_value(0))
        for name in group.convs:
            conv, float_conv = ops[name], source[name]
            conv.input(1).replace_source_output(_constant(float_conv.input_value(1).get_node(), ov))
            bias, float_bias = _bias(conv), _bias(float_conv)
            if bias is not None and float_bias is not None:
                add, index = bias
                add.input(index).replace_source_output(_constant(float_bias[0].input_value(float_bias[1]).get_node(),
                                                                 ov))
    model.validate_nodes_and_infer_types()
    return model


def _constant(node: Any, ov: Any) -> Any:
    return ov.op.Constant(np.array(node.get_data(), copy=True)).output(0)


def _bias(conv: Any) -> tuple[Any, int] | None:
    """(the Add after ``conv``, the index of its constant input), or None."""
    users = [t.get_node() for t in conv.output(0).get_target_inputs()]
    if len(users) != 1 or users[0].get_type_name() != "Add":
        return None
    add = users[0]
    for index in range(2):
        if add.input_value(index).get_node().get_type_name() == "Constant":
            return add, index
    return None
