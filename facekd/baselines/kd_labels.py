"""``kd_labels``: Hinton knowledge distillation with labels.

1. The teacher gets a linear head fine-tuned on the train split (exactly the ``transfer`` baseline's
   classifier, :func:`~facekd.baselines.transfer.fit_teacher_classifier`).
2. The student is trained from random init on augmented train images with

       L = alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

   The paper used ``alpha = 0.1`` and ``T = 1`` (its eq. 3: at T = 1 the KL term equals its soft
   cross-entropy up to the teacher's entropy, a constant).  Selection on val accuracy, like ``scratch``.

The teacher scores the very images the student sees.  ``teacher_mode: cached`` (default, the CPU-friendly
one) draws ``views`` augmented views of each train image once (view 0 is the clean image), scores them
with the teacher once and trains on those views; ``online`` augments afresh and runs the teacher every
step (meant for a GPU).

The teacher's own test accuracy is reported as ``extra["teacher_accuracy"]``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from facekd.baselines.base import METHODS, Fitted, Method, Predictor
from facekd.baselines.scratch import student_config, train_classifier
from facekd.baselines.transfer import fit_teacher_classifier, teacher_config
from facekd.data.labeled import LabeledData, split_datasets
from facekd.errors import ConfigError

__all__ = ["hinton_kd_loss", "KDLabels", "augmented_views", "teacher_views"]


def hinton_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                   alpha: float, temperature: float) -> torch.Tensor:
    """``alpha * CE(s, y) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))`` (batch mean)."""
    if not 0.0 <= alpha <= 1.0 or temperature <= 0:
        raise ConfigError(f"need 0 <= alpha <= 1 and temperature > 0, got alpha={alpha}, T={temperature}")
    ce = F.cross_entropy(student_logits, labels)
    t = float(temperature)
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits.float() / t, dim=1),
                  reduction="batchmean", log_target=True)
    return alpha * ce + (1.0 - alpha) * t * t * kl


@METHODS.register("kd_labels")
class KDLabels(Method):
    """Student trained on labels and the fine-tuned teacher's soft predictions (Hinton KD)."""

    def student_name(self, cfg: Mapping[str, Any]) -> str:
        s = student_config(cfg)
        return f"{s['name']}@{s.get('input_size', 64)} <- {teacher_config(cfg)['name']}"

    def fit(self, data: LabeledData, cfg: Mapping[str, Any], run_dir: Path, seed: int) -> Fitted:
        kd = dict(cfg.get("kd") or {})
        alpha, temperature = float(kd.get("alpha", 0.1)), float(kd.get("temperature", 1.0))
        mode, views = str(kd.get("teacher_mode", "cached")), int(kd.get("views", 16))
        if mode not in ("cached", "online"):
            raise ConfigError(f"kd.teacher_mode must be 'cached' or 'online', got {mode!r}")
        teacher = fit_teacher_classifier(data, cfg, run_dir, seed)

        def loss_fn(logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor,
                    target: torch.Tensor | None = None) -> torch.Tensor:
            if target is None:
                with torch.no_grad():
                    target = teacher(teacher.preprocess(images))
            return hinton_kd_loss(logits, target, labels, alpha, temperature)

        train_set = None
        if mode == "cached":
            train_set = teacher_views(data, teacher, views, seed, bool(cfg.get("augment", True)),
                                      int(cfg.get("eval_batch_size", 64)))
        student = train_classifier(data, cfg, run_dir, seed, loss_fn=loss_fn, train_set=train_set)
        return Fitted(student, self.student_name(cfg),
                      extra={"alpha": alpha, "temperature": temperature, "teacher_mode": mode,
                             **({"views": views} if mode == "cached" else {})},
                      side_predictors={"teacher": teacher})


def augmented_views(data: LabeledData, views: int, seed: int, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``views`` views of every train image: view 0 clean, the others augmented with ``data.augment``, drawn
    reproducibly from ``seed``.  Returns ``(uint8 images, labels)``, view-major."""
    if views < 1:
        raise ConfigError(f"kd.views must be >= 1, got {views}")
    train = split_datasets(data, ("train",), augment_train=augment)["train"]
    images, labels = train.tensors()
    out = [images]
    if views > 1 and train.augment is not None:
        train.augment.set_random_seed(seed)  # albumentations draws from its own generators
        out += [torch.stack([train[i][0] for i in range(len(train))]) for _ in range(views - 1)]
    return torch.cat(out), labels.repeat(len(out))


def teacher_views(data: LabeledData, teacher: Predictor, views: int, seed: int, augment: bool = True,
                  batch_size: int = 64) -> TensorDataset:
    """:func:`augmented_views` of the train images with the teacher's scores: ``(images, labels, teacher scores)``."""
    x, y = augmented_views(data, views, seed, augment)
    with torch.no_grad():
        scores = torch.cat([teacher.predict(x[i:i + batch_size]).cpu() for i in range(0, len(x), batch_size)])
    return TensorDataset(x, y, scores)
