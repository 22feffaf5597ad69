"""Where ``--fast``'s time and error go: the generator by stage and the whole frame, bf16 against int8.

Converts a checkpoint (or bench's random vox-256 weights) with ``--fast`` into
a work folder (or reuses it), then, in one run:

- times the bf16 generator (the folder's OpenVINO graph) and the int8 one
  (``convert --fast``'s), interleaved, with OpenVINO's per-op counters,
  adding each op's time to its stage: the motion estimate's convolutions,
  the bottleneck's, the up blocks', the final convolution(s), and every
  other op (warps, resizes, layout changes, element-wise);
- sets each stage against its floor at each precision: its convolutions'
  work at the peak ``bench`` measures (one 3x3 convolution, the whole call)
  and at that convolution's own kernel speed (the per-op counter);
- measures each stage's error alone at int8 (the rest at bf16) against
  float32 on the probe's head motion, from the same quantisation ``--fast``
  made (redone here: the calibration is deterministic);
- times the keypoint detector and whole frames (a Pipeline per engine, the
  calls taking turns), with each engine's error on the probe.

Usage: python benchmarks/int8_by_stage.py [CHECKPOINT|random] [--workdir DIR] [--rounds N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STAGES = ("motion estimate", "bottleneck", "up blocks", "final", "other ops")


def build(source: str, workdir: Path):
    """(model folder with --fast, checkpoint, config): converted once into ``workdir``."""
    from livepuppet.conversion.export import build as build_folder
    from livepuppet.fomm import config as cfgmod
    from livepuppet.fomm.checkpoint import Checkpoint, load_checkpoint
    from livepuppet.fomm.random_weights import random_state

    if source == "random":
        cfg = cfgmod.preset("vox")
        checkpoint = Checkpoint(*random_state(cfg, 0), Path("random-vox"), sha256="random")
    else:
        checkpoint = load_checkpoint(Path(source))
        cfg = cfgmod.resolve(None, (checkpoint.generator, checkpoint.kp_detector))
    folder = workdir / "model"
    if not (folder / "manifest.json").is_file():
        build_folder(checkpoint, cfg, folder, targets=("tflite", "openvino", "int8"))
    return folder, checkpoint, cfg


def int8_graph_ir(checkpoint, cfg, workdir: Path) -> Path:
    """The float32 generator in the int8 graph, which --fast quantised (not kept in the folder)."""
    from livepuppet.conversion.graphs import Graphs
    from livepuppet.conversion.targets.int8 import GRAPH
    from livepuppet.conversion.targets.openvino import ir_from

    xml = workdir / "generator-int8-graph-fp32.xml"
    if not xml.is_file():
        traced = Graphs(checkpoint, cfg, 1).traced(GRAPH, workdir / "traced", ["generator"])["generator"]
        ir_from(traced.saved, xml)
    return xml


def stage_of(labels: dict[str, str], bottleneck_blocks: int) -> dict[str, str]:
    """Convolution name -> stage, from :func:`int8_graph.describe`'s labels and the generator's layout."""
    decoder = [name for name, label in labels.items() if label.startswith("decoder")]
    split = labels[decoder[-1]].split()[2].endswith("x1")  # the final convolution split into 1xk, kx1
    final = decoder[-2:] if split else decoder[-1:]
    out = {name: "motion estimate" for name, label in labels.items() if label.startswith("motion")}
    for i, name in enumerate(decoder):
        out[name] = ("bottleneck" if i < 2 * bottleneck_blocks else "final" if name in final else "up blocks")
    return out


def profile(paths: dict[str, Path], hints: dict[str, str], feed: dict, rounds: int) -> dict[str, dict]:
    """Per variant: median ms of the call and of each op (by name), interleaved."""
    import openvino as ov

    core, requests = ov.Core(), {}
    for key, path in paths.items():
        config = {"INFERENCE_PRECISION_HINT": hints[key], "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True,
                  "ENABLE_CPU_PINNING": False}
        requests[key] = core.compile_model(str(path), "CPU", config).create_infer_request()
        requests[key].infer(feed)
    calls, ops = defaultdict(list), defaultdict(lambda: defaultdict(list))
    for _ in range(rounds):
        for key, request in requests.items():
            start = time.perf_counter()
            request.infer(feed)
            calls[key].append((time.perf_counter() - start) * 1e3)
            for p in request.get_profiling_info():
                ops[key][(p.node_name, p.node_type)].append(p.real_time.total_seconds() * 1e3)
    return {key: {"ms": statistics.median(calls[key]),
                  "ops": {k: statistics.median(v) for k, v in ops[key].items()}} for key in requests}


def by_stage(result: dict, stages: dict[str, str]) -> dict[str, float]:
    out = dict.fromkeys(STAGES, 0.0)
    for (name, kind), ms in result["ops"].items():
        out[stages.get(name, "other ops") if kind == "Convolution" else "other ops"] += ms
    return out


def gflop_by_stage(model, stages: dict[str, str]) -> dict[str, float]:
    from livepuppet.conversion.int8_graph import CONVOLUTIONS, conv_gflop

    out = dict.fromkeys(STAGES, 0.0)
    for op in model.get_ordered_ops():
        if op.get_type_name() in CONVOLUTIONS:
            out[stages[op.get_friendly_name()]] += conv_gflop(op)
    return out


def stage_errors(float_xml: Path, calibration, probe_inputs, bottleneck_blocks: int, kept: list[str]) -> dict:
    """Each stage alone at int8 (its planned int8 groups; all else bf16), and the plan as a whole."""
    import openvino as ov

    from livepuppet.conversion.int8_graph import describe, groups, keep_in_float
    from livepuppet.conversion.int8_plan import Evaluator
    from livepuppet.conversion.quantize import quantize_convolutions
    from livepuppet.runtime.cpu import usable_cores

    core = ov.Core()
    original = core.read_model(str(float_xml))
    stages = stage_of(describe(original), bottleneck_blocks)  # its own names: each conversion numbers its ops
    quantized = quantize_convolutions(core.read_model(str(float_xml)), calibration)
    found = [g for g in groups(quantized, describe(original)) if g.label not in kept]
    evaluate = Evaluator(original, probe_inputs, "bf16", usable_cores())
    kept_groups = [g for g in groups(quantized, describe(original)) if g.label in kept]
    out = {"whole (as planned)": evaluate(keep_in_float(quantized, original, kept_groups))}
    for stage in STAGES[:-1]:
        others = kept_groups + [g for g in found if stages[g.convs[0]] != stage]
        out[stage] = evaluate(keep_in_float(quantized, original, others))
    return out


def plans(model):
    """(float32's plan, the reduced float one with its keypoints at that precision, --fast's)."""
    from livepuppet.runtime.plan import Machine, Request, candidates, plan

    machine = Machine.current()
    fast = machine.cpu.fast_precision()
    found = candidates(model, machine, Request("openvino"))
    reduced = next(p for p in found if p.precision == fast and p.kp_precision == fast)
    return found[0], reduced, plan(model, machine, Request("openvino", fast=True))


def frames(model, rounds: int) -> dict[str, dict]:
    """Whole frames: a Pipeline per plan (the reduced float one, and --fast's), their calls taking turns."""
    from livepuppet.runtime import probe, timing
    from livepuppet.runtime.engines import open_plan
    from livepuppet.runtime.pipeline import Pipeline

    exact, reduced, fast = plans(model)
    engine = open_plan(model, exact, cache=False)
    reference = timing.measure(engine).frames
    engine.close()
    engines = {"bf16": open_plan(model, reduced, cache=False), "int8": open_plan(model, fast, cache=False)}
    size = model.frame_size
    clip = probe.head_motion(size, rounds + 2)
    pipes, times, stage_ms = {}, defaultdict(list), defaultdict(lambda: defaultdict(list))
    for key, engine in engines.items():
        pipes[key] = Pipeline(engine)
        pipes[key].set_source(probe.portrait(size))
        pipes[key].animate(clip[:2])
    for frame in clip[2:]:
        for key, pipe in pipes.items():
            start = time.perf_counter()
            pipe.animate(frame[None])
            times[key].append((time.perf_counter() - start) * 1e3)
            for stage in ("keypoints", "generate"):
                stage_ms[key][stage].append(pipe.timings[stage])
    out = {}
    for key, engine in engines.items():
        out[key] = {"label": engine.label, "plan": engine.plan, "frame_ms": statistics.median(times[key]),
                    **{f"{s}_ms": statistics.median(v) for s, v in stage_ms[key].items()},
                    "levels": timing.levels(timing.measure(engine).frames, reference)}
    return out


def main(argv: list[str]) -> int:
    import openvino as ov

    from livepuppet.commands.bench import int8_floor_ms
    from livepuppet.conversion.int8_graph import describe
    from livepuppet.conversion.quantize import CALIBRATION_FRAMES, generator_inputs
    from livepuppet.fomm import config as cfgmod
    from livepuppet.modelfolder.read import read_folder
    from livepuppet.runtime import timing
    from livepuppet.runtime.engines import open_plan
    from livepuppet.runtime.peak import measure_peak_openvino

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", nargs="?", default="random")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="int8-by-stage-"))
    workdir.mkdir(parents=True, exist_ok=True)
    folder, checkpoint, cfg = build(args.source, workdir)
    model = read_folder(folder)
    exact_plan, reduced, fast = plans(model)
    record = json.loads(model.file(fast.steps["generator"].variant, 2).read_text())
    exact = open_plan(model, exact_plan, cache=False)
    calibration = generator_inputs(exact, CALIBRATION_FRAMES, seed=3)
    probe_inputs = generator_inputs(exact, timing.PROBE_FRAMES, seed=0)
    exact.close()
    load_before = [round(v, 2) for v in os.getloadavg()]
    paths = {"bf16": model.file(reduced.steps["generator"].variant), "int8": model.file(fast.steps["generator"].variant)}
    models = {k: ov.Core().read_model(str(p)) for k, p in paths.items()}
    stages = {k: stage_of(describe(m), cfg.generator.num_bottleneck_blocks) for k, m in models.items()}
    timed = profile(paths, {"bf16": "bf16", "int8": "bf16"}, probe_inputs[0], args.rounds)
    peaks = {p: measure_peak_openvino(p) for p in ("bf16", "int8")}
    whole = frames(model, args.rounds)
    load_after = [round(v, 2) for v in os.getloadavg()]
    errors = stage_errors(int8_graph_ir(checkpoint, cfg, workdir), calibration, probe_inputs,
                          cfg.generator.num_bottleneck_blocks, record["kept"])
    rows = []
    for stage in STAGES:
        row = {"stage": stage, "levels": errors.get(stage)}
        for key in ("bf16", "int8"):
            gflop = gflop_by_stage(models[key], stages[key])[stage]
            row[key] = {"ms": by_stage(timed[key], stages[key])[stage], "gflop": gflop,
                        "floor_ms": gflop / peaks[key]["gflops"] * 1e3,
                        "kernel_floor_ms": gflop / peaks[key]["kernel_gflops"] * 1e3}
        rows.append(row)
    per_frame = cfgmod.conv_gflop(cfg)["per_frame"]
    whole["bf16"]["floor_ms"] = per_frame / peaks["bf16"]["gflops"] * 1e3
    whole["int8"]["floor_ms"] = int8_floor_ms(model, whole["int8"].pop("plan"), per_frame, peaks)
    whole["bf16"].pop("plan")
    report = {"machine": {"load_before": load_before, "load_after": load_after}, "stages": rows,
              "generator_ms": {k: v["ms"] for k, v in timed.items()}, "frames": whole, "peaks": peaks,
              "plan": {k: record[k] for k in ("kept", "reason", "mean", "max")}, "errors": errors}
    render(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=list))
    return 0


def render(report: dict) -> None:
    def floors(cell: dict) -> str:
        return (f"{cell['ms']:6.2f} {cell['floor_ms']:6.2f} {cell['ms'] / cell['floor_ms']:5.2f}x "
                f"{cell['ms'] / cell['kernel_floor_ms']:5.2f}x" if cell["gflop"] else f"{cell['ms']:6.2f}" + " " * 22)

    print(f"load average before {report['machine']['load_before']}, after {report['machine']['load_after']}")
    for key, p in report["peaks"].items():
        print(f"peak {key}: {p['gflops']:.0f} GFLOP/s (the whole call), {p['kernel_gflops']:.0f} (the kernel)")
    print(f"{'stage':<16} {'GFLOP':>6} | {'bf16 ms':>7} {'floor':>6} {'x':>6} {'x kern':>6} | "
          f"{'int8 ms':>7} {'floor':>6} {'x':>6} {'x kern':>6} | levels alone at int8")
    for row in report["stages"]:
        levels = f"{row['levels'][0]:.3f} / {row['levels'][1]:.2f}" if row["levels"] else "-"
        print(f"{row['stage']:<16} {row['bf16']['gflop']:6.2f} | {floors(row['bf16'])} | {floors(row['int8'])} | "
              f"{levels}")
    g = report["generator_ms"]
    print(f"generator: bf16 {g['bf16']:.1f} ms, int8 {g['int8']:.1f} ms ({g['bf16'] / g['int8']:.2f}x); as planned "
          f"{report['errors']['whole (as planned)'][0]:.3f} / {report['errors']['whole (as planned)'][1]:.2f} levels")
    f = report["frames"]
    for key, v in f.items():
        print(f"frame {v['label']}: {v['frame_ms']:.1f} ms (keypoints {v['keypoints_ms']:.1f}, generator "
              f"{v['generate_ms']:.1f}), floor {v['floor_ms']:.1f} ms ({v['frame_ms'] / v['floor_ms']:.2f}x), "
              f"{v['levels'][0]:.3f} / {v['levels'][1]:.2f} levels from float32")
    print(f"int8 frame {f['bf16']['frame_ms'] / f['int8']['frame_ms']:.2f}x bf16's; kept at bf16: "
          f"{report['plan']['kept'] or 'none'} ({report['plan']['reason']})")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
