"""``hinton_kd``: Hinton knowledge distillation with labels.

1. The teacher gets a linear head fine-tuned on the train split (exactly the ``teacher_probe`` baseline's
   classifier, :func:`~facekd.baselines.teacher_probe.fit_teacher_classifier`).
2. The student is trained from random init on augmented train images with

       L = alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

   The paper used ``alpha = 0.1`` and ``T = 1`` (its eq. 3: at T = 1 the KL term equals its soft
   cross-entropy up to the teacher's entropy, a constant).  Selection on val accuracy, like ``scratch``.

The teacher scores the very images the student sees.  ``teacher_mode: cached`` (default, the CPU-friendly
one) draws ``views`` augmented views of each train image once (view 0 is the clean image), scores them
with the teacher once and trains on those views; ``online`` augments afresh and runs the teacher every
step (meant for a GPU).

Unlabeled images (``kd.unlabeled_views``: that many more augmented views of each train photo;
``kd.synthetic.count``: that many synthetic faces of the generate run, with ``kd.synthetic.augment``) join the
KD term only: their label is ``-1`` and the CE term skips them.  Both default to 0; ``subclass_kd`` shares
all of this (:func:`logit_kd_train_set`).

The teacher's own test accuracy is reported as ``extra["teacher_accuracy"]``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, Dataset, TensorDataset

import os

from facekd.baselines.base import Fitted, METHODS, Method, Predictor, embed_images, plain
from facekd.baselines.common import seed_augmentation
from facekd.baselines.kd_views import augmented_views, synthetic_views
from facekd.baselines.scratch import student_config, train_classifier
from facekd.baselines.teacher_probe import fit_teacher_classifier
from facekd.config import teacher_config
from facekd.data.labeled import LabeledData, split_datasets
from facekd.errors import ConfigError
from facekd.pipeline import ensure_generate_run, run_identity
from facekd.validate import check_choice, check_int

__all__ = ["hinton_kd_loss", "labeled_ce", "HintonKD", "unlabeled_settings",
           "logit_kd_train_set", "on_teacher_scores", "UNLABELED"]

UNLABELED = -1  # the label of an image that only the KD term uses


def labeled_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the items whose label is not :data:`UNLABELED` (0, with a gradient path, if none)."""
    keep = labels != UNLABELED
    if bool(keep.all()):
        return F.cross_entropy(logits, labels)
    return F.cross_entropy(logits[keep], labels[keep]) if bool(keep.any()) else logits.sum() * 0.0


def hinton_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                   alpha: float, temperature: float) -> torch.Tensor:
    """``alpha * CE(s, y) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))`` (batch mean; the CE
    skips :data:`UNLABELED` items, the KL term runs over all)."""
    if not 0.0 <= alpha <= 1.0 or temperature <= 0:
        raise ConfigError(f"need 0 <= alpha <= 1 and temperature > 0, got alpha={alpha}, T={temperature}")
    ce = labeled_ce(student_logits, labels)
    t = float(temperature)
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits.float() / t, dim=1),
                  reduction="batchmean", log_target=True)
    return alpha * ce + (1.0 - alpha) * t * t * kl


@METHODS.register("hinton_kd")
class HintonKD(Method):
    """Student trained on labels and the fine-tuned teacher's soft predictions (Hinton KD)."""

    uses_teacher = True

    def __init__(self) -> None:
        self.synthetic_run: Path | None = None

    def student_name(self, cfg: Mapping[str, Any]) -> str:
        s = student_config(cfg)
        return f"{s['name']}@{s.get('input_size', 64)} <- {teacher_config(cfg)['name']}"

    def check(self, data: LabeledData, cfg: Mapping[str, Any]) -> None:
        unlabeled_settings(cfg.get("kd") or {})

    def prepare(self, data: LabeledData, cfg: Mapping[str, Any], paths_root: str | os.PathLike,
                seed: int = 0) -> dict[str, Any]:
        """Make (or reuse) the generate run when the KD term draws on synthetic faces."""
        synthetic = unlabeled_settings(cfg.get("kd") or {})["synthetic"]
        if int(synthetic["count"]) == 0:
            return {}
        self.synthetic_run = ensure_generate_run(cfg, paths_root, synthetic.get("generate_overrides") or [])
        return {"generate": run_identity(self.synthetic_run, "generate")}

    def fit(self, data: LabeledData, cfg: Mapping[str, Any], run_dir: Path, seed: int) -> Fitted:
        kd = dict(cfg.get("kd") or {})
        alpha, temperature = float(kd.get("alpha", 0.1)), float(kd.get("temperature", 1.0))
        hinton_kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), alpha, temperature)
        teacher = fit_teacher_classifier(data, cfg, run_dir, seed)
        loss_fn = on_teacher_scores(teacher, lambda s, t, y: hinton_kd_loss(s, t, y, alpha, temperature))
        train_set, extra = logit_kd_train_set(data, cfg, teacher, seed, self.synthetic_run)
        student = train_classifier(data, cfg, run_dir, seed, loss_fn=loss_fn, train_set=train_set)
        return Fitted(student, self.student_name(cfg), extra={"alpha": alpha, "temperature": temperature, **extra},
                      side_predictors={"teacher": teacher})


def on_teacher_scores(teacher: Predictor, loss: Any) -> Any:
    """The student's ``loss_fn(logits, labels, images, target=None)`` for :func:`train_classifier`: ``loss(logits,
    teacher scores, labels)`` with the cached scores of the batch, or (online) the teacher's scores made now."""
    def loss_fn(logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor,
                target: torch.Tensor | None = None) -> Any:
        if target is None:
            with torch.no_grad():
                target = teacher(teacher.preprocess(images))
        return loss(logits, target, labels)

    return loss_fn


def unlabeled_settings(kd: Mapping[str, Any]) -> dict[str, Any]:
    """The shared data options of the logit-KD rows (``kd`` section), with defaults, checked (errors name the key)."""
    kd = dict(plain(kd))
    out = {"teacher_mode": kd.get("teacher_mode", "cached"), "views": kd.get("views", 16),
           "unlabeled_views": kd.get("unlabeled_views", 0),
           "synthetic": {"count": 0, "augment": "target_like", "generate_overrides": [], **(kd.get("synthetic") or {})}}
    check_choice(out["teacher_mode"], "kd.teacher_mode", ("cached", "online"))
    check_int(out["views"], "kd.views", minimum=1)
    check_int(out["unlabeled_views"], "kd.unlabeled_views", minimum=0)
    check_int(out["synthetic"]["count"], "kd.synthetic.count", minimum=0)
    return out


def logit_kd_train_set(data: LabeledData, cfg: Mapping[str, Any], teacher: Predictor, seed: int,
                       synthetic_run: Path | None = None) -> tuple[TensorDataset | Dataset | None, dict[str, Any]]:
    """The student's training set for a logit-KD row, and what to report about it.

    ``cached``: ``kd.views`` fixed views of each train photo (labeled), ``kd.unlabeled_views`` more augmented views
    of each (label :data:`UNLABELED`) and ``kd.synthetic.count`` synthetic faces (unlabeled), all scored by
    ``teacher`` once: items ``(image, label, teacher scores)``.  ``online``: the freshly augmented train split
    plus the unlabeled images as ``(image, label)`` (the teacher scores each batch); ``None`` when there are
    none (the plain augmented split).
    """

    kd = unlabeled_settings(cfg.get("kd") or {})
    augment, bs = bool(cfg.get("augment", True)), int(cfg.get("eval_batch_size", 64))
    n_views, n_unlabeled, n_syn = int(kd["views"]), int(kd["unlabeled_views"]), int(kd["synthetic"]["count"])
    online = kd["teacher_mode"] == "online"
    unlabeled: list[torch.Tensor] = []
    if n_unlabeled:  # augmented views only (drop view 0, the clean photo), drawn from their own seed
        x, _ = augmented_views(data, n_unlabeled + 1, seed + 7919, augment)
        unlabeled.append(x[len(x) // (n_unlabeled + 1):])
    if n_syn:
        if synthetic_run is None:
            raise ConfigError("kd.synthetic.count > 0 needs a generate run; run the row through compare_baselines")
        size = split_datasets(data, ("val",))["val"].tensors()[0].shape[-1]
        unlabeled.append(synthetic_views(synthetic_run, n_syn, kd["synthetic"]["augment"], size, seed))
    u = torch.cat(unlabeled) if unlabeled else torch.empty(0, dtype=torch.uint8)
    extra: dict[str, Any] = {"teacher_mode": kd["teacher_mode"], **({} if online else {"views": n_views})}
    if n_unlabeled or n_syn:
        extra.update(unlabeled_views=n_unlabeled, synthetic=n_syn)
    u_labels = torch.full((len(u),), UNLABELED, dtype=torch.long)
    if online:
        if not len(u):
            return None, extra
        train = seed_augmentation(split_datasets(data, ("train",), augment_train=augment)["train"], seed)
        return ConcatDataset([train, TensorDataset(u, u_labels)]), extra
    x, y = augmented_views(data, n_views, seed, augment)
    if len(u):
        x, y = torch.cat([x, u]), torch.cat([y, u_labels])
    return TensorDataset(x, y, embed_images(teacher, x, bs)), extra


