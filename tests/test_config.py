"""ModelConfig: presets, the original YAML layout, inference from checkpoint shapes, validation, cost."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from livepuppet.fomm import config
from livepuppet.errors import ConfigError
from tests.reference import MGIF_PARAMS, SMALL_PARAMS, VOX_PARAMS, build_models, small_params

PRESET_NAMES = ["vox", "vox-adv", "taichi", "taichi-adv", "mgif", "fashion", "nemo", "bair"]


def _state(params) -> tuple[dict, dict]:
    """(generator, kp_detector) state dicts as numpy, default-initialised weights."""
    generator, kp_detector = build_models(params)
    return tuple({n: t.numpy() for n, t in m.state_dict().items()} for m in (generator, kp_detector))


def _yaml_doc(model_params) -> dict:
    """A config file in the original layout, unrelated sections included."""
    return {
        "dataset_params": {"root_dir": "data/vox-png", "frame_shape": [256, 256, 3], "id_sampling": True,
                           "augmentation_params": {"flip_param": {"horizontal_flip": True}}},
        "model_params": copy.deepcopy(model_params),
        "train_params": {"num_epochs": 100, "lr_generator": 2.0e-4, "batch_size": 40,
                         "loss_weights": {"perceptual": [10, 10, 10, 10, 10], "equivariance_value": 10}},
        "reconstruction_params": {"num_videos": 1000},
        "animate_params": {"num_pairs": 50, "normalization_params": {"adapt_movement_scale": False}},
    }


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets(name):
    cfg = config.preset(name)
    assert cfg.num_kp == 10 and cfg.estimate_jacobian and cfg.kp_detector.temperature == 0.1
    assert cfg.kp_detector.single_jacobian_map == (name == "mgif")
    assert config.preset(name.upper() + "-cpk") == cfg  # file-name style spellings
    cfg.validate_frame_shape()


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="taichi-adv"):
        config.preset("voxx")


def test_from_dict_on_the_original_yaml_layout(tmp_path):
    doc = _yaml_doc(VOX_PARAMS)
    assert config.from_dict(doc) == config.preset("vox")
    path = tmp_path / "vox-256.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert config.load_yaml(path) == config.preset("vox")
    assert config.resolve(str(path)) == config.preset("vox")
    assert config.from_dict(_yaml_doc(MGIF_PARAMS)) == config.preset("mgif")
    for cfg in (config.preset("vox"), config.preset("mgif"), config.preset("bair")):
        assert config.from_dict(cfg.to_dict()) == cfg


def test_from_dict_rejects_other_documents():
    with pytest.raises(ConfigError, match="model_params"):
        config.from_dict({"train_params": {}})
    doc = _yaml_doc(VOX_PARAMS)
    doc["model_params"]["common_params"]["num_kp"] = "ten"
    with pytest.raises(ConfigError, match="malformed"):
        config.from_dict(doc)


@pytest.fixture(scope="module")
def vox_state():
    return _state(VOX_PARAMS)


def test_infer_vox_and_mgif(vox_state):
    assert config.infer(*vox_state) == config.preset("vox")
    assert config.resolve(None, vox_state) == config.preset("vox")
    assert config.infer(*_state(MGIF_PARAMS)) == config.preset("mgif")


def test_parameter_counts_match_the_reference_doc():
    gen, kp = config.expected_shapes(config.preset("vox"))
    count = lambda shapes: sum(int(np.prod(s)) for n, s in shapes.items() if not n.endswith("down.weight"))
    assert round(count(gen) / 1e6, 1) == 45.6
    assert round(count(kp) / 1e6, 1) == 14.2


@pytest.mark.parametrize("overrides", [
    {}, {"estimate_jacobian": False}, {"single_jacobian_map": True}, {"estimate_occlusion_map": False},
    {"num_kp": 7}, {"kp_scale_factor": 0.5, "dm_scale_factor": 1}, {"gen_max_features": 16},
])
def test_infer_gives_an_equivalent_architecture(overrides):
    """max_features is only visible where it caps a block, so compare the tensors each config needs."""
    params = small_params(**overrides)
    state = _state(params)
    inferred = config.infer(*state)
    declared = config.from_dict({"model_params": params})
    assert config.expected_shapes(inferred) == config.expected_shapes(declared)
    assert inferred.estimate_jacobian == declared.estimate_jacobian
    assert inferred.kp_detector.single_jacobian_map == declared.kp_detector.single_jacobian_map


def test_validate_lists_every_mismatch():
    generator, kp_detector = _state(SMALL_PARAMS)
    cfg = config.infer(generator, kp_detector)
    config.validate(cfg, generator, kp_detector)  # num_batches_tracked is ignored
    generator["final.weight"] = np.zeros((3, 8, 5, 5), np.float32)
    del kp_detector["kp.bias"]
    kp_detector["extra.weight"] = np.zeros(1, np.float32)
    with pytest.raises(ConfigError) as info:
        config.validate(cfg, generator, kp_detector)
    message = str(info.value)
    print(message)
    assert "generator.final.weight is (3, 8, 5, 5), expected (3, 8, 7, 7)" in message
    assert "kp_detector.kp.bias missing" in message
    assert "kp_detector.extra.weight unexpected" in message


def test_infer_rejects_what_is_not_fomm():
    with pytest.raises(ConfigError, match="kp.weight"):
        config.infer({}, {"foo": np.zeros(1)})
    with pytest.raises(ConfigError):
        config.resolve(None)


@pytest.mark.parametrize("shape", [(250, 256), (256, 200), (256, 64), (0, 0), (-128, 256)])
def test_validate_frame_shape_rejects(shape):
    with pytest.raises(ConfigError) as info:
        config.preset("vox").with_frame_shape(*shape).validate_frame_shape()
    print(info.value)


@pytest.mark.parametrize("shape", [(256, 256), (128, 384), (512, 256)])
def test_validate_frame_shape_accepts(shape):
    config.preset("vox").with_frame_shape(*shape).validate_frame_shape()


def test_conv_gflop_matches_the_reference_doc():
    gflop = config.conv_gflop(config.preset("vox"))
    doc = {"kp_detector": 2.55, "source_encoder": 20.6, "dense_motion": 8.2, "generator": 58.0 + 20.6,
           "per_frame": 89.0}
    print({k: round(v, 3) for k, v in gflop.items()})
    for part, want in doc.items():
        assert gflop[part] == pytest.approx(want, rel=0.02), part
    # Halving both sides quarters every convolution.
    small = config.conv_gflop(config.preset("vox").with_frame_shape(128, 128))
    assert small["per_frame"] == pytest.approx(gflop["per_frame"] / 4, rel=0.05)
