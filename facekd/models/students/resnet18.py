"""ResNet-18 student: torchvision's network, random init, its classifier replaced by a projection to D."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

from facekd.models.base import Student
from facekd.models.registry import STUDENTS
from facekd.models.taps import register_tap_sets

__all__ = ["ResNet18Student"]


# Tap sets (facekd.models.taps), bottom to top.
TAP_SETS = register_tap_sets("resnet18", {
    "stages": ["backbone.layer1", "backbone.layer2", "backbone.layer3", "backbone.layer4"],
    "top": ["backbone.layer4"],
    "embedding": ["proj"],
})


@STUDENTS.register("resnet18")
class ResNet18Student(Student):
    """torchvision ResNet-18 (``weights=None``): 512-d pooled features, then ``Linear(512, out_dim)``.

    Its adaptive average pool accepts 64, 112 and 224 pixel input (final maps 2x2, 4x4, 7x7).
    """

    name = "resnet18"

    def __init__(self, out_dim: int, input_size: int = 64) -> None:
        super().__init__()
        self._setup(input_size, out_dim)
        net = resnet18(weights=None)
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.backbone = net
        self.proj = nn.Linear(self.feature_dim, self.out_dim)

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)
