"""Where bf16's error comes from: the generator cut into stages, each run at float32 or bf16 on OpenVINO.

The per-frame generator is cut into six graphs, in order:

    pre        sparse motions, heatmaps, the source warped per keypoint (no convolutions)
    hourglass  the dense motion network's hourglass
    post       mask and occlusion heads, the dense warp, the features warped
    bottleneck the residual blocks
    up         the up blocks
    final      the last convolution and the sigmoid

Each combination given (one letter per stage: ``f`` float32, ``b`` bf16, ``i``
int8 by NNCF, calibrated on that stage's own inputs over 16 frames) is run
on OpenVINO's CPU plugin, stage after stage, on one frame of a real face
(scikit-image's astronaut, moved), and compared with all-float32 in 8-bit levels.
Stage times are the faster of two calls. This is how ``convert`` and ``auto``'s
precision choices were measured; it is not used by them.

Usage: python benchmarks/precision_by_stage.py CHECKPOINT|random [COMBO ...]   (random: bench's vox weights)
       (default combos: ffffff bbbbbb fffbbb fbffff ffbfff fffbff ffffbf fffffb;
       for int8, e.g. iiiiii bbbiii biibbb bbbibb bbbbib bbbbbi)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STAGES = ("pre", "hourglass", "post", "bottleneck", "up", "final")
DEFAULT = ("ffffff", "bbbbbb", "fffbbb", "fbffff", "ffbfff", "fffbff", "ffffbf", "fffffb")
CALIBRATION_FRAMES = 16


def stage_functions(fomm):
    """The generator's forward pass (model/generator.py, dense_motion.py) as six named functions."""
    import tensorflow as tf

    from livepuppet.fomm.config import KP_VARIANCE
    from livepuppet.fomm.modules.ops import grid_sample, kp2gaussian

    gen, dm, k = fomm.generator, fomm.generator.dense_motion, fomm.cfg.num_kp

    def pre(dv, dj, sv, sj, small):
        _, h, w, c = small.shape
        heat = kp2gaussian(dv, (h, w), KP_VARIANCE) - kp2gaussian(sv, (h, w), KP_VARIANCE)
        heat = tf.concat([tf.zeros_like(heat[..., :1]), heat], axis=-1)
        motions = dm.sparse_motions((dv, dj), (sv, sj), (h, w))
        hin = tf.reshape(tf.concat([heat[..., None], grid_sample(small, motions)], -1), [-1, h, w, (k + 1) * (c + 1)])
        return {"hin": hin, "motions": tf.reshape(motions, [-1, h, w, (k + 1) * 2])}

    def post(hout, motions, features):
        h, w = motions.shape[1:3]
        mask = tf.nn.softmax(dm.mask(hout), axis=-1)
        deformation = tf.reduce_sum(tf.reshape(motions, [-1, h, w, k + 1, 2]) * mask[..., None], axis=3)
        return {"x": grid_sample(features, deformation) * tf.sigmoid(dm.occlusion(hout))}

    def chain(blocks, name):
        def run(x):
            for block in blocks:
                x = block(x)
            return {name: x}
        return run

    return {
        "pre": (pre, ["dv", "dj", "sv", "sj", "small"]),
        "hourglass": (lambda hin: {"hout": dm.hourglass(hin)}, ["hin"]),
        "post": (post, ["hout", "motions", "features"]),
        "bottleneck": (chain(gen.bottleneck, "xb"), ["x"]),
        "up": (chain(gen.up_blocks, "xu"), ["xb"]),
        "final": (lambda xu: {"prediction": tf.sigmoid(gen.final(xu))}, ["xu"]),
    }


def export_stages(fomm, values: dict, workdir: Path) -> dict:
    """Each stage -> OpenVINO IR (through TFLite, like convert); fills ``values`` with float32 intermediates."""
    import tensorflow as tf

    from livepuppet.conversion import openvino_ir as openvino_export

    out = {}
    for name, (fn, inputs) in stage_functions(fomm).items():
        specs = [tf.TensorSpec(values[n].shape, tf.float32, n) for n in inputs]
        traced = tf.function(fn, input_signature=specs)
        concrete = traced.get_concrete_function()
        values.update({k: v.numpy() for k, v in concrete(*[tf.constant(values[n]) for n in inputs]).items()})
        holder = tf.Module()
        holder.weights, holder.fn = fomm.generator, traced
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        tflite = workdir / f"{name}.tflite"
        tflite.write_bytes(converter.convert())
        openvino_export.convert(tflite, workdir / f"{name}.xml")
        out[name] = (workdir / f"{name}.xml", inputs)
    return out


def driving_inputs(fomm, frames: int) -> list[dict]:
    """The generator's inputs for ``frames`` frames of the moved face (the first is the one compared)."""
    import tensorflow as tf

    from tests.test_convert import _astronaut_clip

    source, driving = _astronaut_clip(frames + 2)
    kp_source = fomm.detect_keypoints(tf.constant(source))
    kp_driving = fomm.detect_keypoints(tf.constant(driving))
    initial = (kp_driving[0][:1], kp_driving[1][:1])
    features, small = fomm.encode_source(tf.constant(source))
    out = []
    for i in range(2, frames + 2):
        norm = fomm.process_keypoints(kp_source, (kp_driving[0][i:i + 1], kp_driving[1][i:i + 1]), initial,
                                      tf.constant(1.0), tf.constant(1.0))
        out.append({"dv": norm[0].numpy(), "dj": norm[1].numpy(), "sv": kp_source[0].numpy(),
                    "sj": kp_source[1].numpy(), "small": small.numpy(), "features": features.numpy()})
    return out


def quantized(stages: dict, feeds: list[dict], core) -> dict:
    """Each stage quantised to int8 by NNCF, calibrated on its own float32 inputs over ``feeds``."""
    import logging

    import nncf

    nncf.set_log_level(logging.ERROR)
    samples = {name: [] for name in STAGES}
    for feed in feeds:  # the float32 chain, to collect every stage's inputs
        feed = dict(feed)
        for name in STAGES:
            xml, inputs = stages[name]
            samples[name].append({n: feed[n] for n in inputs})
            result = core.compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(samples[name][-1])
            feed.update({port.get_any_name(): value for port, value in result.items()})
    out = {}
    for name in STAGES:
        model = nncf.quantize(core.read_model(str(stages[name][0])), nncf.Dataset(samples[name]),
                              subset_size=len(feeds), preset=nncf.QuantizationPreset.MIXED)
        out[name] = model
    return out


def run_combo(stages: dict, feed: dict, combo: str, core, compiled: dict, int8: dict) -> tuple[np.ndarray, dict]:
    feed, times = dict(feed), {}
    for name, letter in zip(STAGES, combo):
        precision = {"f": "f32", "b": "bf16", "i": "int8"}[letter]
        if (name, precision) not in compiled:
            source = int8[name] if letter == "i" else str(stages[name][0])
            hint = "f32" if letter == "f" else "bf16"  # int8's float parts at bf16, as the engine runs them
            compiled[name, precision] = core.compile_model(source, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                                           "PERFORMANCE_HINT": "LATENCY"})
        model, inputs = compiled[name, precision], {n: feed[n] for n in stages[name][1]}
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            result = model(inputs)
            best = min(best, time.perf_counter() - start)
        feed.update({port.get_any_name(): value for port, value in result.items()})
        times[name] = best * 1e3
    return feed["prediction"], times


def main(argv: list[str]) -> int:
    import openvino as ov

    from livepuppet.fomm import config as cfgmod
    from livepuppet.fomm.checkpoint import load_checkpoint
    from livepuppet.fomm.modules import FOMM, GRAPHS
    from livepuppet.runtime import cpu

    if not argv:
        print(__doc__)
        return 2
    if argv[0] == "random":  # bench's vox-256 random weights
        from livepuppet.fomm.random_weights import random_state

        cfg = cfgmod.preset("vox")
        generator, kp_detector = random_state(cfg, 0)
    else:
        checkpoint = load_checkpoint(Path(argv[0]))
        generator, kp_detector = checkpoint.generator, checkpoint.kp_detector
        cfg = cfgmod.resolve(None, (generator, kp_detector))
    graph = "plain" if cpu.current().amx else "xnnpack"  # what the openvino plan runs here (runtime/plan.py)
    fomm = FOMM(cfg, generator, kp_detector, rewrites=GRAPHS[graph])
    combos = argv[1:] or DEFAULT
    feeds = driving_inputs(fomm, CALIBRATION_FRAMES if any("i" in c for c in combos) else 1)
    values = dict(feeds[0])
    with tempfile.TemporaryDirectory() as tmp:
        stages = export_stages(fomm, values, Path(tmp))
        reference = values["prediction"]
        core, compiled = ov.Core(), {}
        int8 = quantized(stages, feeds, core) if len(feeds) > 1 else {}
        print(f"{cpu.current().name}, {graph} graph; levels against all-float32, ms per stage")
        print("combo   " + " ".join(f"{s:>10}" for s in STAGES) + "   mean    max   total ms")
        for combo in combos:
            prediction, times = run_combo(stages, feeds[0], combo, core, compiled, int8)
            diff = np.abs(prediction - reference) * 255
            print(f"{combo}  " + " ".join(f"{times[s]:10.1f}" for s in STAGES)
                  + f"  {diff.mean():5.2f}  {diff.max():5.1f}  {sum(times.values()):9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
