"""The four models as ONNX, for ONNX Runtime and its execution providers (``--engine onnx``).

tf2onnx converts the ``onnx`` graph (:mod:`livepuppet.fomm.modules.rewrites`):
the browser graph's portable ops (no tensor above rank 4, no 2-D gathers, no
IsNaN/IsInf), with each warp marked as one op that becomes ONNX's own
GridSample here, which providers run as one kernel (its semantics are
PyTorch's: bilinear, zero padding, ``align_corners`` as the numerics say). Nearest-neighbour
upsampling is stated in the standard ``asymmetric`` form, which computes the
same pixels as TensorFlow's half-pixel rule at integer scales, instead of the
deprecated ``tf_half_pixel_for_nn`` that some providers refuse. Every model is
run with ONNX Runtime's CPU provider and compared with its TensorFlow graph.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from livepuppet.fomm.modules.webgpu import GRID_SAMPLE_OP

DIRNAME = "onnx"
OPSET = 17  # GridSample needs 16; TensorRT 8.6+, DirectML and CoreML's ML Program read 17
MARKER_DOMAIN = "livepuppet.marker"
MARKER_TYPE = "PyFuncStateless"  # what tf.numpy_function(stateful=False) is in a TensorFlow graph


def available() -> bool:
    """tf2onnx and onnx importable: ``convert`` writes the ONNX models."""
    try:
        import onnx  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        return False
    return True


def version() -> str:
    import tf2onnx

    return tf2onnx.__version__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """tf2onnx logs every step at INFO, and warns about what it handles: users see none of it."""
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    shimmed = not hasattr(np, "product")
    if shimmed:  # tf2onnx 1.17's large_model path still calls np.product, which NumPy 2 removed
        np.product = np.prod
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if shimmed:
            del np.product


def convert(fn, inputs, path: Path) -> None:
    """Write the ONNX model of the tf.function ``fn`` (signature ``inputs``) to ``path``."""
    import onnx
    import tf2onnx

    graph = fn.get_concrete_function(*inputs).graph
    warps = {op.name: (op.inputs[0].shape.as_list(), op.inputs[1].shape.as_list(), f"{GRID_SAMPLE_OP}_aligned" in op.name)
             for op in graph.get_operations() if op.type == MARKER_TYPE and GRID_SAMPLE_OP in op.name}
    with _quiet():  # large_model: weights kept out of the graphs tf2onnx rewrites (vox: 13 GB -> 7 GB peak)
        proto, storage = tf2onnx.convert.from_function(fn, input_signature=inputs, opset=OPSET, large_model=True,
                                                       custom_ops={MARKER_TYPE: MARKER_DOMAIN})
    _inline_weights(proto, storage.name_to_tensor_data)
    _grid_samples(proto.graph, warps)
    _asymmetric_nearest(proto.graph)
    del proto.opset_import[:]
    proto.opset_import.append(onnx.helper.make_opsetid("", OPSET))
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))


def _inline_weights(proto, stored: dict[str, bytes]) -> None:
    """Put the weights tf2onnx kept aside (``large_model``) back into the model: one self-contained file.

    With its default path tf2onnx deep-copies the whole graph, weights and all,
    before each optimiser pass, and those copies outlive the pass: the vox
    generator peaked at 13 GB. Set aside, the weights are held once; the peak
    (7 GB, measured) is now tf2onnx's own graph rewriting.
    """
    from onnx import TensorProto

    tensors = list(proto.graph.initializer)
    tensors += [a.t for node in proto.graph.node for a in node.attribute if a.HasField("t")]
    for tensor in tensors:
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next(e.value for e in tensor.external_data if e.key == "location")
        tensor.raw_data = stored[location]
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT


def _grid_samples(graph, warps: dict[str, tuple[list, list, bool]]) -> None:
    """Each warp marker (image NHWC, x, y (G, h, w, P)) -> (G*h, w, P, C) through ONNX's GridSample.

    ``warps``: each marker's image and grid shapes, from its TensorFlow graph (static but for the batch), and
    whether it aligns corners (``convert --numerics trained``).
    """
    from onnx import helper, numpy_helper

    nodes = list(graph.node)
    del graph.node[:]
    for node in nodes:
        if node.domain != MARKER_DOMAIN:
            graph.node.append(node)
            continue
        if node.name not in warps:
            raise ValueError(f"tf2onnx renamed the warp {node.name}; cannot place its GridSample")
        (n, _, _, c), (_, _, w, p), aligned = warps[node.name]
        image, gx, gy = node.input
        out, name = node.output[0], node.name

        def const(suffix: str, values) -> str:
            graph.initializer.append(numpy_helper.from_array(np.asarray(values, np.int64), f"{name}/{suffix}"))
            return f"{name}/{suffix}"

        column = const("column", [n, -1, w * p, 1])
        graph.node.extend([
            helper.make_node("Reshape", [gx, column], [f"{name}/x"]),
            helper.make_node("Reshape", [gy, column], [f"{name}/y"]),
            helper.make_node("Concat", [f"{name}/x", f"{name}/y"], [f"{name}/grid"], axis=3),
            helper.make_node("Transpose", [image], [f"{name}/nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("GridSample", [f"{name}/nchw", f"{name}/grid"], [f"{name}/sampled"],
                             align_corners=int(aligned), mode="bilinear", padding_mode="zeros"),
            helper.make_node("Transpose", [f"{name}/sampled"], [f"{name}/nhwc"], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [f"{name}/nhwc", const("samples", [-1, w, p, c])], [out]),
        ])


def _asymmetric_nearest(graph) -> None:
    """Nearest upsampling by integer scales: ``tf_half_pixel_for_nn`` -> ``asymmetric`` (the same pixels)."""
    from onnx import helper, numpy_helper

    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Resize" or attrs.get("coordinate_transformation_mode") != b"tf_half_pixel_for_nn":
            continue
        scales = constants.get(node.input[2]) if len(node.input) > 2 else None
        integral = scales is not None and scales.size and np.all(scales == np.round(scales)) and np.all(scales >= 1)
        if attrs.get("mode") == b"nearest" and attrs.get("nearest_mode") == b"floor" and integral:
            for a in node.attribute:
                if a.name == "coordinate_transformation_mode":
                    a.s = b"asymmetric"


def run(path: Path, inputs: dict[str, np.ndarray], threads: int | None = None) -> dict[str, np.ndarray]:
    """One call of ``path`` on the CPU provider (export's self-verification)."""
    from livepuppet.runtime.engines.onnx import feed, session

    sess = session(path, [("CPUExecutionProvider", {})], threads or os.cpu_count())
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feed(sess, inputs))))
