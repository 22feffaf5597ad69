"""How fast this machine convolves, at each precision: the denominator of every "fraction of the floor".

One large 3x3 convolution (:data:`PEAK_SHAPE`, the shape of vox-256's
bottleneck) timed on each runtime that can run it: float32 on LiteRT/XNNPACK
(a one-op model written with the flatbuffer schema, no TensorFlow) and on
OpenVINO/oneDNN, bfloat16, float16 and int8 on OpenVINO. The best of several runs is
kept, not the median: the aim is what the hardware sustains, and a busy
machine only ever makes a run slower. A frame's *floor* is its convolutions'
GFLOP over this peak at the precision it computes at.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np

PEAK_SHAPE = (64, 64, 256, 256)  # (h, w, in, out) of the 3x3 convolution that measures peak speed
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def peak_model(h: int, w: int, cin: int, cout: int, seed: int = 0) -> bytes:
    """A one-op TFLite model, a 3x3 'same' CONV_2D, written with the flatbuffer schema (no TensorFlow)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    rng = np.random.default_rng(seed)
    weights = (rng.standard_normal((cout, 3, 3, cin)) * (2 / (9 * cin)) ** 0.5).astype(np.float32)  # OHWI
    bias = np.zeros(cout, np.float32)

    def buffer(array: np.ndarray | None = None):
        b = fb.BufferT()
        if array is not None:
            b.data = np.frombuffer(array.tobytes(), np.uint8)
        return b

    def tensor(shape, index: int, name: str):
        t = fb.TensorT()
        t.shape, t.type, t.buffer, t.name = list(shape), fb.TensorType.FLOAT32, index, name
        return t

    options = fb.Conv2DOptionsT()
    options.padding = fb.Padding.SAME
    options.strideH = options.strideW = options.dilationHFactor = options.dilationWFactor = 1
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType, op.builtinOptions = fb.BuiltinOptions.Conv2DOptions, options
    graph = fb.SubGraphT()
    graph.tensors = [tensor((1, h, w, cin), 0, "x"), tensor(weights.shape, 1, "w"), tensor(bias.shape, 2, "b"),
                     tensor((1, h, w, cout), 0, "y")]
    graph.inputs, graph.outputs, graph.operators = [0], [3], [op]
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.CONV_2D
    code.version = 1
    model = fb.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [graph]
    model.buffers = [buffer(), buffer(weights), buffer(bias)]
    model.description = "livepuppet bench: peak convolution"
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def measure_peak(threads: int | None = None, repeats: int = 7, shape: tuple[int, int, int, int] = PEAK_SHAPE
                 ) -> dict[str, Any]:
    """GFLOP/s of one large float32 3x3 convolution on LiteRT/XNNPACK: the best this machine does.

    The best of ``repeats`` runs, not the median: the aim is what the hardware
    sustains, and a busy machine only ever makes a run slower. :func:`measure`
    takes it before and after the stage timings and keeps the better one.
    """
    from livepuppet.runtime.engines.tflite import interpreter_module

    h, w, cin, cout = shape
    lite = interpreter_module()
    threads = threads or os.cpu_count() or 1
    interp = lite.Interpreter(model_content=peak_model(h, w, cin, cout), num_threads=threads)
    interp.allocate_tensors()
    index = interp.get_input_details()[0]["index"]
    interp.set_tensor(index, np.random.default_rng(1).uniform(0, 1, (1, h, w, cin)).astype(np.float32))
    interp.invoke()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - start)
    gflop = 2 * 9 * cin * cout * h * w / 1e9
    return {"gflops": gflop / min(times), "gflop": gflop, "best_ms": min(times) * 1e3,
            "median_ms": statistics.median(times) * 1e3, "threads": threads,
            "shape": f"1x{h}x{w}x{cin} -> {cout}, 3x3"}


def measure_peak_openvino(precision: str, threads: int | None = None, repeats: int = 7,
                          shape: tuple[int, int, int, int] = PEAK_SHAPE) -> dict[str, Any] | None:
    """GFLOP/s of one 3x3 convolution on OpenVINO's CPU plugin at ``precision``; None without OpenVINO.

    ``int8``: the convolution with its input and weights quantised (FakeQuantize, weights per output
    channel), as ``convert --fast`` makes them, at this CPU's float precision otherwise. The time is
    the whole call, as a frame's are; ``kernel_gflops`` is the convolution's own speed, from OpenVINO's
    per-op counters, without the conversions in and out (which with AMX take longer than the
    convolution itself, so the floor it gives is the stricter one)."""
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        return None
    from livepuppet.runtime.cpu import current

    h, w, cin, cout = shape
    rng = np.random.default_rng(0)
    x = ops.parameter([1, cin, h, w], np.float32, name="x")
    weights = (rng.standard_normal((cout, cin, 3, 3)) * (2 / (9 * cin)) ** 0.5).astype(np.float32)
    source, kernel = x, ops.constant(weights)
    if precision == "int8":
        source = _fake_quantize(ops, x, np.float32(0), np.float32(1), 256)
        limit = np.abs(weights).reshape(cout, -1).max(axis=1).reshape(cout, 1, 1, 1)
        kernel = _fake_quantize(ops, kernel, -limit, limit, 255)
    model = ov.Model([ops.convolution(source, kernel, [1, 1], [1, 1], [1, 1], [1, 1])], [x])
    hint = current().fast_precision() if precision == "int8" else precision
    config = {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[hint], "PERFORMANCE_HINT": "LATENCY",
              "ENABLE_CPU_PINNING": False, "PERF_COUNT": True}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    data = rng.uniform(0, 1, (1, cin, h, w)).astype(np.float32)
    request.infer({0: data})
    times, kernel_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        request.infer({0: data})
        times.append(time.perf_counter() - start)
        kernel_times.append(sum(p.real_time.total_seconds() for p in request.get_profiling_info()
                                if p.node_type == "Convolution"))
    gflop = 2 * 9 * cin * cout * h * w / 1e9
    return {"gflops": gflop / min(times), "gflop": gflop, "best_ms": min(times) * 1e3,
            "median_ms": statistics.median(times) * 1e3, "kernel_gflops": gflop / (min(kernel_times) or min(times)),
            "threads": threads, "engine": "openvino", "precision": precision,
            "shape": f"1x{h}x{w}x{cin} -> {cout}, 3x3"}


def _fake_quantize(ops, value, low, high, levels: int):
    low, high = ops.constant(np.asarray(low, np.float32)), ops.constant(np.asarray(high, np.float32))
    return ops.fake_quantize(value, low, high, low, high, levels)


def peaks(precisions: set[str], threads: int | None) -> dict[str, dict[str, Any]]:
    """The peak at each precision asked for: float32 is the better of XNNPACK and oneDNN."""
    out = {}
    for precision in sorted(precisions):
        on_openvino = precision in OPENVINO_HINTS or precision == "int8"
        found = [p for p in [measure_peak_openvino(precision, threads)] if p] if on_openvino else []
        if precision == "fp32":
            found.append({**measure_peak(threads), "engine": "tflite", "precision": "fp32"})
        if found:
            out[precision] = max(found, key=lambda p: p["gflops"])
    return out
