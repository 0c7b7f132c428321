"""Pieces several baselines share: step-based training configs, an endless train set, the image-classifier
task, and a linear head trained on frozen features.

Baselines count training in **optimizer steps** (few-shot train splits are tiny, so epochs mean little):
a method's ``train`` section is ``{steps, eval_every, batch_size, optim, schedule, monitor, mode, amp}``.
The engine sees ``steps / eval_every`` epochs of ``eval_every`` batches each over a
:class:`RepeatedDataset`, evaluates on val after each of them and keeps the best state.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from facekd.baselines.base import plain
from facekd.data.augment import seed_augmentation
from facekd.data.preprocess import Preprocess
from facekd.engine import Task, TrainConfig, Trainer, load_best
from facekd.engine.steps import RepeatedDataset, StepBudget
from facekd.metrics import nearest_class_mean_predict, selection_score
from facekd.models.heads import LinearHead
from facekd.models.standardize import Standardize

__all__ = [
    "RepeatedDataset",
    "Standardize",
    "step_train_config",
    "selection_score",
    "ImageClassifierTask",
    "FeatureHeadTask",
    "fit_head",
    "batched",
    "train_engine",
    "seed_augmentation",
]

def step_train_config(cfg: Mapping[str, Any], seed: int, section: str = "train",
                      **overrides: Any) -> tuple[TrainConfig, int]:
    """A :class:`TrainConfig` from a method config's step-based ``section``; also returns the samples per epoch.

    The method config's ``device`` and ``progress`` keys are passed on; runs resume from their checkpoint.
    """
    t = dict(plain(cfg.get(section) or {}))
    t.setdefault("steps", 100)
    budget = StepBudget.pop(t, section)
    t.setdefault("monitor", "val_select")
    t.setdefault("mode", "max")
    t.update(seed=int(seed), resume=True, device=cfg.get("device", "auto"),
             progress=bool(cfg.get("progress", True)), log_every=max(1, min(20, budget.eval_every)))
    t.update(overrides)
    tc = TrainConfig.from_config(t, section)
    epochs, per_epoch = budget.plan(budget.steps * tc.batch_size, tc.batch_size)
    return dataclasses.replace(tc, epochs=epochs), per_epoch


def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``fn`` over ``x`` in batches, concatenated (on ``fn``'s output device)."""
    return torch.cat([fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def train_engine(task: Task, dataset: Dataset, tc: TrainConfig, samples_per_epoch: int, run_dir: Path,
                 config: Mapping[str, Any]) -> Task:
    """Train ``task`` on ``dataset`` repeated to ``samples_per_epoch`` per epoch; load and return its best state."""
    Trainer(tc, run_dir, config=plain(config)).fit(task, RepeatedDataset(dataset, samples_per_epoch))
    load_best(task, run_dir)
    return task.eval()


class ImageClassifierTask(Task):
    """A network trained on uint8 image batches, scored on the (unaugmented) val images.

    ``net`` maps preprocessed input to class scores; ``preprocess`` is its :class:`Preprocess`.  Batches are
    ``(images, labels, *extra)``; ``loss_fn(logits, labels, images, *extra)`` defaults to cross-entropy
    (Hinton KD passes its own, with cached teacher scores as ``extra``).  ``to_classes`` (no parameters)
    maps the net's outputs to class scores when they are not class scores themselves (e.g. subclass logits);
    the loss sees the net's raw outputs, val accuracy and loss the class scores.
    """

    def __init__(self, net: nn.Module, preprocess: Preprocess, val: tuple[torch.Tensor, torch.Tensor],
                 loss_fn: Callable[..., torch.Tensor] | None = None, eval_batch_size: int = 64,
                 to_classes: nn.Module | None = None) -> None:
        super().__init__()
        self.net, self.preprocess = net, preprocess
        self.val_x, self.val_y = val
        self.loss_fn = loss_fn
        self.eval_batch_size = eval_batch_size
        self.to_classes = to_classes

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x

    def training_step(self, batch: Any) -> Any:
        images, labels, *extra = batch
        logits = self.net(self.inputs(images))
        if self.loss_fn is None:
            return F.cross_entropy(logits.float(), labels)
        return self.loss_fn(logits.float(), labels, images, *extra)

    def evaluate(self) -> dict[str, float]:
        logits = batched(lambda x: self.net(self.inputs(x.to(self.device))).float(), self.val_x, self.eval_batch_size)
        if self.to_classes is not None:
            logits = self.to_classes(logits)
        y = self.val_y.to(logits.device)
        loss = float(F.cross_entropy(logits, y))
        acc = float((logits.argmax(1) == y).float().mean())
        return {"val_loss": loss, "val_accuracy": acc, "val_select": selection_score(acc, loss)}


class FeatureHeadTask(Task):
    """A linear head trained by cross-entropy on fixed features; scored on val features (``to_classes``, no
    parameters, maps the head's outputs to class scores when they are not class scores themselves)."""

    def __init__(self, head: nn.Module, val: tuple[torch.Tensor, torch.Tensor],
                 to_classes: nn.Module | None = None) -> None:
        super().__init__()
        self.head, self.to_classes = head, to_classes
        self.val_x, self.val_y = val

    def training_step(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.head(x).float(), y)

    def evaluate(self) -> dict[str, float]:
        logits = self.head(self.val_x.to(self.device)).float()
        if self.to_classes is not None:
            logits = self.to_classes(logits)
        y = self.val_y.to(logits.device)
        loss = float(F.cross_entropy(logits, y))
        acc = float((logits.argmax(1) == y).float().mean())
        return {"val_loss": loss, "val_accuracy": acc, "val_select": selection_score(acc, loss)}


def fit_head(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor], num_classes: int,
             cfg: Mapping[str, Any], run_dir: Path, seed: int, config: Mapping[str, Any]) -> nn.Module:
    """Train a :class:`~facekd.models.heads.LinearHead` on (already standardised) features with the engine.

    ``cfg`` is the method config; its ``head`` section is step-based like ``train`` (see module doc).
    Selection on val; returns the head at its best val state.
    """
    head = LinearHead(train[0].shape[1], num_classes)
    tc, per_epoch = step_train_config(cfg, seed, section="head", amp=False, channels_last=False)
    task = FeatureHeadTask(head, val)
    train_engine(task, TensorDataset(*train), tc, per_epoch, run_dir, config)
    return task.head.eval()


def ncm_accuracy(train_feats: Any, train_labels: Any, feats: Any, labels: Any, metric: str = "cosine") -> float:
    """Nearest-class-mean accuracy of ``feats`` against the class means of ``train_feats``."""
    pred = nearest_class_mean_predict(train_feats, train_labels, feats, metric=metric)
    return float((pred == np.asarray(labels)).mean())
