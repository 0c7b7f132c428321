"""Heads that sit on a frozen backbone's features."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["LinearHead"]


class LinearHead(nn.Linear):
    """A linear classifier ``in_dim -> num_classes``.

    For a distilled student, ``in_dim`` is ``student.out_dim`` and the head reads ``student.embed(x)``; for the
    transfer baseline it is ``teacher.feature_dim`` and reads ``teacher.features(images)``.
    """

    def __init__(self, in_dim: int, num_classes: int, bias: bool = True) -> None:
        if in_dim < 1 or num_classes < 2:
            raise ValueError(f"a linear head needs in_dim >= 1 and num_classes >= 2, got {in_dim}, {num_classes}")
        super().__init__(in_dim, num_classes, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features.flatten(1))
