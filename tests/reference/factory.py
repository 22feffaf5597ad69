"""Deterministic FOMM checkpoints with random but numerically sane weights.

Published checkpoints are large and not redistributable in CI, so tests build
their own: the reference architecture with seeded random weights whose outputs
are non-trivial (sharp, spread keypoints; non-identity jacobians; a non-uniform
mask; unsaturated occlusion and prediction), saved the way published files are.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from tests.reference.fomm import KPDetector, OcclusionAwareGenerator, build_models, normalize_kp

Params = dict[str, Any]

VOX_PARAMS: Params = {
    "common_params": {"num_kp": 10, "num_channels": 3, "estimate_jacobian": True},
    "kp_detector_params": {
        "temperature": 0.1,
        "block_expansion": 32,
        "max_features": 1024,
        "scale_factor": 0.25,
        "num_blocks": 5,
    },
    "generator_params": {
        "block_expansion": 64,
        "max_features": 512,
        "num_down_blocks": 2,
        "num_bottleneck_blocks": 6,
        "estimate_occlusion_map": True,
        "dense_motion_params": {"block_expansion": 64, "max_features": 1024, "num_blocks": 5, "scale_factor": 0.25},
    },
}

MGIF_PARAMS: Params = copy.deepcopy(VOX_PARAMS)
MGIF_PARAMS["kp_detector_params"]["single_jacobian_map"] = True

SMALL_PARAMS: Params = {
    "common_params": {"num_kp": 5, "num_channels": 3, "estimate_jacobian": True},
    "kp_detector_params": {
        "temperature": 0.1,
        "block_expansion": 8,
        "max_features": 64,
        "scale_factor": 0.25,
        "num_blocks": 3,
    },
    "generator_params": {
        "block_expansion": 8,
        "max_features": 32,
        "num_down_blocks": 2,
        "num_bottleneck_blocks": 2,
        "estimate_occlusion_map": True,
        "dense_motion_params": {"block_expansion": 8, "max_features": 64, "num_blocks": 3, "scale_factor": 0.25},
    },
}

# Override names of small_params(): unambiguous names go to their only group;
# block_expansion / max_features / num_blocks / scale_factor need a prefix.
_GROUPS = {
    "": "common_params",
    "kp_": "kp_detector_params",
    "gen_": "generator_params",
    "dm_": "dense_motion_params",
}
_UNIQUE = {
    "num_kp": "common_params",
    "num_channels": "common_params",
    "estimate_jacobian": "common_params",
    "temperature": "kp_detector_params",
    "single_jacobian_map": "kp_detector_params",
    "pad": "kp_detector_params",
    "num_down_blocks": "generator_params",
    "num_bottleneck_blocks": "generator_params",
    "estimate_occlusion_map": "generator_params",
}


def small_params(**overrides: Any) -> Params:
    """Deep copy of SMALL_PARAMS with overrides, e.g. small_params(num_kp=7, kp_scale_factor=0.5).

    Shared names take a prefix: kp_ (kp detector), gen_ (generator), dm_ (dense motion).
    """
    params = copy.deepcopy(SMALL_PARAMS)
    for name, value in overrides.items():
        if name in _UNIQUE:
            group, key = _UNIQUE[name], name
        else:
            prefix = next((p for p in ("kp_", "gen_", "dm_") if name.startswith(p)), None)
            if prefix is None:
                raise KeyError(f"unknown or ambiguous override {name!r} (prefix with kp_, gen_ or dm_)")
            group, key = _GROUPS[prefix], name[len(prefix) :]
        target = params["generator_params"]["dense_motion_params"] if group == "dense_motion_params" else params[group]
        target[key] = value
    return params


# ---------------------------------------------------------------- random weights

# Targets for the output heads. Heads are scaled from the statistics of their
# input features on calibration frames, so the same targets hold at SMALL and VOX.
_KP_MAX_PROB = 0.25  # mean peak of the kp heatmaps: sharp, not one-hot (any heatmap size)
_JAC_MAP_STD = 0.03  # spatial std of the jacobian maps around their bias
_JAC_BIAS_NOISE = 0.05  # per-map offset of the bias from [1, 0, 0, 1]
_MASK_LOGIT_STD = 1.5
_OCC_LOGIT_STD = 0.7
_OCC_LOGIT_MEAN = 1.0  # sigmoid(1) ~ 0.73: mostly visible, not saturated
_FINAL_LOGIT_STD = 1.0


def _normal(shape: tuple[int, ...], std: float, gen: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=gen) * std


def _init_conv(conv: nn.Conv2d, gen: torch.Generator, gain: float = math.sqrt(2.0), bias_std: float = 0.05) -> None:
    """He-style init (gain / sqrt(fan_in)): keeps activations O(0.5) through the hourglasses."""
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    conv.weight.copy_(_normal(tuple(conv.weight.shape), gain / math.sqrt(fan_in), gen))
    if conv.bias is not None:
        conv.bias.copy_(_normal(tuple(conv.bias.shape), bias_std, gen))


def _init_bn(bn: nn.BatchNorm2d, gen: torch.Generator) -> None:
    n = bn.num_features
    bn.weight.copy_(1 + (torch.rand(n, generator=gen) * 2 - 1) * 0.3)
    bn.bias.copy_(_normal((n,), 0.05, gen))
    bn.running_mean.copy_(_normal((n,), 0.2, gen))
    bn.running_var.copy_(2 ** (torch.rand(n, generator=gen) * 2 - 1))  # log-uniform in [0.5, 2]
    bn.num_batches_tracked.fill_(int(torch.randint(1000, 100000, (1,), generator=gen)))


def _round3(x: float) -> float:
    """3 significant digits, so float noise across machines/thread counts rarely changes the weights."""
    return float(f"{x:.3g}")


def _head_input(model: nn.Module, head: nn.Conv2d, *args: Any, **kwargs: Any) -> Tensor:
    """Run `model` and return what `head` received."""
    seen: list[Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0]))
    try:
        model(*args, **kwargs)
    finally:
        handle.remove()
    return seen[-1]


def _scale_head(
    head: nn.Conv2d, feat: Tensor, std: float, mean: float | None = None, per_channel_spatial: bool = False
) -> None:
    """Rescale the weights so W*feat has the target std; optionally set the bias for a target mean."""
    resp = torch.nn.functional.conv2d(feat, head.weight, padding=head.padding)
    measured = resp.flatten(2).std(dim=2).mean() if per_channel_spatial else resp.std()
    factor = _round3(std / max(float(measured), 1e-8))
    head.weight.mul_(factor)
    if mean is not None:
        head.bias.copy_(torch.round((mean - resp.mean(dim=(0, 2, 3)) * factor) * 1000) / 1000)


def _sharpen_kp(kp_detector: KPDetector, feat: Tensor, max_prob: float) -> None:
    """Scale the kp conv so the mean heatmap peak is `max_prob` (bisection on the log-gain)."""
    resp = torch.nn.functional.conv2d(feat, kp_detector.kp.weight, padding=kp_detector.kp.padding).flatten(2)
    resp = resp / kp_detector.temperature

    def peak(gain: float) -> float:
        return float(torch.softmax(resp * gain, dim=2).amax(dim=2).mean())

    lo, hi = -12.0, 12.0  # log2 of the gain; the peak grows monotonically with it
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if peak(2**mid) < max_prob else (lo, mid)
    kp_detector.kp.weight.mul_(_round3(2 ** ((lo + hi) / 2)))


def _calibration_size(kp_detector: KPDetector, generator: OcclusionAwareGenerator) -> int:
    """Smallest natural frame size: 2 pixels at every hourglass bottom (256 for vox, 64 for SMALL)."""
    sizes = [2 * 2 ** len(kp_detector.predictor.encoder.down_blocks) / kp_detector.down.scale]
    dm = generator.dense_motion_network
    if dm is not None:
        sizes.append(2 * 2 ** len(dm.hourglass.encoder.down_blocks) / dm.down.scale)
    return max(64, int(math.ceil(max(sizes))))


@torch.no_grad()
def randomize_(generator: OcclusionAwareGenerator, kp_detector: KPDetector, seed: int = 0) -> None:
    """Overwrite all parameters and BN buffers in place, deterministically from `seed`.

    Body convs get He-style weights; output heads are then scaled from their input
    features on two calibration frames (a few seconds at vox-256 on CPU).
    """
    gen = torch.Generator().manual_seed(seed)
    residual_out = {m.conv2 for m in generator.bottleneck}
    for model in (kp_detector, generator):
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                _init_bn(module, gen)
            elif isinstance(module, nn.Conv2d):
                # Residual branches are damped so the bottleneck stays O(1) over 6 blocks.
                _init_conv(module, gen, gain=0.5 if module in residual_out else math.sqrt(2.0))
    size = _calibration_size(kp_detector, generator)
    x = to_torch_nchw(random_frames(2, size, size, seed=10_000 + seed))
    was_training = (generator.training, kp_detector.training)
    generator.eval(), kp_detector.eval()

    feat = _head_input(kp_detector, kp_detector.kp, x)
    _sharpen_kp(kp_detector, feat, _KP_MAX_PROB)
    if kp_detector.jacobian is not None:
        jac = kp_detector.jacobian
        _scale_head(jac, feat, _JAC_MAP_STD, mean=0.0, per_channel_spatial=True)
        eye = torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(jac.out_channels // 4)
        sign = torch.randint(0, 2, (jac.out_channels,), generator=gen) * 2 - 1
        offset = sign * (0.5 + torch.rand(jac.out_channels, generator=gen)) * _JAC_BIAS_NOISE
        jac.bias.add_(eye + offset)  # every entry off identity by 0.5..1.5 x the noise level
    kp = kp_detector(x)
    kp_src = {name: v[:1] for name, v in kp.items()}
    kp_drv = {name: v[1:] for name, v in kp.items()}

    dm = generator.dense_motion_network
    if dm is not None:
        feat = _head_input(dm, dm.mask, x[:1], kp_driving=kp_drv, kp_source=kp_src)
        _scale_head(dm.mask, feat, _MASK_LOGIT_STD, mean=0.0)
        if dm.occlusion is not None:
            _scale_head(dm.occlusion, feat, _OCC_LOGIT_STD, mean=_OCC_LOGIT_MEAN)
    feat = _head_input(generator, generator.final, x[:1], kp_driving=kp_drv, kp_source=kp_src)
    _scale_head(generator.final, feat, _FINAL_LOGIT_STD, mean=0.0)
    generator.train(was_training[0]), kp_detector.train(was_training[1])


# ---------------------------------------------------------------- frames


def _scene(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random smooth scene: colour gradient background plus 6 coloured Gaussian blobs."""
    return {
        "base": rng.uniform(0.2, 0.8, 3),
        "gx": rng.uniform(-0.3, 0.3, 3),
        "gy": rng.uniform(-0.3, 0.3, 3),
        "centre": rng.uniform(0, 1, (6, 2)),
        "radius": rng.uniform(0.05, 0.25, 6),
        "colour": rng.uniform(-0.6, 0.6, (6, 3)),
        "velocity": rng.normal(0, 1, (6, 2)),
    }


def _render(scene: dict[str, np.ndarray], h: int, w: int, t: float, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    img = scene["base"] + scene["gx"] * xx[..., None] + scene["gy"] * yy[..., None]
    for (cy, cx), r, colour, (vy, vx) in zip(scene["centre"], scene["radius"], scene["colour"], scene["velocity"]):
        blob = np.exp(-((yy - cy - t * vy) ** 2 + (xx - cx - t * vx) ** 2) / (2 * r * r))
        img = img + blob[..., None] * colour
    img = img + rng.normal(0, 0.02, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def random_frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """(n, h, w, 3) float32 in [0, 1]: independent smooth scenes (gradients, blobs, mild noise)."""
    rng = np.random.default_rng(seed)
    return np.stack([_render(_scene(rng), h, w, 0.0, rng) for _ in range(n)])


def random_video(n: int, h: int, w: int, seed: int = 0, speed: float = 0.02) -> np.ndarray:
    """(n, h, w, 3) float32 in [0, 1]: one smooth scene whose blobs drift `speed` per frame."""
    rng = np.random.default_rng(seed)
    scene = _scene(rng)
    return np.stack([_render(scene, h, w, i * speed, rng) for i in range(n)])


def to_torch_nchw(frames: np.ndarray) -> Tensor:
    """NHWC numpy -> NCHW float32 torch tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(frames, np.float32).transpose(0, 3, 1, 2)))


# ---------------------------------------------------------------- stats


@torch.no_grad()
def describe_outputs(
    generator: OcclusionAwareGenerator,
    kp_detector: KPDetector,
    frames: np.ndarray | None = None,
    size: tuple[int, int] = (64, 64),
    seed: int = 123,
) -> dict[str, float]:
    """Sanity statistics of the model on a few frames (source = frame 0, drivers = the rest)."""
    if frames is None:
        frames = random_frames(3, *size, seed=seed)
    x = to_torch_nchw(frames)
    kp = kp_detector(x)
    logits = kp_detector.kp(kp_detector.predictor(kp_detector.down(x)))
    b, k = logits.shape[:2]
    heat = torch.softmax(logits.view(b, k, -1) / kp_detector.temperature, dim=2)
    stats = {
        "kp_std_across_k": float(kp["value"].std(dim=1).mean()),
        "kp_abs_max": float(kp["value"].abs().max()),
        "heatmap_max_prob": float(heat.max(dim=2).values.mean()),
    }
    kp_src = {name: v[:1] for name, v in kp.items()}
    kp_drv = {name: v[1:] for name, v in kp.items()}
    if "jacobian" in kp:
        dev = (kp["jacobian"] - torch.eye(2)).abs()
        stats["jac_dev_min"] = float(dev.amax(dim=(2, 3)).min())
        stats["jac_dev_max"] = float(dev.max())
        stats["jac_min_abs_det"] = float(torch.linalg.det(kp["jacobian"]).abs().min())
        kp_drv = normalize_kp(kp_src, kp_drv, {n: v[1:2] for n, v in kp.items()}, True, True, True)
    out = generator(x[:1], kp_driving=kp_drv, kp_source=kp_src)
    if "mask" in out:
        mask = out["mask"]
        stats["mask_max_mean"] = float(mask.max(dim=1).values.mean())
        stats["mask_std"] = float(mask.std())
        stats["mask_argmax_classes"] = float(len(torch.unique(mask.argmax(dim=1))))
    if "occlusion_map" in out:
        occ = out["occlusion_map"]
        stats["occlusion_mean"] = float(occ.mean())
        stats["occlusion_std"] = float(occ.std())
        stats["occlusion_min"] = float(occ.min())
        stats["occlusion_max"] = float(occ.max())
    pred = out["prediction"]
    stats["prediction_mean"] = float(pred.mean())
    stats["prediction_std"] = float(pred.std())
    stats["prediction_saturated_frac"] = float(((pred < 0.01) | (pred > 0.99)).float().mean())
    stats["prediction_diff_between_frames"] = float((pred[0] - pred[-1]).abs().mean()) if len(pred) > 1 else 0.0
    return stats


# ---------------------------------------------------------------- checkpoints


def _optimizer_state(params: list[nn.Parameter], lr: float) -> dict[str, Any]:
    """A real Adam state dict (nested dicts, lists, ints, floats, tensors) after one step."""
    opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))
    sum(p.square().sum() for p in params).backward()
    opt.step()
    return opt.state_dict()


def save_checkpoint(
    path: str | Path,
    generator: nn.Module,
    kp_detector: nn.Module,
    serialisation: Literal["legacy", "zip"] = "legacy",
    stripped: bool = False,
) -> Path:
    """Save like a published FOMM checkpoint (legacy = pre-1.6 byte stream, zip = current)."""
    if serialisation not in ("legacy", "zip"):
        raise ValueError(f"serialisation must be 'legacy' or 'zip', not {serialisation!r}")
    ckpt: dict[str, Any] = {"generator": generator.state_dict(), "kp_detector": kp_detector.state_dict()}
    if not stripped:
        with torch.random.fork_rng():  # deterministic file, caller's RNG untouched
            torch.manual_seed(0)
            disc = nn.Sequential(nn.Conv2d(3, 4, 4), nn.InstanceNorm2d(4, affine=True), nn.Conv2d(4, 1, 1))
            ckpt["discriminator"] = disc.state_dict()
            ckpt["optimizer_generator"] = _optimizer_state([nn.Parameter(torch.ones(3, 2))], 2e-4)
            ckpt["optimizer_discriminator"] = _optimizer_state(list(disc.parameters()), 2e-4)
            kp_params = [nn.Parameter(torch.ones(4)), nn.Parameter(torch.ones(1))]
            ckpt["optimizer_kp_detector"] = _optimizer_state(kp_params, 2e-4)
        ckpt["epoch"] = 99
    path = Path(path)
    torch.save(ckpt, path, _use_new_zipfile_serialization=(serialisation == "zip"))
    return path


def make_checkpoint(
    path: str | Path,
    params: Params,
    seed: int = 0,
    serialisation: Literal["legacy", "zip"] = "legacy",
    stripped: bool = False,
) -> tuple[OcclusionAwareGenerator, KPDetector]:
    """Build, randomise and save a model; returns the (eval-mode) reference models."""
    generator, kp_detector = build_models(params)
    randomize_(generator, kp_detector, seed)
    save_checkpoint(path, generator, kp_detector, serialisation=serialisation, stripped=stripped)
    return generator, kp_detector
