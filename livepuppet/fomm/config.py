"""The FOMM architecture: hyper-parameters, presets, YAML, and inference from a checkpoint.

A :class:`ModelConfig` holds every hyper-parameter of the reference's section 2.
It can come from the original YAML layout, from a named preset, or be read off
the tensor shapes of a checkpoint, so that users never have to know which
config goes with which file. :func:`expected_shapes` lists every tensor an
architecture needs, which is how a checkpoint is validated before use.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from livepuppet.errors import ConfigError

KP_VARIANCE = 0.01  # fixed in the original's dense motion code


@dataclass(frozen=True)
class KPDetectorConfig:
    temperature: float = 0.1
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    scale_factor: float = 0.25
    single_jacobian_map: bool = False
    pad: int = 0


@dataclass(frozen=True)
class DenseMotionConfig:
    block_expansion: int = 64
    max_features: int = 1024
    num_blocks: int = 5
    scale_factor: float = 0.25


@dataclass(frozen=True)
class GeneratorConfig:
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    num_bottleneck_blocks: int = 6
    estimate_occlusion_map: bool = True
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)


@dataclass(frozen=True)
class ModelConfig:
    num_kp: int = 10
    num_channels: int = 3
    estimate_jacobian: bool = True
    kp_detector: KPDetectorConfig = field(default_factory=KPDetectorConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    frame_shape: tuple[int, int] = (256, 256)  # (height, width)

    def with_frame_shape(self, height: int, width: int) -> "ModelConfig":
        return dataclasses.replace(self, frame_shape=(int(height), int(width)))

    def to_dict(self) -> dict[str, Any]:
        """The original YAML layout (``model_params`` + ``dataset_params``)."""
        kp = dataclasses.asdict(self.kp_detector)
        gen = dataclasses.asdict(self.generator)
        dense = gen.pop("dense_motion")
        gen["dense_motion_params"] = dense
        return {
            "dataset_params": {"frame_shape": [*self.frame_shape, self.num_channels]},
            "model_params": {
                "common_params": {
                    "num_kp": self.num_kp,
                    "num_channels": self.num_channels,
                    "estimate_jacobian": self.estimate_jacobian,
                },
                "kp_detector_params": kp,
                "generator_params": gen,
            },
        }

    def validate_frame_shape(self) -> None:
        """Refuse frame sizes the hourglasses cannot take (each level halves the size)."""
        check_ranges(self, "the config")  # block counts are exponents: ranges before any size is derived
        h, w = self.frame_shape
        kp, dm = self.kp_detector, self.generator.dense_motion
        need = [
            (round(1 / kp.scale_factor) * 2**kp.num_blocks, "the keypoint detector"),
            (round(1 / dm.scale_factor) * 2**dm.num_blocks, "the dense motion network"),
            (2**self.generator.num_down_blocks, "the generator"),
        ]
        for multiple, part in need:
            if h % multiple or w % multiple:
                raise ConfigError(
                    f"frame size {h}x{w} does not suit {part}: height and width must be "
                    f"multiples of {multiple}; pick e.g. {_round_up(h, multiple)}x{_round_up(w, multiple)}"
                )
        heat = min(h, w) * kp.scale_factor - 2 * (3 - kp.pad)
        if heat < 2:
            raise ConfigError(f"frame size {h}x{w} is too small for the keypoint detector")


def _round_up(x: int, m: int) -> int:
    return max(m, (x + m - 1) // m * m)


PRESETS: dict[str, ModelConfig] = {
    name: ModelConfig() for name in ("vox", "vox-adv", "taichi", "taichi-adv", "fashion", "nemo", "bair")
}
PRESETS["mgif"] = ModelConfig(kp_detector=KPDetectorConfig(single_jacobian_map=True))
# Every published config runs at 256x256 (bair-256.yaml names no frame_shape, so the default
# applies; 64x64 could not pass the 5-level hourglasses at scale 0.25 anyway).


def preset(name: str) -> ModelConfig:
    key = name.lower().removesuffix("-cpk").removesuffix(".yaml")
    if key not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[key]


def from_dict(doc: Mapping[str, Any], source: str = "config") -> ModelConfig:
    """Build a config from the original YAML layout; unknown keys are ignored, every value is range-checked."""
    try:
        params = doc["model_params"]
        common = params["common_params"]
        kp = dict(params["kp_detector_params"])
        gen = dict(params["generator_params"])
        dense = dict(gen.pop("dense_motion_params"))
        dataset = doc.get("dataset_params") or {}
        shape = dataset.get("frame_shape", [256, 256, 3])
    except KeyError as exc:
        raise ConfigError(f"{source} is not an FOMM config: it lacks model_params entry {exc}") from None
    except (TypeError, ValueError, AttributeError):
        raise ConfigError(f"{source} is not an FOMM config: model_params and dataset_params must hold "
                          "mappings, as in the original YAML files") from None
    try:
        cfg = ModelConfig(
            num_kp=int(common["num_kp"]),
            num_channels=int(common["num_channels"]),
            estimate_jacobian=bool(common["estimate_jacobian"]),
            kp_detector=_fill(KPDetectorConfig, kp),
            generator=_fill(GeneratorConfig, gen, dense_motion=_fill(DenseMotionConfig, dense)),
            frame_shape=(int(shape[0]), int(shape[1])),
        )
    except (KeyError, TypeError, ValueError, OverflowError, IndexError) as exc:
        raise ConfigError(f"{source} has a missing or malformed entry: {exc}") from None
    check_ranges(cfg, source)
    return cfg


# What any FOMM has (vox-256: 10 keypoints, hourglasses of 5 blocks, scale 1/4), with room to spare; a value
# outside is refused before it is used as a loop count or an exponent.
_RANGES: dict[str, tuple[float, float]] = {
    "num_kp": (1, 256), "num_channels": (1, 4), "block_expansion": (1, 4096), "max_features": (1, 65536),
    "num_blocks": (1, 10), "num_down_blocks": (0, 8), "num_bottleneck_blocks": (0, 64), "pad": (0, 16),
    "temperature": (1e-6, 1e3), "scale_factor": (1 / 32, 1),
}
FRAME_SIDES = (16, 4096)


def check_ranges(cfg: ModelConfig, source: str) -> None:
    """Refuse hyper-parameters outside what any FOMM could use, before anything is sized from them."""
    parts = {"": cfg, "kp_detector_params.": cfg.kp_detector, "generator_params.": cfg.generator,
             "dense_motion_params.": cfg.generator.dense_motion}
    for prefix, part in parts.items():
        for f in dataclasses.fields(part):
            value, (low, high) = getattr(part, f.name), _RANGES.get(f.name, (-math.inf, math.inf))
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not low <= value <= high:
                raise ConfigError(f"{source}: {prefix}{f.name} is {value!r}, outside {low:g} to {high:g}; "
                                  "check the config (or drop --config to read it off the checkpoint)")
    _check_sides(cfg.frame_shape, source)


def _check_sides(shape: tuple[int, int], source: str | None = None) -> None:
    if not all(FRAME_SIDES[0] <= side <= FRAME_SIDES[1] for side in shape):
        h, w = shape
        raise ConfigError(f"{source + ': ' if source else ''}frame size {h}x{w} is outside {FRAME_SIDES[0]} to "
                          f"{FRAME_SIDES[1]} pixels a side")


def _fill(cls: type, values: Mapping[str, Any], **extra: Any) -> Any:
    names = {f.name: f.type for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in values.items() if k in names}
    for k, v in kwargs.items():
        default = getattr(cls(), k) if k != "dense_motion" else None
        if isinstance(default, bool):
            kwargs[k] = bool(v)
        elif isinstance(default, int):
            kwargs[k] = int(v)
        elif isinstance(default, float):
            kwargs[k] = float(v)
    return cls(**kwargs, **extra)


def load_yaml(path: str | Path) -> ModelConfig:
    from livepuppet import yamlfile

    path = Path(path)
    try:
        doc = yamlfile.load(path, "config file", ConfigError)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} is not an FOMM config (expected a YAML mapping)")
    return from_dict(doc, str(path))


def resolve(spec: str | None, state: "tuple[Mapping, Mapping] | None" = None) -> ModelConfig:
    """A config from a YAML path, a preset name, or (spec None) the checkpoint's shapes."""
    if spec is None:
        if state is None:
            raise ConfigError("no config given and no checkpoint to read it from")
        return infer(*state)
    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        return load_yaml(spec)
    return preset(spec)


# --------------------------------------------------------------------------- shapes

Shapes = dict[str, tuple[int, ...]]


def _conv(shapes: Shapes, name: str, cin: int, cout: int, k: int) -> None:
    shapes[f"{name}.weight"] = (cout, cin, k, k)
    shapes[f"{name}.bias"] = (cout,)


def _bn(shapes: Shapes, name: str, c: int) -> None:
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{name}.{leaf}"] = (c,)


def _down_shape(scale: float, channels: int) -> tuple[int, ...]:
    return (channels, 1, antialias_kernel_size(scale), antialias_kernel_size(scale))


def antialias_kernel_size(scale: float) -> int:
    sigma = (1 / scale - 1) / 2
    return 2 * round(sigma * 4) + 1


def hourglass_channels(e: int, cin: int, n: int, m: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(in, out) channels of the encoder's down blocks and the decoder's up blocks."""
    down = [(cin if i == 0 else min(m, e * 2**i), min(m, e * 2 ** (i + 1))) for i in range(n)]
    up = []
    for j in range(n):
        i = n - 1 - j
        up.append(((1 if i == n - 1 else 2) * min(m, e * 2 ** (i + 1)), min(m, e * 2**i)))
    return down, up


def _hourglass(shapes: Shapes, prefix: str, e: int, cin: int, n: int, m: int) -> int:
    down, up = hourglass_channels(e, cin, n, m)
    for i, (a, b) in enumerate(down):
        _conv(shapes, f"{prefix}.encoder.down_blocks.{i}.conv", a, b, 3)
        _bn(shapes, f"{prefix}.encoder.down_blocks.{i}.norm", b)
    for j, (a, b) in enumerate(up):
        _conv(shapes, f"{prefix}.decoder.up_blocks.{j}.conv", a, b, 3)
        _bn(shapes, f"{prefix}.decoder.up_blocks.{j}.norm", b)
    return e + cin


def expected_shapes(cfg: ModelConfig) -> tuple[Shapes, Shapes]:
    """Every tensor (name -> shape) the generator and keypoint detector state dicts need."""
    k, c = cfg.num_kp, cfg.num_channels
    kp: Shapes = {}
    kd = cfg.kp_detector
    feats = _hourglass(kp, "predictor", kd.block_expansion, c, kd.num_blocks, kd.max_features)
    _conv(kp, "kp", feats, k, 7)
    if cfg.estimate_jacobian:
        _conv(kp, "jacobian", feats, 4 * (1 if kd.single_jacobian_map else k), 7)
    if kd.scale_factor != 1:
        kp["down.weight"] = _down_shape(kd.scale_factor, c)

    gen: Shapes = {}
    g, dm = cfg.generator, cfg.generator.dense_motion
    e, m = g.block_expansion, g.max_features
    _conv(gen, "first.conv", c, e, 7)
    _bn(gen, "first.norm", e)
    for i in range(g.num_down_blocks):
        a, b = min(m, e * 2**i), min(m, e * 2 ** (i + 1))
        _conv(gen, f"down_blocks.{i}.conv", a, b, 3)
        _bn(gen, f"down_blocks.{i}.norm", b)
    for i in range(g.num_down_blocks):
        a, b = min(m, e * 2 ** (g.num_down_blocks - i)), min(m, e * 2 ** (g.num_down_blocks - i - 1))
        _conv(gen, f"up_blocks.{i}.conv", a, b, 3)
        _bn(gen, f"up_blocks.{i}.norm", b)
    mid = min(m, e * 2**g.num_down_blocks)
    for i in range(g.num_bottleneck_blocks):
        for j in (1, 2):
            _bn(gen, f"bottleneck.r{i}.norm{j}", mid)
            _conv(gen, f"bottleneck.r{i}.conv{j}", mid, mid, 3)
    _conv(gen, "final", e, c, 7)
    feats = _hourglass(gen, "dense_motion_network.hourglass", dm.block_expansion, (k + 1) * (c + 1),
                       dm.num_blocks, dm.max_features)
    _conv(gen, "dense_motion_network.mask", feats, k + 1, 7)
    if g.estimate_occlusion_map:
        _conv(gen, "dense_motion_network.occlusion", feats, 1, 7)
    if dm.scale_factor != 1:
        gen["dense_motion_network.down.weight"] = _down_shape(dm.scale_factor, c)
    return gen, kp


def validate(cfg: ModelConfig, generator: Mapping[str, np.ndarray], kp_detector: Mapping[str, np.ndarray],
             source: str = "the checkpoint") -> None:
    """Raise one ConfigError listing the first mismatches between a state dict and the config."""
    problems: list[str] = []
    for part, state, want in zip(("generator", "kp_detector"), (generator, kp_detector), expected_shapes(cfg)):
        for name, shape in want.items():
            got = state.get(name)
            if got is None:
                problems.append(f"{part}.{name} missing")
            elif tuple(got.shape) != shape:
                problems.append(f"{part}.{name} is {tuple(got.shape)}, expected {shape}")
        for name in state:
            if name not in want and not name.endswith("num_batches_tracked"):
                problems.append(f"{part}.{name} unexpected")
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ConfigError(
            f"{source} does not match this architecture ({shown}); "
            "drop --config to read the architecture off the checkpoint, or pass the config it was trained with"
        )


# --------------------------------------------------------------------------- inference from shapes

def _count(state: Mapping[str, Any], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for name in state if (m := rx.fullmatch(name))})


def _shape(state: Mapping[str, np.ndarray], name: str) -> tuple[int, ...]:
    if name not in state:
        raise ConfigError(f"the checkpoint lacks {name}, so it is not an FOMM model; pass --config if it is one")
    return tuple(state[name].shape)


def _infer_hourglass(state: Mapping[str, np.ndarray], prefix: str, default_max: int) -> tuple[int, int, int]:
    """(block_expansion, num_blocks, max_features) from an hourglass's encoder shapes."""
    n = _count(state, rf"{re.escape(prefix)}\.encoder\.down_blocks\.(\d+)\.conv\.weight")
    if n == 0:
        raise ConfigError(f"the checkpoint has no {prefix} hourglass, so it is not an FOMM model")
    outs = [_shape(state, f"{prefix}.encoder.down_blocks.{i}.conv.weight")[0] for i in range(n)]
    e = outs[0] // 2
    return e, n, _infer_max(e, outs, default_max)


def _infer_max(e: int, outs: list[int], default_max: int) -> int:
    """max_features is visible only where it caps a block; otherwise any value above is equivalent."""
    for i, out in enumerate(outs):
        if out < e * 2 ** (i + 1):
            return out
    return max(default_max, max(outs))


def _infer_scale(down: np.ndarray | None) -> float:
    if down is None:
        return 1.0
    for n in range(2, 33):
        if antialias_kernel_size(1 / n) == down.shape[-1]:
            return 1 / n
    raise ConfigError(f"cannot tell the anti-alias scale of a {down.shape[-1]}-tap kernel; pass --config")


def infer(generator: Mapping[str, np.ndarray], kp_detector: Mapping[str, np.ndarray]) -> ModelConfig:
    """Read the architecture off a checkpoint's tensor shapes (frame shape 256x256 unless told)."""
    num_kp = _shape(kp_detector, "kp.weight")[0]
    num_channels = _shape(kp_detector, "predictor.encoder.down_blocks.0.conv.weight")[1]
    jac = kp_detector.get("jacobian.weight")
    kp_e, kp_n, kp_m = _infer_hourglass(kp_detector, "predictor", 1024)
    kd = KPDetectorConfig(
        block_expansion=kp_e, num_blocks=kp_n, max_features=kp_m,
        scale_factor=_infer_scale(kp_detector.get("down.weight")),
        single_jacobian_map=jac is not None and jac.shape[0] == 4 and num_kp != 1,
    )
    dm_e, dm_n, dm_m = _infer_hourglass(generator, "dense_motion_network.hourglass", 1024)
    dm = DenseMotionConfig(block_expansion=dm_e, num_blocks=dm_n, max_features=dm_m,
                           scale_factor=_infer_scale(generator.get("dense_motion_network.down.weight")))
    g_e = _shape(generator, "first.conv.weight")[0]
    n_down = _count(generator, r"down_blocks\.(\d+)\.conv\.weight")
    outs = [_shape(generator, f"down_blocks.{i}.conv.weight")[0] for i in range(n_down)]
    g = GeneratorConfig(
        block_expansion=g_e, num_down_blocks=n_down,
        max_features=_infer_max(g_e, outs, 512) if outs else 512,
        num_bottleneck_blocks=_count(generator, r"bottleneck\.r(\d+)\.conv1\.weight"),
        estimate_occlusion_map="dense_motion_network.occlusion.weight" in generator,
        dense_motion=dm,
    )
    cfg = ModelConfig(num_kp=int(num_kp), num_channels=int(num_channels), estimate_jacobian=jac is not None,
                      kp_detector=kd, generator=g)
    validate(cfg, generator, kp_detector)
    return cfg


def conv_gflop(cfg: ModelConfig) -> dict[str, float]:
    """Convolution GFLOP per frame by part (multiply-adds x 2), as the reference's section 8 counts."""
    h, w = cfg.frame_shape
    gen, kp = expected_shapes(cfg)
    out = {"kp_detector": 0.0, "source_encoder": 0.0, "dense_motion": 0.0, "generator": 0.0}
    sizes = _conv_output_sizes(cfg)
    for part, state in (("kp_detector", kp), ("generator", gen)):
        for name, shape in state.items():
            if not name.endswith(".weight") or len(shape) != 4 or name.endswith("down.weight"):
                continue
            layer = name[: -len(".weight")]
            oh, ow = sizes[(part, layer)]
            flop = 2 * shape[0] * shape[1] * shape[2] * shape[3] * oh * ow / 1e9
            if part == "generator":
                if layer.startswith(("first", "down_blocks")):
                    out["source_encoder"] += flop
                elif layer.startswith("dense_motion_network"):
                    out["dense_motion"] += flop
                else:
                    out["generator"] += flop
            else:
                out["kp_detector"] += flop
    out["per_frame"] = out["kp_detector"] + out["dense_motion"] + out["generator"]
    return out


def _conv_output_sizes(cfg: ModelConfig) -> dict[tuple[str, str], tuple[int, int]]:
    h, w = cfg.frame_shape
    sizes: dict[tuple[str, str], tuple[int, int]] = {}

    def hourglass(part: str, prefix: str, n: int, hh: int, ww: int) -> tuple[int, int]:
        for i in range(n):
            sizes[(part, f"{prefix}.encoder.down_blocks.{i}.conv")] = (hh >> i, ww >> i)
        for j in range(n):
            i = n - 1 - j
            sizes[(part, f"{prefix}.decoder.up_blocks.{j}.conv")] = (hh >> i, ww >> i)
        return hh, ww

    kd = cfg.kp_detector
    kh, kw = int(h * kd.scale_factor), int(w * kd.scale_factor)
    hourglass("kp_detector", "predictor", kd.num_blocks, kh, kw)
    sizes[("kp_detector", "kp")] = (kh - 6 + 2 * kd.pad, kw - 6 + 2 * kd.pad)
    sizes[("kp_detector", "jacobian")] = sizes[("kp_detector", "kp")]
    g, dm = cfg.generator, cfg.generator.dense_motion
    dh, dw = int(h * dm.scale_factor), int(w * dm.scale_factor)
    hourglass("generator", "dense_motion_network.hourglass", dm.num_blocks, dh, dw)
    sizes[("generator", "dense_motion_network.mask")] = (dh, dw)
    sizes[("generator", "dense_motion_network.occlusion")] = (dh, dw)
    sizes[("generator", "first.conv")] = (h, w)
    for i in range(g.num_down_blocks):
        sizes[("generator", f"down_blocks.{i}.conv")] = (h >> i, w >> i)
        sizes[("generator", f"up_blocks.{i}.conv")] = (h >> (g.num_down_blocks - i - 1), w >> (g.num_down_blocks - i - 1))
    bh, bw = h >> g.num_down_blocks, w >> g.num_down_blocks
    for i in range(g.num_bottleneck_blocks):
        sizes[("generator", f"bottleneck.r{i}.conv1")] = (bh, bw)
        sizes[("generator", f"bottleneck.r{i}.conv2")] = (bh, bw)
    sizes[("generator", "final")] = (h, w)
    return sizes


def gaussian_kernel(scale: float) -> np.ndarray:
    """The anti-alias Gaussian (k, k), as the original builds it, for checkpoints without the buffer."""
    sigma = (1 / scale - 1) / 2
    k = antialias_kernel_size(scale)
    t = np.arange(k, dtype=np.float32)
    g = np.exp(-((t - (k - 1) / 2) ** 2) / (2 * sigma**2))
    kernel = np.outer(g, g)
    return (kernel / kernel.sum()).astype(np.float32)


__all__ = [
    "ModelConfig", "KPDetectorConfig", "GeneratorConfig", "DenseMotionConfig", "PRESETS", "KP_VARIANCE",
    "preset", "from_dict", "load_yaml", "resolve", "infer", "validate", "expected_shapes", "conv_gflop",
    "hourglass_channels", "gaussian_kernel", "antialias_kernel_size",
]
