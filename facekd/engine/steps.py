"""Training budgets in optimizer steps, run by the epoch-based engine.

A budget of ``steps`` updates of ``batch_size`` samples, validated every ``eval_every`` steps, becomes engine
epochs of ``eval_every`` steps each over the training set repeated (:class:`RepeatedDataset`).  With
``min_epochs`` the budget grows with the data: at least that many passes over the training set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from torch.utils.data import Dataset

from facekd.errors import ConfigError
from facekd.validate import check_int

__all__ = ["RepeatedDataset", "StepBudget"]


class RepeatedDataset(Dataset):
    """``base`` repeated to ``length`` items (item ``i`` is ``base[i % len(base)]``); the engine shuffles it."""

    def __init__(self, base: Dataset, length: int) -> None:
        if len(base) == 0:
            raise ValueError("the training set is empty")
        self.base, self.length = base, int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Any:
        return self.base[i % len(self.base)]


@dataclass(frozen=True)
class StepBudget:
    """``steps`` optimizer steps (at least ``min_epochs`` passes over the data), val every ``eval_every``."""

    steps: int
    eval_every: int
    min_epochs: int = 0

    KEYS = ("steps", "eval_every", "min_epochs")

    @classmethod
    def pop(cls, train: dict, section: str) -> "StepBudget | None":
        """Take the budget's keys out of a ``train`` section (in place); None when ``steps`` is unset (null)."""
        steps, every, min_epochs = (train.pop(k, None) for k in cls.KEYS)
        if steps is None:
            if every is not None or min_epochs:
                raise ConfigError(f"{section}.eval_every and {section}.min_epochs need {section}.steps (a budget "
                                  f"in optimizer steps); set {section}.steps=N or leave them null")
            return None
        steps = check_int(steps, f"{section}.steps", minimum=1)
        every = check_int(every, f"{section}.eval_every", minimum=0, allow_none=True) or steps  # 0: at the end
        min_epochs = check_int(min_epochs or 0, f"{section}.min_epochs", minimum=0)
        return cls(steps, every, min_epochs)

    def total_steps(self, n_samples: int, batch_size: int) -> int:
        """The steps this budget trains on ``n_samples``: ``steps``, or ``min_epochs`` passes when more."""
        return max(self.steps, self.min_epochs * math.ceil(n_samples / batch_size))

    def plan(self, n_samples: int, batch_size: int) -> tuple[int, int]:
        """(engine epochs, samples per engine epoch): epochs of ``eval_every`` steps covering the budget."""
        total = self.total_steps(n_samples, batch_size)
        every = min(self.eval_every, total)
        return math.ceil(total / every), every * batch_size

    def describe(self, n_samples: int, batch_size: int) -> Mapping[str, Any]:
        """What the budget trains here, for logs and manifests."""
        total = self.total_steps(n_samples, batch_size)
        return {"steps": total, "eval_every": min(self.eval_every, total),
                "passes": round(total * batch_size / max(1, n_samples), 1)}
