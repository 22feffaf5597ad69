"""How the model samples: the grid_sample convention a converted model is built with (``convert --numerics``).

FOMM warps with ``grid_sample`` twice a frame (the downsampled source under
each keypoint's motion, and the encoded features under the dense motion), and
never says how grid coordinates meet pixels. The published weights were
trained on PyTorch 1.0, whose ``grid_sample`` put -1 and 1 on the centres of
the corner pixels (``align_corners=True``); since PyTorch 1.3 the default puts
them on the corners' outer edges (``False``), so the original code run today
samples a slightly zoomed and shifted grid (1.6% and half a pixel at 64x64),
even for the identity warp.

* ``original`` (default): ``align_corners=False``: frame-exact with the
  original code on a current PyTorch, the project's parity target
  (shared/docs/fomm-reference.md: the training-time switch "is welcome but not
  the default").
* ``trained``: ``align_corners=True`` wherever the original samples: what the
  published weights were trained with (0.08 levels mean, 2.4 max from
  ``original`` over a moving face with random weights).

Bilinear resizing (``F.interpolate``) is half-pixel in both: PyTorch 1.0 had
that default already. Imported without TensorFlow (the command line reads it).
"""

from __future__ import annotations

#: name -> whether grid_sample aligns corners
NUMERICS: dict[str, bool] = {"trained": True, "original": False}
DEFAULT = "original"
LEGACY = "original"  # what a model folder converted before the choice existed was built with


def align_corners(numerics: str) -> bool:
    """The grid_sample convention of ``numerics``; a ValueError names the choices for an unknown one."""
    try:
        return NUMERICS[numerics]
    except KeyError:
        raise ValueError(f"unknown numerics {numerics!r}; choose one of {', '.join(NUMERICS)}") from None
