"""Checks of the PyTorch reference and checkpoint factory that the parity tests rely on."""
from __future__ import annotations

import pytest
import torch
from scipy.spatial import ConvexHull

from tests.reference import (
    MGIF_PARAMS,
    SMALL_PARAMS,
    VOX_PARAMS,
    animate_reference,
    build_models,
    describe_outputs,
    make_checkpoint,
    normalize_kp,
    random_frames,
    random_video,
    randomize_,
    small_params,
    to_torch_nchw,
)
from tests.reference.fomm import AntiAliasInterpolation2d, make_coordinate_grid

torch.set_num_threads(2)


def _models(params=SMALL_PARAMS, seed: int = 0):
    generator, kp_detector = build_models(params)
    randomize_(generator, kp_detector, seed)
    return generator, kp_detector


def _check_stats(s: dict[str, float]) -> None:
    assert s["kp_std_across_k"] > 0.2
    assert s["kp_abs_max"] <= 1.0
    assert s["heatmap_max_prob"] > 0.05
    assert 0.01 < s["jac_dev_min"] and s["jac_dev_max"] < 0.3
    assert s["jac_min_abs_det"] > 0.5
    assert s["mask_max_mean"] > 1.5 / 11 and s["mask_argmax_classes"] >= 3
    assert 0.1 < s["occlusion_mean"] < 0.95 and s["occlusion_std"] > 0.02
    assert 0.2 < s["prediction_mean"] < 0.8 and s["prediction_std"] > 0.02
    assert s["prediction_saturated_frac"] < 0.05
    assert s["prediction_diff_between_frames"] > 0.005


@pytest.mark.parametrize("size", [(64, 64), (64, 128)])
def test_forward_shapes(size):
    generator, kp_detector = _models()
    h, w = size
    x = to_torch_nchw(random_frames(3, h, w, seed=1))
    with torch.no_grad():
        kp = kp_detector(x)
        kp_src, kp_drv = ({k: v[sl] for k, v in kp.items()} for sl in (slice(0, 1), slice(1, None)))
        out = generator(x[:1], kp_driving=kp_drv, kp_source=kp_src)
    assert kp["value"].shape == (3, 5, 2) and kp["jacobian"].shape == (3, 5, 2, 2)
    assert out["prediction"].shape == (2, 3, h, w)
    assert out["deformation"].shape == (2, h // 4, w // 4, 2)
    assert out["occlusion_map"].shape == (2, 1, h // 4, w // 4)
    assert out["mask"].shape == (2, 6, h // 4, w // 4)
    assert torch.isfinite(out["prediction"]).all()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("size", [(64, 64), (64, 128)])
def test_small_stats(seed, size):
    _check_stats(describe_outputs(*_models(seed=seed), size=size, seed=seed))


@pytest.mark.slow
@pytest.mark.parametrize("params", [VOX_PARAMS, MGIF_PARAMS], ids=["vox", "mgif"])
def test_vox_stats(params):
    generator, kp_detector = _models(params)
    assert round(sum(p.numel() for p in generator.parameters()) / 1e6, 1) == 45.6
    assert round(sum(p.numel() for p in kp_detector.parameters()) / 1e6, 1) == 14.2
    _check_stats(describe_outputs(generator, kp_detector, size=(256, 256)))


def test_randomize_is_deterministic():
    a, b, c = (_models(seed=s)[0].state_dict() for s in (3, 3, 4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["final.weight"], c["final.weight"])


def test_state_dict_keys_match_original_names():
    generator, kp_detector = build_models(VOX_PARAMS)
    gen, kp = generator.state_dict(), kp_detector.state_dict()
    for key in [
        "dense_motion_network.hourglass.encoder.down_blocks.0.conv.weight",
        "dense_motion_network.hourglass.decoder.up_blocks.4.norm.num_batches_tracked",
        "dense_motion_network.mask.weight",
        "dense_motion_network.occlusion.bias",
        "dense_motion_network.down.weight",
        "first.conv.weight",
        "first.norm.running_mean",
        "down_blocks.1.conv.weight",
        "up_blocks.1.norm.bias",
        "bottleneck.r0.norm1.running_var",
        "bottleneck.r5.conv2.weight",
        "final.weight",
    ]:
        assert key in gen, key
    for key in [
        "predictor.encoder.down_blocks.4.conv.weight",
        "predictor.decoder.up_blocks.0.norm.weight",
        "kp.weight",
        "kp.bias",
        "jacobian.weight",
        "jacobian.bias",
        "down.weight",
    ]:
        assert key in kp, key
    assert gen["dense_motion_network.hourglass.encoder.down_blocks.0.conv.weight"].shape == (128, 44, 3, 3)
    assert gen["dense_motion_network.mask.weight"].shape == (11, 108, 7, 7)
    assert kp["kp.weight"].shape == (10, 35, 7, 7) and kp["jacobian.weight"].shape == (40, 35, 7, 7)
    assert gen["bottleneck.r0.conv1.weight"].shape == (256, 256, 3, 3)
    assert kp["down.weight"].shape == (3, 1, 13, 13)
    assert kp["predictor.encoder.down_blocks.0.norm.num_batches_tracked"].dtype == torch.int64
    assert build_models(MGIF_PARAMS)[1].state_dict()["jacobian.weight"].shape == (4, 35, 7, 7)
    assert not any(k.startswith("down") for k in build_models(small_params(kp_scale_factor=1))[1].state_dict())


def test_untrained_jacobian_is_identity():
    _, kp_detector = build_models(SMALL_PARAMS)
    with torch.no_grad():
        jac = kp_detector(to_torch_nchw(random_frames(2, 64, 64)))["jacobian"]
    assert torch.allclose(jac, torch.eye(2).expand_as(jac), atol=1e-5)


def test_anti_alias_kernel():
    down = AntiAliasInterpolation2d(3, 0.25)
    assert down.weight.shape == (3, 1, 13, 13)
    assert torch.allclose(down.weight.sum(dim=(1, 2, 3)), torch.ones(3))
    assert down(torch.ones(1, 3, 64, 48)).shape == (1, 3, 16, 12)
    x = torch.rand(1, 3, 8, 8)
    assert AntiAliasInterpolation2d(3, 1)(x) is x


def test_zero_motion_gives_coordinate_grid_and_channel_order():
    """kp_driving == kp_source: every sparse motion is the identity grid, so is the deformation."""
    generator, kp_detector = _models()
    x = to_torch_nchw(random_frames(1, 64, 64))
    dm = generator.dense_motion_network
    seen = []
    handle = dm.hourglass.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0]))
    with torch.no_grad():
        kp = kp_detector(x)
        out = generator(x, kp_driving=kp, kp_source=kp)
    handle.remove()
    grid = make_coordinate_grid(16, 16)
    assert torch.allclose(out["deformation"][0], grid, atol=1e-5)
    inp = seen[0]  # channels per motion k: [heatmap_k, R_k, G_k, B_k]
    assert torch.all(inp[:, 0::4] == 0)  # zero background map, and source minus itself elsewhere
    small = dm.down(x)
    warped = torch.nn.functional.grid_sample(small, grid[None], align_corners=False)
    assert torch.allclose(inp[:, 1:4], warped, atol=1e-6)
    assert torch.allclose(inp[:, 5:8], warped, atol=1e-5)


def test_batch_one_source_is_broadcast():
    generator, kp_detector = _models()
    x = to_torch_nchw(random_frames(3, 64, 64, seed=2))
    with torch.no_grad():
        kp = kp_detector(x)
        kp_src = {k: v[:1] for k, v in kp.items()}
        a = generator(x[:1], kp_driving=kp, kp_source=kp_src)["prediction"]
        kp_src3 = {k: v.expand(3, *v.shape[1:]).clone() for k, v in kp_src.items()}
        b = generator(x[:1].repeat(3, 1, 1, 1), kp_driving=kp, kp_source=kp_src3)["prediction"]
    assert torch.allclose(a, b, atol=1e-6)


def test_normalize_kp():
    g = torch.Generator().manual_seed(0)
    def jac() -> torch.Tensor:
        return torch.eye(2) + 0.1 * torch.rand(1, 5, 2, 2, generator=g)

    src = {"value": torch.rand(1, 5, 2, generator=g) - 0.5, "jacobian": jac()}
    init = {"value": 2 * (torch.rand(1, 5, 2, generator=g) - 0.5), "jacobian": jac()}
    drv = {"value": init["value"] + 0.1, "jacobian": init["jacobian"] @ (torch.eye(2) * 1.1)}
    assert normalize_kp(src, drv, init) is not drv and torch.equal(normalize_kp(src, drv, init)["value"], drv["value"])
    same = normalize_kp(src, init, init, use_relative_movement=True, use_relative_jacobian=True)
    assert torch.equal(same["value"], src["value"]) and torch.allclose(same["jacobian"], src["jacobian"], atol=1e-6)
    rel = normalize_kp(src, drv, init, True, True, True)  # adapt scale, relative movement, relative jacobian
    # init spans about 4x the area of src, so the shift scales by about 1/2
    scale = (ConvexHull(src["value"][0].numpy()).volume / ConvexHull(init["value"][0].numpy()).volume) ** 0.5
    assert torch.allclose(rel["value"], src["value"] + 0.1 * scale, atol=1e-6)
    assert torch.allclose(rel["jacobian"], 1.1 * src["jacobian"], atol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [
        {"estimate_jacobian": False},
        {"single_jacobian_map": True},
        {"estimate_occlusion_map": False},
        {"num_kp": 7},
        {"num_down_blocks": 1},  # features 32x32 vs a 16x16 deformation: the bilinear resize path
    ],
)
def test_small_variants(overrides):
    params = small_params(**overrides)
    assert SMALL_PARAMS["common_params"]["num_kp"] == 5  # a copy, not the preset
    generator, kp_detector = _models(params)
    x = to_torch_nchw(random_video(4, 64, 64, seed=3))
    pred = animate_reference(generator, kp_detector, x[:1], x, relative=True, adapt_scale=True)
    assert pred.shape == (4, 3, 64, 64) and torch.isfinite(pred).all()
    with torch.no_grad():
        kp = kp_detector(x)
        out = generator(x[:1], kp_driving=kp, kp_source={k: v[:1] for k, v in kp.items()})
    assert ("jacobian" in kp) == params["common_params"]["estimate_jacobian"]
    assert ("occlusion_map" in out) == params["generator_params"]["estimate_occlusion_map"]
    assert kp["value"].shape[1] == params["common_params"]["num_kp"]
    with pytest.raises(KeyError):
        small_params(block_expansion=4)


def test_animate_first_frame_uses_source_pose():
    """Relative mode: driving frame 0 maps kp_driving onto kp_source exactly."""
    generator, kp_detector = _models()
    video = to_torch_nchw(random_video(3, 64, 64, seed=4))
    source = to_torch_nchw(random_frames(1, 64, 64, seed=5))
    pred = animate_reference(generator, kp_detector, source, video)
    with torch.no_grad():
        kp_src = kp_detector(source)
        direct = generator(source, kp_driving=kp_src, kp_source=kp_src)["prediction"]
    assert torch.allclose(pred[0], direct[0], atol=1e-4)
    assert (pred[2] - pred[0]).abs().mean() > 1e-3


@pytest.mark.parametrize("serialisation", ["legacy", "zip"])
@pytest.mark.parametrize("stripped", [False, True])
def test_checkpoint_round_trip(tmp_path, serialisation, stripped):
    path = tmp_path / "model.pth.tar"
    generator, kp_detector = make_checkpoint(path, SMALL_PARAMS, seed=7, serialisation=serialisation, stripped=stripped)
    assert (path.read_bytes()[:2] == b"PK") == (serialisation == "zip")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    extra = {"discriminator", "optimizer_generator", "optimizer_discriminator", "optimizer_kp_detector", "epoch"}
    assert set(ckpt) == {"generator", "kp_detector"} | (set() if stripped else extra)
    if not stripped:
        assert isinstance(ckpt["epoch"], int) and "state" in ckpt["optimizer_generator"]
    for name, model in (("generator", generator), ("kp_detector", kp_detector)):
        ref = model.state_dict()
        assert list(ckpt[name]) == list(ref)
        assert all(torch.equal(ckpt[name][k], ref[k]) for k in ref)
    g2, k2 = build_models(SMALL_PARAMS)
    g2.load_state_dict(ckpt["generator"])
    k2.load_state_dict(ckpt["kp_detector"])
    x = to_torch_nchw(random_frames(2, 64, 64))
    assert torch.equal(animate_reference(g2, k2, x[:1], x), animate_reference(generator, kp_detector, x[:1], x))
