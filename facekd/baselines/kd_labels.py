"""``kd_labels``: Hinton knowledge distillation with labels.

1. The teacher gets a linear head fine-tuned on the train split (exactly the ``transfer`` baseline's
   classifier, :func:`~facekd.baselines.transfer.fit_teacher_classifier`).
2. The student is trained from random init on augmented train images with

       L = alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

   The teacher scores the same augmented images as the student, every step.  The paper used
   ``alpha = 0.1`` and ``T = 1`` (its eq. 3: at T = 1 the KL term equals its soft cross-entropy up to the
   teacher's entropy, a constant).  Selection on val accuracy, like ``scratch``.

The teacher's own test accuracy is reported as ``extra["teacher_accuracy"]``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from facekd.baselines.base import METHODS, Fitted, Method, Predictor
from facekd.baselines.scratch import student_config, train_classifier
from facekd.baselines.transfer import fit_teacher_classifier, teacher_config
from facekd.data.labeled import LabeledData

__all__ = ["hinton_kd_loss", "KDLabels"]


def hinton_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                   alpha: float, temperature: float) -> torch.Tensor:
    """``alpha * CE(s, y) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))`` (batch mean)."""
    if not 0.0 <= alpha <= 1.0 or temperature <= 0:
        raise ValueError(f"need 0 <= alpha <= 1 and temperature > 0, got alpha={alpha}, T={temperature}")
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
        teacher = fit_teacher_classifier(data, cfg, run_dir, seed)

        def loss_fn(logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                target = teacher(teacher.preprocess(images))
            return hinton_kd_loss(logits, target, labels, alpha, temperature)

        student = train_classifier(data, cfg, run_dir, seed, loss_fn=loss_fn)
        return Fitted(student, self.student_name(cfg), extra={"alpha": alpha, "temperature": temperature},
                      side_predictors={"teacher": teacher})
