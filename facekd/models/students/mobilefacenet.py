"""MobileFaceNet student: an edge-class face network (about 1 M parameters) for CPUs and phones.

Chen et al., "MobileFaceNets" (2018): a stem (3x3 conv, stride 2, then a 3x3 depthwise conv), inverted-residual
bottlenecks (1x1 expansion, 3x3 depthwise, linear 1x1 projection; a residual when shape allows), a 1x1 conv to
512 channels and a *global depthwise conv* (GDConv) over the whole final map instead of average pooling, so
every position of the face keeps its own weight.

One deliberate change: the activation is ReLU by default, not the paper's PReLU.  onnxruntime fuses ReLU into
its convolutions but runs PReLU as a separate op that also breaks its blocked (NCHWc) layout: on one CPU thread
the exported 64 px network took 14.6 ms with PReLU (55% of it in PReLU, 11% reordering) against 1.9 ms with
ReLU.  ``activation=prelu`` gives the paper's network.

Four stride-2 layers take S px input to a ``ceil(S / 16)`` map: 4x4 at 64 px, 7x7 at 112 px (the paper's
size), 14x14 at 224 px.  The GDConv kernel is sized to that map, so the same network serves every input
size.  ``backbone_features`` is the 512-d GDConv output; ``proj`` maps it to the teacher's D (the paper's
linear 1x1 conv to the 128-d embedding).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from facekd.errors import ConfigError
from facekd.models.base import Student
from facekd.models.registry import STUDENTS
from facekd.models.taps import register_tap_sets

__all__ = ["MobileFaceNetStudent", "MOBILEFACENET_STAGES", "InvertedResidual", "ACTIVATIONS"]

# (expansion t, output channels c, repeats n, first stride s) of each stage, from the paper's Table 1.
MOBILEFACENET_STAGES: tuple[tuple[tuple[int, int, int, int], ...], ...] = (
    ((2, 64, 5, 2),),
    ((4, 128, 1, 2), (2, 128, 6, 1)),
    ((4, 128, 1, 2), (2, 128, 2, 1)),
)


ACTIVATIONS = ("relu", "prelu")


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: str | None = "relu") -> nn.Sequential:
    """Conv (no bias) + BatchNorm, then ``act`` (``relu`` | ``prelu``; ``None`` = a linear layer)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2 if kernel > 1 else 0, groups=groups,
                                         bias=False), nn.BatchNorm2d(cout)]
    if act == "prelu":
        layers.append(nn.PReLU(cout))
    elif act == "relu":
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expansion by ``t``, 3x3 depthwise (stride ``s``), linear 1x1 projection; ``x +`` it when the shape allows."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int, act: str = "relu") -> None:
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.block = nn.Sequential(conv_bn(cin, hidden, 1, act=act), conv_bn(hidden, hidden, 3, stride, hidden, act),
                                   conv_bn(hidden, cout, 1, act=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def _stage(cin: int, spec: tuple[tuple[int, int, int, int], ...], width: float, act: str) -> tuple[nn.Sequential, int]:
    blocks: list[nn.Module] = []
    for t, c, n, s in spec:
        cout = _channels(c, width)
        for i in range(n):
            blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, act))
            cin = cout
    return nn.Sequential(*blocks), cin


def _channels(c: int, width: float) -> int:
    """``c * width`` rounded to a multiple of 8 (at least 8), as mobile networks size their layers."""
    return max(8, int(round(c * width / 8)) * 8)


# Tap sets (facekd.models.taps), bottom to top: the end of each stride-2 stage, then the 1x1 conv before the
# global depthwise conv.
TAP_SETS = register_tap_sets("mobilefacenet", {
    "stages": ["stage1", "stage2", "stage3", "conv_sep"],
    "top": ["conv_sep"],
    "embedding": ["proj"],
})


@STUDENTS.register("mobilefacenet")
class MobileFaceNetStudent(Student):
    """MobileFaceNet (0.99 M parameters with a 128-d output at ``width=1``), any input size from 32 px.

    ``width`` scales every channel count (rounded to multiples of 8) for a smaller or larger network;
    ``embedding_channels`` is the width of the 1x1 conv before the GDConv (512 in the paper); ``activation``
    is ``relu`` (default, fast under onnxruntime) or the paper's ``prelu``.
    """

    name = "mobilefacenet"

    def __init__(self, out_dim: int, input_size: int = 64, width: float = 1.0, embedding_channels: int = 512,
                 activation: str = "relu") -> None:
        super().__init__()
        self._setup(input_size, out_dim)
        if not width > 0:
            raise ConfigError(f"student.width must be positive, got {width}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"student.activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        c0 = _channels(64, width)
        self.stem = nn.Sequential(conv_bn(3, c0, 3, 2, act=activation), conv_bn(c0, c0, 3, 1, c0, activation))
        stages, cin = [], c0
        for spec in MOBILEFACENET_STAGES:
            stage, cin = _stage(cin, spec, width, activation)
            stages.append(stage)
        self.stage1, self.stage2, self.stage3 = stages
        self.feature_dim = int(embedding_channels)
        self.conv_sep = conv_bn(cin, self.feature_dim, 1, act=activation)
        self.map_size = math.ceil(self.input_size / 16)
        self.gdc = nn.Sequential(nn.Conv2d(self.feature_dim, self.feature_dim, self.map_size, groups=self.feature_dim,
                                           bias=False), nn.BatchNorm2d(self.feature_dim), nn.Flatten(1))
        self.proj = nn.Linear(self.feature_dim, self.out_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        x = self.conv_sep(x)
        if x.shape[-2:] != (self.map_size, self.map_size):
            raise ValueError(f"mobilefacenet built for {self.input_size} px input expects a {self.map_size}x"
                             f"{self.map_size} final map, got {tuple(x.shape[-2:])}: feed {self.input_size} px images")
        return self.gdc(x)
