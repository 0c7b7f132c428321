"""The :class:`Task` a stage subclasses to say *what* the engine trains."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import nn

__all__ = ["Task"]


class Task(nn.Module):
    """What to train.  Subclass it: hold the trainable modules, implement :meth:`training_step`.

    ``train()`` / ``eval()`` are called by the engine around each phase; override ``train(mode)`` to keep
    frozen parts (e.g. a frozen backbone's batch norm) in eval mode.  ``state_dict()`` is what the
    checkpoints and ``best.safetensors`` hold.
    """

    def training_step(self, batch: Any) -> torch.Tensor | tuple[torch.Tensor, Mapping[str, Any]]:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Validation metrics for the epoch that just ended (run under no_grad, eval mode, rank 0)."""
        return {}

    def param_groups(self) -> Iterable[Any]:
        """What the optimizer trains: parameters, or dicts with ``params`` and an optional ``lr_scale``."""
        return [p for p in self.parameters() if p.requires_grad]

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch (``epoch`` counts from 1)."""

    @property
    def device(self) -> torch.device:
        for t in (*self.parameters(), *self.buffers()):
            return t.device
        return torch.device("cpu")
