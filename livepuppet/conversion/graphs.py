"""The four networks as traced TensorFlow functions, and the sample inputs every export is verified on.

A :class:`Graphs` holds one FOMM per graph a target asks for (the plain graph,
or a back end's rewrite of it: :mod:`livepuppet.fomm.modules.rewrites`). Each
graph's networks are traced once (:meth:`Graphs.traced`): saved as SavedModels
in the convert's scratch folder with their outputs on sample inputs, after which
the graph's weights are let go. Every target converts from those files and
checks against those outputs, so a convert never holds a graph's weights while
TensorFlow's converter makes its own copies of them (vox-256 peak: 3.6 GB held
both; see benchmarks/first_run_memory.py).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import tensorflow as tf

from livepuppet.fomm.checkpoint import Checkpoint
from livepuppet.fomm.config import ModelConfig
from livepuppet.fomm.modules import FOMM, GRAPHS
from livepuppet.fomm.numerics import DEFAULT as DEFAULT_NUMERICS
from livepuppet.modelfolder.schema import NETWORKS, Signature, Tensor
from livepuppet.quiet import native_stderr_silenced


@dataclass(frozen=True)
class Network:
    """One exported graph: its input signature and the function computing its named outputs."""

    name: str
    inputs: list[tf.TensorSpec]
    fn: Callable[..., dict[str, tf.Tensor]]
    module: tf.Module  # the part of the model whose weights this graph needs

    def concrete(self) -> tuple[tf.Module, object]:
        """A module holding the weights and the traced ``serve`` function, and that function."""
        holder = tf.Module()
        holder.model = self.module
        holder.serve = tf.function(self.fn, input_signature=self.inputs)
        return holder, holder.serve.get_concrete_function()


def networks(fomm: FOMM, batch: int | None) -> list[Network]:
    cfg = fomm.cfg
    h, w = cfg.frame_shape
    k = cfg.num_kp
    feat_shape, small_shape = (s.shape for s in fomm.encode_source(tf.zeros([1, h, w, 3])))
    spec = tf.TensorSpec

    def kp_specs(prefix: str, b: int | None) -> list[tf.TensorSpec]:
        return [spec([b, k, 2], tf.float32, f"{prefix}_value"), spec([b, k, 2, 2], tf.float32, f"{prefix}_jacobian")]

    def detect(image):
        value, jac = fomm.detect_keypoints(image)
        return {"value": value, "jacobian": jac}

    def encode(source):
        features, small = fomm.encode_source(source)
        return {"features": features, "source_small": small}

    def process(source_value, source_jacobian, initial_value, initial_jacobian, driving_value, driving_jacobian,
                relative, adapt_scale):
        value, jac = fomm.process_keypoints((source_value, source_jacobian), (driving_value, driving_jacobian),
                                            (initial_value, initial_jacobian), relative, adapt_scale)
        return {"value": value, "jacobian": jac}

    def generate(driving_value, driving_jacobian, source_value, source_jacobian, features, source_small):
        pred = fomm.generate((driving_value, driving_jacobian), (source_value, source_jacobian), features, source_small)
        return {"prediction": pred}

    switch = [1] if fomm.rewrites.webgpu else []  # WebGPU takes no scalar tensors
    return [
        Network("kp_detector", [spec([batch, h, w, 3], tf.float32, "image")], detect, fomm.kp_detector),
        Network("source_encoder", [spec([1, h, w, 3], tf.float32, "source")], encode, fomm.source_encoder),
        Network("kp_processing", kp_specs("source", 1) + kp_specs("initial", 1) + kp_specs("driving", batch)
                + [spec(switch, tf.float32, "relative"), spec(switch, tf.float32, "adapt_scale")], process,
                tf.Module()),
        Network("generator", kp_specs("driving", batch) + kp_specs("source", 1)
                + [spec(feat_shape, tf.float32, "features"), spec(small_shape, tf.float32, "source_small")],
                generate, fomm.generator),
    ]


@dataclass(frozen=True)
class Traced:
    """A network saved as a SavedModel, with sample inputs and the TensorFlow graph's outputs on them."""

    name: str
    graph: str
    saved: Path
    signature: Signature
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]


class Graphs:
    """The checkpoint's FOMM in each graph asked for, built on first use."""

    def __init__(self, checkpoint: Checkpoint, cfg: ModelConfig, batch: int | None, numerics: str = DEFAULT_NUMERICS):
        self.checkpoint, self.cfg, self.batch, self.numerics = checkpoint, cfg, batch, numerics
        self._fomms: dict[str, FOMM] = {}

    def fomm(self, graph: str) -> FOMM:
        if graph not in self._fomms:
            self._fomms[graph] = FOMM(self.cfg, self.checkpoint.generator, self.checkpoint.kp_detector,
                                      rewrites=GRAPHS[graph], numerics=self.numerics)
        return self._fomms[graph]

    def networks(self, graph: str) -> list[Network]:
        return networks(self.fomm(graph), self.batch)

    def drop(self, graph: str) -> None:
        """Let a graph's weights go once no target needs it (a vox-256 FOMM holds about 300 MB)."""
        self._fomms.pop(graph, None)
        give_back_memory()

    def traced(self, graph: str, scratch: Path, names: Iterable[str] = NETWORKS) -> dict[str, Traced]:
        """The networks ``names`` of ``graph``, each traced once into ``scratch``; then the graph is let go."""
        names = list(names)
        done = getattr(self, "_traced", {})
        self._traced = done
        missing = [n for n in names if (graph, n) not in done]
        if missing:
            fomm = self.fomm(graph)
            for network in self.networks(graph):
                if network.name in missing:
                    done[(graph, network.name)] = _trace(fomm, network, graph, scratch, self.batch or 2)
            self.drop(graph)
        return {n: done[(graph, n)] for n in names}


def give_back_memory() -> None:
    """Collect garbage, then hand freed heap pages back to the system (glibc's ``malloc_trim``; elsewhere a
    no-op): TensorFlow frees tensors into the C heap, which otherwise keeps them counted in the process."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _trace(fomm: FOMM, network: Network, graph: str, scratch: Path, batch: int) -> Traced:
    holder, concrete = network.concrete()
    inputs = sample_inputs(fomm, network, batch)
    saved = scratch / graph / network.name
    with native_stderr_silenced():
        tf.saved_model.save(holder, str(saved), signatures={"serving_default": concrete})
    return Traced(network.name, graph, saved, signature(network, concrete), inputs, run_concrete(concrete, inputs))


def signature(network: Network, concrete) -> Signature:
    """The manifest's description of a network: its inputs in feeding order and its outputs."""
    def tensors(specs) -> tuple[Tensor, ...]:
        return tuple(Tensor(s.name, tuple(-1 if d is None else int(d) for d in s.shape), s.dtype.name) for s in specs)

    outputs = [tf.TensorSpec(v.shape, v.dtype, k) for k, v in concrete.structured_outputs.items()]
    return Signature(tensors(network.inputs), tensors(outputs))


def sample_inputs(fomm: FOMM, network: Network, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible random inputs: images in [0, 1], keypoints in [-0.7, 0.7], jacobians near the identity."""
    rng = np.random.default_rng(seed)
    h, w = fomm.cfg.frame_shape
    out: dict[str, np.ndarray] = {}
    for s in network.inputs:
        shape = [batch if d is None else d for d in s.shape]
        if s.name.endswith("value"):
            out[s.name] = rng.uniform(-0.7, 0.7, shape).astype(np.float32)
        elif s.name.endswith("jacobian"):
            out[s.name] = (np.eye(2) + rng.normal(0, 0.1, shape)).astype(np.float32)
        elif s.name in ("relative", "adapt_scale"):
            out[s.name] = np.ones(shape, np.float32)
        elif s.name in ("image", "source"):
            out[s.name] = rng.uniform(0, 1, shape).astype(np.float32)
    if network.name == "generator":
        features, small = fomm.encode_source(tf.constant(rng.uniform(0, 1, (1, h, w, 3)).astype(np.float32)))
        out["features"], out["source_small"] = features.numpy(), small.numpy()
    return out


def run_concrete(concrete, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in concrete(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def max_error(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a)
