"""PyTorch reference of FOMM inference plus a deterministic checkpoint factory.

Written from docs/fomm-reference.md; module names mirror the original so that
`state_dict()` keys equal those of published checkpoints.
"""
from tests.reference.fomm import (
    DenseMotionNetwork,
    KPDetector,
    OcclusionAwareGenerator,
    animate_reference,
    build_models,
    normalize_kp,
    trained_numerics,
)
from tests.reference.factory import (
    MGIF_PARAMS,
    SMALL_PARAMS,
    VOX_PARAMS,
    describe_outputs,
    make_checkpoint,
    random_frames,
    random_video,
    randomize_,
    save_checkpoint,
    small_params,
    to_torch_nchw,
)

__all__ = [
    "DenseMotionNetwork", "KPDetector", "OcclusionAwareGenerator", "animate_reference",
    "build_models", "normalize_kp", "trained_numerics", "MGIF_PARAMS", "SMALL_PARAMS", "VOX_PARAMS",
    "describe_outputs", "make_checkpoint", "random_frames", "random_video", "randomize_",
    "save_checkpoint", "small_params", "to_torch_nchw",
]
