"""A model's ``.tflite`` file -> OpenVINO IR (``.xml`` + ``.bin``) with the model's own tensor names.

OpenVINO reads TFLite files itself; its IR, saved here at float32, starts
faster and keeps the weights out of a second converter. The tensors are renamed
from TFLite's (``serving_default_image:0``, ``StatefulPartitionedCall:0``) to
the signature's (``image``, ``value``), so the engine calls every back end by
the same names. The precision OpenVINO computes at is chosen when a model is
compiled, not here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import LivepuppetError

DIRNAME = "openvino"


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def signature_names(tflite: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(inputs, outputs): TFLite tensor name -> signature name, for the ``serving_default`` signature."""
    from .engines.tflite import _interpreter_module, native_stderr_silenced

    with native_stderr_silenced():
        runner = _interpreter_module().Interpreter(model_path=str(tflite)).get_signature_runner("serving_default")
    inputs = {d["name"]: name for name, d in runner.get_input_details().items()}
    outputs = {d["name"]: name for name, d in runner.get_output_details().items()}
    return inputs, outputs


def convert(tflite: Path, xml: Path) -> None:
    """Write ``xml`` (and its ``.bin``) from ``tflite``, tensors named as in the TFLite signature."""
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


def run(xml: Path, inputs: dict[str, np.ndarray], precision: str = "f32", threads: int | None = None
        ) -> dict[str, np.ndarray]:
    """One call of an IR model on the CPU (export's self-verification)."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(xml), "CPU", config)
    request = compiled.create_infer_request()
    request.infer({k: np.asarray(v, np.float32) for k, v in inputs.items()})
    return {port.get_any_name(): request.get_tensor(port).data.copy() for port in compiled.outputs}
