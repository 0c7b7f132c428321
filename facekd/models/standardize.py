"""One standardiser for every place that z-scores features: ``(x - mean) / std`` with fixed statistics.

The statistics are buffers (they travel with the weights, never trained).  They are per dimension of a
sample (``shape`` = one sample's shape, e.g. ``(D,)``) or, with ``channelwise=True``, per channel (axis 1) of
``B x C x ...`` maps.  ``std`` is floored at ``eps``; with a single sample it is 1.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["Standardize"]


class Standardize(nn.Module):
    """``(x - mean) / std`` and its inverse, with statistics fitted once (see module doc)."""

    def __init__(self, shape: int | Sequence[int], eps: float = 1e-6, channelwise: bool = False) -> None:
        super().__init__()
        shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
        self.eps, self.channelwise = float(eps), bool(channelwise)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    @classmethod
    def from_stats(cls, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-6) -> "Standardize":
        mean, std = torch.as_tensor(mean).float(), torch.as_tensor(std).float()
        out = cls(tuple(mean.shape), eps)
        out.mean.copy_(mean)
        out.std.copy_(std.clamp_min(eps))
        return out

    @classmethod
    def fitted(cls, x: torch.Tensor, eps: float = 1e-6, channelwise: bool = False, unbiased: bool = True) -> "Standardize":
        """A standardiser fitted on the ``N x ...`` samples ``x``."""
        return cls(x.shape[1] if channelwise else tuple(x.shape[1:]), eps, channelwise).fit(x, unbiased)

    @torch.no_grad()
    def fit(self, x: torch.Tensor, unbiased: bool = True) -> "Standardize":
        """Set mean and std from ``N x ...`` samples (over the batch, and the spatial axes when channelwise)."""
        x = x.double().to(self.mean.device)
        dims = tuple(d for d in range(x.dim()) if d != 1) if self.channelwise else (0,)
        count = x.numel() // self.mean.numel()
        self.mean.copy_(x.mean(dims).float())
        if count > 1:
            self.std.copy_(x.std(dims, unbiased=unbiased).float().clamp_min(self.eps))
        else:
            self.std.fill_(1.0)
        return self

    def _view(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, *([1] * (x.dim() - 2))) if self.channelwise else t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self._view(self.mean, x)) / self._view(self.std, x)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z.float() * self._view(self.std, z) + self._view(self.mean, z)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.mean.shape)}, channelwise={self.channelwise}, eps={self.eps}"
