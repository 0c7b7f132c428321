"""The paper's sigmoid-BCE targets: a connector on the frozen teacher, fine-tuned WITH LABELS.

The published method puts a ``Linear(D, D)`` and a sigmoid on the teacher's penultimate features and
fine-tunes it on the labeled set with a linear classifier on top (as in transfer learning); the
connector's sigmoid outputs then serve as the student's BCE targets.  A run that does this has used the
labeled training split, and says so (``uses_labels: true`` in its manifest).

Here the connector reads the teacher features standardized per dimension and starts as the identity,
so before fine-tuning its targets equal the label-free ``bce`` targets ``sigmoid(z)``.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facekd.distill.losses import FeatureStats

__all__ = ["Connector", "train_connector"]

log = logging.getLogger(__name__)


class Connector(nn.Module):
    """``sigmoid(Linear(D, D)((t - mean) / std))``: teacher features -> probabilities (the BCE targets)."""

    def __init__(self, stats: FeatureStats, eps: float = 1e-6) -> None:
        super().__init__()
        d = stats.mean.numel()
        self.register_buffer("mean", stats.mean.clone().reshape(-1))
        self.register_buffer("std", stats.std.clamp_min(eps).clone().reshape(-1))
        self.linear = nn.Linear(d, d)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(d))
            self.linear.bias.zero_()

    def logits(self, t: torch.Tensor) -> torch.Tensor:
        return self.linear((t.float() - self.mean) / self.std)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(t))


def train_connector(features: np.ndarray, labels: np.ndarray, stats: FeatureStats, cfg: Mapping[str, Any],
                    seed: int = 0) -> tuple[Connector, dict[str, float]]:
    """Fine-tune a :class:`Connector` and a linear classifier on (teacher features, labels) of the TRAIN split.

    ``features`` (N x D, may be a memory map; N is small: the labeled training views) and ``labels``
    (N,).  Options: ``epochs``, ``lr``, ``batch_size``, ``weight_decay``.  Runs on CPU; returns the frozen
    connector and its final training accuracy / loss.
    """
    cfg = dict(cfg)
    epochs, lr = int(cfg.get("epochs", 60)), float(cfg.get("lr", 1e-3))
    bs, wd = int(cfg.get("batch_size", 64)), float(cfg.get("weight_decay", 0.0))
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"connector training needs matching features and labels, got {len(x)} and {len(y)}")
    classes = int(y.max()) + 1
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        connector, head = Connector(stats), nn.Linear(x.shape[1], classes)
    opt = torch.optim.Adam([*connector.linear.parameters(), *head.parameters()], lr=lr, weight_decay=wd)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(bs):
            loss = F.cross_entropy(head(connector(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        logits = head(connector(x))
        info = {"connector_train_loss": float(F.cross_entropy(logits, y)),
                "connector_train_accuracy": float((logits.argmax(1) == y).float().mean())}
    log.info("paper connector fine-tuned on %d labeled training views (%d classes): %s", len(x), classes, info)
    connector.requires_grad_(False)
    return connector.eval(), info
