"""SFace (OpenCV Zoo, 2021dec int8 block-quantized ONNX) as a plain torch module: the embedded default teacher.

The ONNX file stores int8 weights with per-block scales (``DequantizeLinear`` with ``block_size``).  They are
dequantized once in numpy, ``(q - zero_point) * scale`` with each scale repeated over its block along the
quantization axis, and copied into ordinary Conv/BatchNorm/PReLU/Linear layers, so the port runs on CPU
and CUDA (and under bf16 autocast) like any torch network.  Loading walks the graph's compute nodes in
order and checks every layer's kernel, stride, padding, groups and epsilon against the torch module.

Network: a MobileFaceNet-style stack (one 3x3 conv, 13 depthwise-separable blocks, PReLU) ending in the
``bn1`` map 1024 x 7 x 7; ``pre_fc1`` flattens that whole map (50,176 values) into the 128-d embedding,
followed by BatchNorm ``fc1``.  The graph itself normalises 0-255 input as ``(x - 127.5) / 128``; here that
lives in :attr:`SFaceTeacher.preprocess` and the module takes the normalised tensor.

Features (``teacher.feature``):

* ``embedding`` (default, 128-d): the output SFace was trained to make discriminative (LFW 99.3).
* ``bn1`` (1024-d): global average of the ``bn1`` map.
* ``bn1_map`` (1024 x 7 x 7): the spatial ``bn1`` map, for spatial or multi-layer distillation.

Why ``embedding`` is the default: SFace's head does **not** pool ``bn1``; it flattens the 7 x 7 map and
keeps the spatial layout.  The pooled ``bn1`` is therefore a summary the network never computes, and it
throws away most of what the head uses: on ORL, nearest class mean scores 94.6% at one shot with the
embedding and 82.2% with pooled ``bn1``.  A student that matches the embedding inherits a
recognition-ready space directly, and the cached targets are 8x smaller.  Distillation that wants the
richer signal should use ``bn1_map`` (what the head really reads) rather than the pooled vector.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facekd.assets import EMBEDDED_ASSETS, resolve, sha256_file
from facekd.data.preprocess import Preprocess
from facekd.models.base import ModelWeightsError, Teacher, load_state_strict
from facekd.models.registry import TEACHERS
from facekd.models.taps import register_tap_sets
from facekd.errors import ConfigError

__all__ = ["SFace", "SFaceTeacher", "dequantize_blocks", "read_sface_onnx", "sface_onnxruntime_session"]

# (name, in, out, stride of the depthwise conv) of the 13 depthwise-separable blocks.
_BLOCKS = [(f"conv_{i}", cin, cout, s) for i, cin, cout, s in [
    (2, 32, 64, 1), (3, 64, 128, 2), (4, 128, 128, 1), (5, 128, 256, 2), (6, 256, 256, 1), (7, 256, 512, 2),
    (8, 512, 512, 1), (9, 512, 512, 1), (10, 512, 512, 1), (11, 512, 512, 1), (12, 512, 512, 1),
    (13, 512, 1024, 2), (14, 1024, 1024, 1)]]
_FEATURES = {"embedding": (128,), "bn1": (1024,), "bn1_map": (1024, 7, 7)}
_INPUT_MEAN, _INPUT_SCALE = 127.5, 1.0 / 128.0
# Tap sets (facekd.models.taps), bottom to top.
TAP_SETS = register_tap_sets("sface", {
    "stages": ["net.body.conv_4", "net.body.conv_6", "net.body.conv_12", "net.bn1"],
    "top": ["net.bn1"],
    "embedding": ["net.fc1"],
})


class ConvBNPReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.act = nn.PReLU(cout)


class SFace(nn.Module):
    """The SFace network on normalised input ``(x - 127.5) / 128`` of size 112; returns all features."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[tuple[str, nn.Module]] = [("conv_1", ConvBNPReLU(3, 32, 3))]
        for name, cin, cout, s in _BLOCKS:
            layers.append((f"{name}_dw", ConvBNPReLU(cin, cin, 3, s, groups=cin)))
            layers.append((name, ConvBNPReLU(cin, cout, 1)))
        self.body = nn.Sequential(OrderedDict(layers))
        self.bn1 = nn.BatchNorm2d(1024, eps=2e-5)
        self.pre_fc1 = nn.Linear(1024 * 7 * 7, 128)
        self.fc1 = nn.BatchNorm1d(128, eps=2e-5)

    def bn1_map(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (112, 112):
            raise ValueError(f"SFace takes 112 x 112 input, got {tuple(x.shape[-2:])}")
        return self.bn1(self.body(x))

    def embed_map(self, m: torch.Tensor) -> torch.Tensor:
        return self.fc1(self.pre_fc1(m.flatten(1)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        m = self.bn1_map(x)
        return {"bn1_map": m, "bn1": m.mean(dim=(2, 3)), "embedding": self.embed_map(m)}


def dequantize_blocks(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int,
                      block_size: int) -> np.ndarray:
    """ONNX ``DequantizeLinear`` with blocked quantization: ``(q - zp) * scale``, scales repeated per block."""
    axis = axis % q.ndim
    n = q.shape[axis]

    def expand(a: np.ndarray) -> np.ndarray:
        if a.ndim == 0 or a.size == 1:
            return a.reshape(())
        if block_size:
            a = np.repeat(a, block_size, axis=axis)
            return np.take(a, np.arange(n), axis=axis)
        shape = [1] * q.ndim
        shape[axis] = n
        return a.reshape(shape)  # per-axis quantization

    zp = np.zeros((), dtype=np.int32) if zero_point is None else expand(zero_point).astype(np.int32)
    return ((q.astype(np.int32) - zp).astype(np.float32) * expand(scale).astype(np.float32)).astype(np.float32)


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def read_sface_onnx(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Dequantize the SFace ONNX file and return a state dict for :class:`SFace` (checked layer by layer)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    t: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for node in g.node:  # the weight subgraph: dequantize, reshape, constants
        a = _attrs(node)
        if node.op_type == "DequantizeLinear":
            zp = t[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            t[node.output[0]] = dequantize_blocks(t[node.input[0]], t[node.input[1]], zp, a.get("axis", 1),
                                                  a.get("block_size", 0))
        elif node.op_type == "Reshape" and node.input[0] in t:
            t[node.output[0]] = t[node.input[0]].reshape(t[node.input[1]])
    net = SFace()
    convs = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    bns = [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d))]
    prelus = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.PReLU)]
    nodes = {op: [n for n in g.node if n.op_type == op] for op in ("Conv", "BatchNormalization", "PRelu", "Gemm", "Sub", "Mul")}
    counts = {"Conv": len(convs), "BatchNormalization": len(bns), "PRelu": len(prelus), "Gemm": 1, "Sub": 1, "Mul": 1}
    for op, n in counts.items():
        if len(nodes[op]) != n:
            raise ModelWeightsError(f"{path}: expected {n} {op} nodes for SFace, found {len(nodes[op])}")
    sub, mul = nodes["Sub"][0], nodes["Mul"][0]
    if not (np.allclose(t[sub.input[1]], _INPUT_MEAN) and np.allclose(t[mul.input[1]], _INPUT_SCALE)):
        raise ModelWeightsError(f"{path}: input normalisation is not (x - 127.5) / 128; this is not the SFace file")
    state: dict[str, np.ndarray] = {}
    for (name, conv), node in zip(convs, nodes["Conv"]):
        a = _attrs(node)
        w = t[node.input[1]]
        want = (list(conv.kernel_size), list(conv.stride), [conv.padding[0]] * 2 + [conv.padding[1]] * 2, conv.groups)
        got = (list(a.get("kernel_shape", w.shape[2:])), list(a.get("strides", [1, 1])), list(a.get("pads", [0] * 4)),
               a.get("group", 1))
        if want[0] != got[0] or want[1] != got[1] or sorted(want[2]) != sorted(got[2]) or want[3] != got[3]:
            raise ModelWeightsError(f"{path}: ONNX conv {node.name or node.output[0]} {got} != port layer {name} {want}")
        state[f"{name}.weight"] = w
    for (name, bn), node in zip(bns, nodes["BatchNormalization"]):
        if not np.isclose(_attrs(node).get("epsilon", 1e-5), bn.eps, rtol=1e-3):
            raise ModelWeightsError(f"{path}: BatchNorm {node.output[0]} epsilon differs from port layer {name}")
        for key, inp in zip(("weight", "bias", "running_mean", "running_var"), node.input[1:5]):
            state[f"{name}.{key}"] = t[inp]
    for (name, _), node in zip(prelus, nodes["PRelu"]):
        state[f"{name}.weight"] = t[node.input[1]].reshape(-1)
    gemm = nodes["Gemm"][0]
    a = _attrs(gemm)
    w = t[gemm.input[1]]
    state["pre_fc1.weight"] = w if a.get("transB", 0) else w.T
    state["pre_fc1.bias"] = t[gemm.input[2]]
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}
    load_state_strict(net, tensors, f"SFace ONNX {path}")
    return net.state_dict()


def sface_onnxruntime_session(path: str | os.PathLike, outputs: tuple[str, ...] = ("fc1",), threads: int | None = None):
    """An onnxruntime CPU session on the SFace file, made loadable and optionally exposing extra outputs.

    As shipped, the file lists its weights as graph inputs, which onnxruntime rejects; only ``data`` is
    kept as an input.  Extra ``outputs`` (e.g. ``bn1``) are added as graph outputs.
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    keep = [i for i in model.graph.input if i.name == "data"]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    have = {o.name for o in model.graph.output}
    for name in outputs:
        if name not in have:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@TEACHERS.register("sface")
class SFaceTeacher(Teacher):
    """SFace as a frozen teacher (see the module docstring for the features and the default)."""

    def __init__(self, feature: str = "embedding") -> None:
        super().__init__()
        if feature not in _FEATURES:
            raise ConfigError(f"unknown SFace feature '{feature}'; choose one of {', '.join(_FEATURES)}")
        self.name, self.feature, self.feature_shape = "sface", feature, _FEATURES[feature]
        self.preprocess = Preprocess(size=112, scale=1.0, mean=(_INPUT_MEAN,) * 3, std=(1.0 / _INPUT_SCALE,) * 3)
        self.net = SFace()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.net.bn1_map(x)
        if self.feature == "bn1_map":
            return m
        if self.feature == "bn1":
            return m.mean(dim=(2, 3))
        return self.net.embed_map(m)

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every feature at once (for multi-layer distillation)."""
        return self.net(x)

    @classmethod
    def from_config(cls, feature: str = "embedding", weights: str | os.PathLike | None = None) -> "SFaceTeacher":
        """``weights``: null = the embedded, sha256-verified OpenCV Zoo file; or a path to the same ONNX file."""
        if weights is None:
            path, wid = resolve("sface"), EMBEDDED_ASSETS["sface"].sha256
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise ModelWeightsError(f"teacher.weights={weights}: no such file (expected "
                                        f"{EMBEDDED_ASSETS['sface'].filename}; leave teacher.weights=null for the embedded copy)")
            wid = sha256_file(path)
        teacher = cls(feature)
        teacher.net.load_state_dict(read_sface_onnx(path))
        teacher.weights_id = wid
        return teacher

    @classmethod
    def architecture(cls, feature: str = "embedding") -> "SFaceTeacher":
        teacher = cls(feature)
        teacher.weights_id = "random-init"
        return teacher
