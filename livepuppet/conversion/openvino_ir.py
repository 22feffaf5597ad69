"""The ``openvino`` target: what OpenVINO runs, for every machine it may meet.

OpenVINO reads ``.tflite`` files itself, so for the XNNPACK graph (the one it
runs fastest without AMX) a float32 folder's ``.tflite`` files are the OpenVINO
variants too, checked here by running them on OpenVINO; a reduced-precision
folder gets float32 IR files of that graph instead. With AMX, oneDNN's own
kernels beat XNNPACK's rewrites (vox-256 bf16 generator: 40 ms plain, 78 ms
rewritten), so the generator is also stored as the plain graph's IR with its
weights at bfloat16: half the file, and at bf16 the same result to the bit as
float32 weights (the CPU plugin rounds them so itself). The precision OpenVINO
computes at is chosen when a model is compiled (:mod:`livepuppet.runtime.plan`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from livepuppet.errors import LivepuppetError

DIRNAME = "openvino"


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def signature_names(tflite: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(inputs, outputs): TFLite tensor name -> signature name, for the ``serving_default`` signature."""
    from livepuppet.quiet import native_stderr_silenced
    from livepuppet.runtime.engines.tflite import interpreter_module

    with native_stderr_silenced():
        runner = interpreter_module().Interpreter(model_path=str(tflite)).get_signature_runner("serving_default")
    inputs = {d["name"]: name for name, d in runner.get_input_details().items()}
    outputs = {d["name"]: name for name, d in runner.get_output_details().items()}
    return inputs, outputs


def convert(tflite: Path, xml: Path) -> None:
    """Write ``xml`` (and its ``.bin``) from ``tflite``, tensors renamed from TFLite's
    (``serving_default_image:0``) to the signature's (``image``), as every back end is called."""
    import openvino as ov

    inputs, outputs = signature_names(tflite)
    model = ov.convert_model(str(tflite))
    for ports, names in ((model.inputs, inputs), (model.outputs, outputs)):
        for port in ports:
            known = [names[n] for n in port.get_names() if n in names]
            if len(known) != 1:
                raise LivepuppetError(f"OpenVINO read {tflite.name} with unexpected tensors {sorted(port.get_names())}")
            port.get_tensor().set_names({known[0]})
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml), compress_to_fp16=False)


WEIGHT_USERS = ("Convolution", "GroupConvolution", "MatMul")  # the ops whose weights oneDNN computes with at bf16


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, rounded to nearest even (as OpenVINO's CPU plugin rounds)."""
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(values), np.uint16(0x7FC0), rounded)


def save_with_bf16_weights(xml: Path, out: Path) -> int:
    """Write ``out``: ``xml``'s model with its convolution and matmul weights stored at bfloat16.

    At ``INFERENCE_PRECISION_HINT=bf16`` the CPU plugin rounds exactly these
    weights to bf16 itself, so the result is the same to the bit, from a file
    half the size, and a compile that no longer holds the float32 weights beside
    its bf16 copies (vox-256: peak 735 -> 557 MB). Other constants (biases,
    grids, scales) stay float32, as the plugin keeps them. Returns how many were stored at bf16.
    """
    import openvino as ov
    from openvino._offline_transformations import compress_model_transformation

    model = ov.Core().read_model(str(xml))
    values = {op.get_friendly_name(): op.get_data().copy() for op in model.get_ordered_ops()
              if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f32}
    compress_model_transformation(model)  # float16 weights behind marked decompression Converts
    stored = 0
    for convert in model.get_ordered_ops():
        if convert.get_type_name() != "Convert" or not _is_f16_decompression(convert, ov):
            continue
        original = values[convert.get_friendly_name()]
        users = [t.get_node() for t in convert.output(0).get_target_inputs()]
        is_weight = users and all(u.get_type_name() in WEIGHT_USERS and u.input_value(1).get_node() is convert
                                  for u in users)
        shape = list(convert.get_output_shape(0))
        if is_weight:
            tensor = ov.Tensor(ov.Type.bf16, shape)
            tensor.data.view(np.uint16)[...] = bf16_bits(original).reshape(shape)
            convert.input(0).replace_source_output(ov.op.Constant(tensor).output(0))
            stored += 1
        else:  # back to the float32 constant it was
            tensor = ov.Tensor(ov.Type.f32, shape)
            tensor.data[...] = original.reshape(shape)
            constant = ov.op.Constant(tensor)
            constant.set_friendly_name(convert.get_friendly_name())
            convert.output(0).replace(constant.output(0))
    model.validate_nodes_and_infer_types()
    ov.save_model(model, str(out), compress_to_fp16=False)
    return stored


def _is_f16_decompression(convert, ov) -> bool:
    source = convert.input_value(0).get_node()
    return (source.get_type_name() == "Constant" and source.get_element_type() == ov.Type.f16
            and any(key.startswith("decompression") for key in convert.get_rt_info().keys()))


def run(path: Path, inputs: dict[str, np.ndarray], precision: str = "f32", tensors: dict[str, str] | None = None
        ) -> dict[str, np.ndarray]:
    """One call of an IR or ``.tflite`` model on the CPU, by signature names (``tensors``: to the file's)."""
    import openvino as ov

    tensors = tensors or {}
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": precision})
    request = compiled.create_infer_request()
    request.infer({tensors.get(k, k): np.asarray(v, np.float32) for k, v in inputs.items()})
    back = {v: k for k, v in tensors.items()}
    return {back.get(p.get_any_name(), p.get_any_name()): request.get_tensor(p).data.copy() for p in compiled.outputs}
