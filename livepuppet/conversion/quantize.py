"""``convert --fast``: the OpenVINO generator quantised to int8 with NNCF, calibrated on the bundled face.

Post-training, static: NNCF measures each activation's range on generator
inputs that the model makes itself (the bundled portrait, :mod:`.probe`, moving
along 40 frames of synthetic head motion), then stores int8 weights and
quantises activations at those ranges; the CPU runs it on VNNI or AMX-INT8.

Two parts stay at the engine's float precision, found by measuring where
int8 error comes from (vox-256, benchmarks/README.md):

- the motion estimate, everything not downstream of the ``features`` input
  (the dense motion hourglass, its mask and occlusion heads): an error there
  moves whole regions of the warp, and it is a tenth of the work;
- the final convolution (two, in the split form), which writes the pixels.

The result's error against float32 is measured here and kept in the manifest;
``bench`` prints it and ``auto`` only picks it inside the fidelity budget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CALIBRATION_FRAMES = 40
COMPUTE_OPS = ("Convolution", "GroupConvolution", "MatMul")


def kept_in_float(model, final_convs: int) -> list[str]:
    """Names of the compute ops int8 would hurt most: the motion estimate and the last ``final_convs``."""
    features = [p.get_node() for p in model.inputs if "features" in p.get_names()]
    downstream, stack = set(), list(features)
    while stack:
        node = stack.pop()
        for out in node.outputs():
            for target in out.get_target_inputs():
                child = target.get_node()
                if child.get_friendly_name() not in downstream:
                    downstream.add(child.get_friendly_name())
                    stack.append(child)
    compute = [op for op in model.get_ordered_ops() if op.get_type_name() in COMPUTE_OPS]
    motion = [op.get_friendly_name() for op in compute if op.get_friendly_name() not in downstream]
    last = [op.get_friendly_name() for op in compute if op.get_friendly_name() in downstream][-final_convs:]
    return motion + last


def calibration_inputs(engine, frames: int = CALIBRATION_FRAMES) -> list[dict[str, np.ndarray]]:
    """Generator inputs for the probe's head motion, computed by ``engine`` (float32)."""
    from livepuppet.runtime import probe

    size = engine.frame_size
    source = engine.encode_source(probe.portrait(size))
    clip = probe.head_motion(size, frames + 1, seed=3)
    driving = engine.detect_keypoints(clip)
    samples = []
    for i in range(1, frames + 1):
        norm = engine.process_keypoints(source.keypoints, driving[i], driving[0], True, True)
        samples.append({"driving_value": norm.value, "driving_jacobian": norm.jacobian,
                        "source_value": source.keypoints.value, "source_jacobian": source.keypoints.jacobian,
                        "features": source.features, "source_small": source.source_small})
    return samples


def quantize_generator(xml: Path, out: Path, samples: list[dict[str, np.ndarray]], final_convs: int) -> list[str]:
    """Write the int8 generator to ``out``; returns the names of the layers kept at the float precision."""
    import logging

    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    model = ov.Core().read_model(str(xml))
    kept = kept_in_float(model, final_convs)
    quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                              preset=nncf.QuantizationPreset.MIXED, ignored_scope=nncf.IgnoredScope(names=kept))
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return kept
