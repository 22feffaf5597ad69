"""PyTorch reference of First Order Motion Model inference.

Written from docs/fomm-reference.md (not from the original source) so that the
TensorFlow port can be checked against an independent implementation. Module
and attribute names follow the original so `state_dict()` keys match published
checkpoints exactly. Everything is NCHW; `grid_sample` and `interpolate` use
PyTorch defaults (bilinear, zeros, align_corners=False), the parity target.
`trained_numerics()` switches every `grid_sample` the original calls to
align_corners=True, the PyTorch 1.0 behaviour the published weights were
trained with (`convert --numerics trained`); `interpolate` stays half-pixel,
as it was in PyTorch 1.0 too.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import ConvexHull
from torch import Tensor, nn

KP = dict[str, Tensor]

KP_VARIANCE = 0.01  # fixed in the original dense motion network
_ALIGN_CORNERS = [False]  # grid_sample's convention, switched by trained_numerics()


@contextlib.contextmanager
def trained_numerics() -> Iterator[None]:
    """Meanwhile, every grid_sample aligns corners, as PyTorch 1.0's did."""
    _ALIGN_CORNERS.append(True)
    try:
        yield
    finally:
        _ALIGN_CORNERS.pop()


def grid_sample(inp: Tensor, grid: Tensor) -> Tensor:
    """F.grid_sample as the original calls it (no align_corners given): today's default or, in
    trained_numerics(), PyTorch 1.0's."""
    return F.grid_sample(inp, grid, align_corners=_ALIGN_CORNERS[-1])


# ---------------------------------------------------------------- helpers


def make_coordinate_grid(h: int, w: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(h, w, 2) grid in [-1, 1], last axis (x, y): the frame keypoints live in."""
    x = 2 * (torch.arange(w, dtype=dtype) / (w - 1)) - 1
    y = 2 * (torch.arange(h, dtype=dtype) / (h - 1)) - 1
    return torch.stack([x.view(1, w).expand(h, w), y.view(h, 1).expand(h, w)], dim=-1)


def kp2gaussian(value: Tensor, size: tuple[int, int], variance: float) -> Tensor:
    """Gaussian bump per keypoint: (B, K, 2) -> (B, K, h, w)."""
    grid = make_coordinate_grid(*size, dtype=value.dtype)
    diff = grid.view(1, 1, *size, 2) - value.view(*value.shape[:2], 1, 1, 2)
    return torch.exp(-0.5 * (diff**2).sum(-1) / variance)


def _resize_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Half-pixel bilinear resize (F.interpolate default), only when sizes differ."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def deform_input(inp: Tensor, deformation: Tensor) -> Tensor:
    """Warp `inp` (B,C,H,W) with a (B,h,w,2) grid, resizing the grid if needed."""
    h, w = inp.shape[2:]
    if deformation.shape[1:3] != (h, w):
        deformation = _resize_bilinear(deformation.permute(0, 3, 1, 2), (h, w)).permute(0, 2, 3, 1)
    return grid_sample(inp, deformation)


# ---------------------------------------------------------------- blocks


class SameBlock2d(nn.Module):
    """conv -> BN -> ReLU at constant resolution."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """conv -> BN -> ReLU -> 2x2 average pool."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), 2)


class UpBlock2d(nn.Module):
    """nearest x2 upsample -> conv -> BN -> ReLU."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class ResBlock2d(nn.Module):
    """Pre-activation residual block: BN-ReLU-conv-BN-ReLU-conv + input."""

    def __init__(self, in_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm2d(in_features, affine=True)
        self.norm2 = nn.BatchNorm2d(in_features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class Encoder(nn.Module):
    """Hourglass encoder; returns [x, d0, ..., d(N-1)] for the skips."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock2d(
                in_features if i == 0 else min(max_features, block_expansion * 2**i),
                min(max_features, block_expansion * 2 ** (i + 1)),
            )
            for i in range(num_blocks)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    """Hourglass decoder: upsample, then concatenate [upsampled, skip]."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            mult = 1 if i == num_blocks - 1 else 2
            blocks.append(
                UpBlock2d(
                    mult * min(max_features, block_expansion * 2 ** (i + 1)),
                    min(max_features, block_expansion * 2**i),
                )
            )
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, feats: list[Tensor]) -> Tensor:
        feats = list(feats)
        out = feats.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), feats.pop()], dim=1)
        return out


class Hourglass(nn.Module):
    """U-Net style encoder/decoder; output has block_expansion + in_features channels."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256):
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur then stride-subsample; identity (and no buffer) at scale 1."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.scale = scale
        if scale == 1:
            return
        sigma = (1 / scale - 1) / 2
        k = 2 * round(sigma * 4) + 1
        t = torch.arange(k, dtype=torch.float32)
        g = torch.exp(-((t - (k - 1) / 2) ** 2) / (2 * sigma**2))
        kernel = g.view(k, 1) * g.view(1, k)
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.view(1, 1, k, k).repeat(channels, 1, 1, 1))
        self.groups = channels
        self.pad = k // 2
        self.step = int(1 / scale)

    def forward(self, x: Tensor) -> Tensor:
        if self.scale == 1:
            return x
        x = F.conv2d(F.pad(x, (self.pad,) * 4), self.weight, groups=self.groups)
        return x[:, :, :: self.step, :: self.step]


# ---------------------------------------------------------------- networks


class KPDetector(nn.Module):
    """Heatmap-softmax keypoints (and optional local jacobians) on a downscaled frame."""

    def __init__(
        self,
        block_expansion: int,
        num_kp: int,
        num_channels: int,
        max_features: int,
        num_blocks: int,
        temperature: float,
        estimate_jacobian: bool = False,
        scale_factor: float = 1,
        single_jacobian_map: bool = False,
        pad: int = 0,
    ):
        super().__init__()
        self.predictor = Hourglass(block_expansion, num_channels, num_blocks, max_features)
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, 7, padding=pad)
        self.num_kp = num_kp
        self.temperature = temperature
        self.num_jacobian_maps = 1 if single_jacobian_map else num_kp
        if estimate_jacobian:
            self.jacobian = nn.Conv2d(self.predictor.out_filters, 4 * self.num_jacobian_maps, 7, padding=pad)
            with torch.no_grad():  # the original's untrained state: identity jacobians
                self.jacobian.weight.zero_()
                self.jacobian.bias.copy_(torch.tensor([1.0, 0, 0, 1] * self.num_jacobian_maps))
        else:
            self.jacobian = None
        self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def forward(self, x: Tensor) -> KP:
        feat = self.predictor(self.down(x))
        logits = self.kp(feat)
        b, k, h, w = logits.shape
        heat = F.softmax(logits.view(b, k, -1) / self.temperature, dim=2).view(b, k, h, w)
        grid = make_coordinate_grid(h, w, dtype=heat.dtype)
        out = {"value": (heat.unsqueeze(-1) * grid).sum(dim=(2, 3))}
        if self.jacobian is not None:
            jmap = self.jacobian(feat).view(b, self.num_jacobian_maps, 4, h, w)
            jac = (heat.unsqueeze(2) * jmap).sum(dim=(3, 4))  # broadcasts a single map over K
            out["jacobian"] = jac.view(b, k, 2, 2)
        return out


class DenseMotionNetwork(nn.Module):
    """Blends K+1 sparse motions into a dense deformation (plus occlusion)."""

    def __init__(
        self,
        block_expansion: int,
        num_blocks: int,
        max_features: int,
        num_kp: int,
        num_channels: int,
        estimate_occlusion_map: bool = False,
        scale_factor: float = 1,
        kp_variance: float = KP_VARIANCE,
    ):
        super().__init__()
        self.hourglass = Hourglass(block_expansion, (num_kp + 1) * (num_channels + 1), num_blocks, max_features)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, 7, padding=3)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters, 1, 7, padding=3) if estimate_occlusion_map else None
        self.num_kp = num_kp
        self.kp_variance = kp_variance
        self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def sparse_motions(self, size: tuple[int, int], kp_driving: KP, kp_source: KP) -> Tensor:
        """(B, K+1, h, w, 2): identity, then T_k(z) = J_k (z - kd_k) + ks_k."""
        b = kp_driving["value"].shape[0]
        grid = make_coordinate_grid(*size, dtype=kp_driving["value"].dtype).view(1, 1, *size, 2)
        z = grid - kp_driving["value"].view(b, self.num_kp, 1, 1, 2)
        if "jacobian" in kp_driving:
            jac = kp_source["jacobian"] @ torch.inverse(kp_driving["jacobian"])  # (B, K, 2, 2)
            z = torch.einsum("bkij,bkhwj->bkhwi", jac, z)
        to_source = z + kp_source["value"].view(b, self.num_kp, 1, 1, 2)
        return torch.cat([grid.expand(b, 1, *size, 2), to_source], dim=1)

    def forward(self, source_image: Tensor, kp_driving: KP, kp_source: KP) -> dict[str, Tensor]:
        src = self.down(source_image)
        b, c, h, w = src.shape
        k1 = self.num_kp + 1
        heat = kp2gaussian(kp_driving["value"], (h, w), self.kp_variance) - kp2gaussian(
            kp_source["value"], (h, w), self.kp_variance
        )
        heat = torch.cat([heat.new_zeros(b, 1, h, w), heat], dim=1)  # background map first
        motions = self.sparse_motions((h, w), kp_driving, kp_source)
        src_rep = src.unsqueeze(1).expand(b, k1, c, h, w).reshape(b * k1, c, h, w)
        deformed = grid_sample(src_rep, motions.reshape(b * k1, h, w, 2)).view(b, k1, c, h, w)
        inp = torch.cat([heat.unsqueeze(2), deformed], dim=2).view(b, k1 * (c + 1), h, w)
        feat = self.hourglass(inp)
        mask = F.softmax(self.mask(feat), dim=1)
        deformation = (motions * mask.unsqueeze(-1)).sum(dim=1)
        out = {"sparse_deformed": deformed, "mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(feat))
        return out


class OcclusionAwareGenerator(nn.Module):
    """Encode source, warp features by dense motion, mask occlusion, decode."""

    def __init__(
        self,
        num_channels: int,
        num_kp: int,
        block_expansion: int,
        max_features: int,
        num_down_blocks: int,
        num_bottleneck_blocks: int,
        estimate_occlusion_map: bool = False,
        dense_motion_params: Mapping[str, Any] | None = None,
        estimate_jacobian: bool = False,
    ):
        super().__init__()
        self.dense_motion_network = (
            DenseMotionNetwork(
                num_kp=num_kp,
                num_channels=num_channels,
                estimate_occlusion_map=estimate_occlusion_map,
                **dense_motion_params,
            )
            if dense_motion_params is not None
            else None
        )
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(min(max_features, block_expansion * 2**i), min(max_features, block_expansion * 2 ** (i + 1)))
            for i in range(num_down_blocks)
        )
        self.up_blocks = nn.ModuleList(
            UpBlock2d(
                min(max_features, block_expansion * 2 ** (num_down_blocks - i)),
                min(max_features, block_expansion * 2 ** (num_down_blocks - i - 1)),
            )
            for i in range(num_down_blocks)
        )
        self.bottleneck = nn.Sequential()
        width = min(max_features, block_expansion * 2**num_down_blocks)
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(width))
        self.final = nn.Conv2d(block_expansion, num_channels, 7, padding=3)
        self.estimate_occlusion_map = estimate_occlusion_map
        self.num_channels = num_channels

    def encode_source(self, source_image: Tensor) -> Tensor:
        """The source-only part (cacheable in a live pipeline)."""
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        return out

    def forward(self, source_image: Tensor, kp_driving: KP, kp_source: KP) -> dict[str, Tensor]:
        """A batch-1 source (and kp_source) is broadcast to kp_driving's batch."""
        b = kp_driving["value"].shape[0]
        if source_image.shape[0] != b:
            source_image = source_image.expand(b, *source_image.shape[1:])
        kp_source = {k: (v.expand(b, *v.shape[1:]) if v.shape[0] != b else v) for k, v in kp_source.items()}
        out = self.encode_source(source_image)
        result: dict[str, Tensor] = {}
        if self.dense_motion_network is not None:
            motion = self.dense_motion_network(source_image, kp_driving=kp_driving, kp_source=kp_source)
            result.update(motion)
            out = deform_input(out, motion["deformation"])
            if "occlusion_map" in motion:
                out = out * _resize_bilinear(motion["occlusion_map"], tuple(out.shape[2:]))
            result["deformed"] = deform_input(source_image, motion["deformation"])
        out = self.bottleneck(out)
        for block in self.up_blocks:
            out = block(out)
        result["prediction"] = torch.sigmoid(self.final(out))
        return result


# ---------------------------------------------------------------- assembly


def build_models(model_params: Mapping[str, Any]) -> tuple[OcclusionAwareGenerator, KPDetector]:
    """Build (generator, kp_detector) in eval mode from the YAML `model_params` layout."""
    common = dict(model_params["common_params"])
    kp_params = dict(model_params["kp_detector_params"])
    gen_params = dict(model_params["generator_params"])
    gen_params["dense_motion_params"] = dict(gen_params.get("dense_motion_params") or {}) or None
    generator = OcclusionAwareGenerator(**gen_params, **common)
    kp_detector = KPDetector(**kp_params, **common)
    return generator.eval(), kp_detector.eval()


def _area(points: Tensor) -> float:
    return float(ConvexHull(points.detach().cpu().numpy().astype(np.float64)).volume)


def normalize_kp(
    kp_source: KP,
    kp_driving: KP,
    kp_driving_initial: KP,
    adapt_movement_scale: bool = False,
    use_relative_movement: bool = False,
    use_relative_jacobian: bool = False,
) -> KP:
    """Transfer driving motion relative to the initial driving pose onto the source pose."""
    scale = 1.0
    if adapt_movement_scale:
        scale = math.sqrt(_area(kp_source["value"][0])) / math.sqrt(_area(kp_driving_initial["value"][0]))
    kp_new = dict(kp_driving)
    if use_relative_movement:
        diff = (kp_driving["value"] - kp_driving_initial["value"]) * scale
        kp_new["value"] = diff + kp_source["value"]
        if use_relative_jacobian and "jacobian" in kp_driving:  # the original would KeyError here
            jac_diff = kp_driving["jacobian"] @ torch.inverse(kp_driving_initial["jacobian"])
            kp_new["jacobian"] = jac_diff @ kp_source["jacobian"]
    return kp_new


@torch.no_grad()
def animate_reference(
    generator: OcclusionAwareGenerator,
    kp_detector: KPDetector,
    source: Tensor,
    driving: Tensor,
    relative: bool = True,
    adapt_scale: bool = True,
) -> Tensor:
    """The original video demo: one frame at a time; returns (N, 3, H, W)."""
    kp_source = kp_detector(source)
    kp_initial = kp_detector(driving[:1])
    preds = []
    for i in range(driving.shape[0]):
        kp_driving = kp_detector(driving[i : i + 1])
        kp_norm = normalize_kp(
            kp_source,
            kp_driving,
            kp_initial,
            adapt_movement_scale=adapt_scale,
            use_relative_movement=relative,
            use_relative_jacobian=relative,
        )
        preds.append(generator(source, kp_driving=kp_norm, kp_source=kp_source)["prediction"])
    return torch.cat(preds, dim=0)
