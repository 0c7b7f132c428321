"""Heads that sit on a frozen backbone's features."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["LinearHead", "CosineHead"]


class LinearHead(nn.Linear):
    """A linear classifier ``in_dim -> num_classes``.

    For a distilled student, ``in_dim`` is ``student.out_dim`` and the head reads ``student.embed(x)``; for the
    teacher_probe row it is ``teacher.feature_dim`` and reads ``teacher.features(images)``.
    """

    def __init__(self, in_dim: int, num_classes: int, bias: bool = True) -> None:
        if in_dim < 1 or num_classes < 2:
            raise ValueError(f"a linear head needs in_dim >= 1 and num_classes >= 2, got {in_dim}, {num_classes}")
        super().__init__(in_dim, num_classes, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features.flatten(1))


class CosineHead(nn.Module):
    """``scale x`` the cosine of the features to each class's weight vector (a CosFace / ArcFace-style head):
    class scores that depend only on the features' direction, so training it shapes the embedding's angles,
    which a gallery compares."""

    def __init__(self, in_dim: int, num_classes: int, scale: float = 16.0) -> None:
        super().__init__()
        if in_dim < 1 or num_classes < 2:
            raise ValueError(f"a cosine head needs in_dim >= 1 and num_classes >= 2, got {in_dim}, {num_classes}")
        self.weight = nn.Parameter(torch.randn(num_classes, in_dim) / in_dim ** 0.5)
        self.scale = float(scale)
        self.in_features, self.out_features = in_dim, num_classes

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.normalize(features.flatten(1), dim=1)
        return self.scale * x @ torch.nn.functional.normalize(self.weight, dim=1).t()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scale={self.scale}"
