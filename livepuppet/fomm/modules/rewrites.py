"""Rewrites of the plain FOMM graph that one back end's kernels want, chosen at export for that back end.

The plain graph is the original's order of operations, convolution by
convolution. XNNPACK (LiteRT on a CPU) runs some shapes far better in another
form that computes the same thing up to float32 rounding; oneDNN (OpenVINO),
whose own Winograd and deconvolution kernels already do this work, is slowed by
the same rewrites (vox-256 bf16 generator: 78 ms rewritten, 40 ms plain, on an
AMX Xeon), so each back end gets the graph it runs best. The browser's WebGPU
back end takes only some tensor shapes and op versions: its graph computes the
same arithmetic laid out for it (:mod:`.webgpu`), with plain convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rewrites:
    """Which rewrites a graph gets. Each is exact up to float32 rounding; see :class:`~.blocks.Conv`."""

    winograd: bool = False  # bottleneck 3x3 convolutions as Winograd F(2x2, 3x3) matrix products
    fused_upsample: bool = False  # nearest x2 + conv as four 2x2 phase convolutions + DEPTH_TO_SPACE
    split_thin: bool = False  # a kxk convolution into few channels as 1xk then kx1
    webgpu: bool = False  # tensors of rank <= 4, no scalars, 1-D gathers: every op on LiteRT.js's WebGPU
    grid_sample_op: bool = False  # (with webgpu) each warp one op, which the ONNX export makes GridSample

    @property
    def name(self) -> str:
        return next((k for k, v in GRAPHS.items() if v == self), "custom")


PLAIN = Rewrites()
XNNPACK = Rewrites(winograd=True, fused_upsample=True, split_thin=True)
# The int8 generator's (``convert --fast``): direct convolutions, which int8 kernels run at full speed and
# where Winograd's matrix products carried most of int8's error, but the thin final convolution split,
# whose 3 outputs leave int8 matrix tiles nearly empty (vox-256, AMX-INT8: 2.0 -> 1.1 ms). Fused
# upsampling, measured at int8 too, made the generator slower (38.6 against 29.6 ms).
INT8 = Rewrites(split_thin=True)
BROWSER = Rewrites(webgpu=True)
ONNX = Rewrites(webgpu=True, grid_sample_op=True)  # the browser graph's portable ops, and ONNX's own GridSample

# graph name -> its rewrites; the manifest records each model's graph under this name
GRAPHS: dict[str, Rewrites] = {"plain": PLAIN, "xnnpack": XNNPACK, "int8": INT8, "browser": BROWSER, "onnx": ONNX}
