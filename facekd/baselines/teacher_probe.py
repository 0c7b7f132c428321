"""``teacher_probe``: the frozen teacher with a linear head, the upper bound.

The teacher's features of the unaugmented train images are standardised (train statistics) and a
linear head is trained on them with the engine (cross-entropy, selection on val).  The teacher alone,
classified by the nearest class mean of its raw features, is reported beside it as
``extra["teacher_ncm_accuracy"]``.  Hinton KD (``hinton_kd``) reuses :func:`fit_teacher_classifier`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import nn

from facekd.baselines.base import METHODS, Fitted, Method, Predictor, default_device, plain
from facekd.baselines.common import Standardize, batched, fit_head
from facekd.data.labeled import LabeledData, split_datasets
from facekd.config import teacher_config
from facekd.models import build_teacher
from facekd.models.base import Teacher

__all__ = ["fit_teacher_classifier", "TeacherProbe"]


def fit_teacher_classifier(data: LabeledData, cfg: Mapping[str, Any], run_dir: Path, seed: int,
                           teacher: Teacher | None = None) -> Predictor:
    """The frozen teacher + standardisation + a linear head trained on the train split (val selection).

    ``cfg`` holds ``teacher`` and the step-based ``head`` training section.  Returns the classifier
    (``output="scores"``) on the method's device.
    """
    device = default_device(cfg)
    teacher = (teacher or build_teacher(teacher_config(cfg))).to(device)
    sets = split_datasets(data, ("train", "val"), augment_train=False)
    bs = int(cfg.get("eval_batch_size", 64))
    xtr, ytr = sets["train"].tensors()
    xva, yva = sets["val"].tensors()
    ftr = batched(teacher.features, xtr, bs).cpu()
    fva = batched(teacher.features, xva, bs).cpu()
    ftr, fva = ftr.flatten(1), fva.flatten(1)
    std = Standardize.fitted(ftr)
    head_cfg = {"teacher": teacher.signature, "head": plain(cfg.get("head")), "split": data.split.id}
    head = fit_head((std(ftr), ytr), (std(fva), yva), data.num_classes, cfg, Path(run_dir) / "teacher_head",
                    seed, head_cfg)
    body = nn.Sequential(teacher, nn.Flatten(1), std)
    return Predictor(body, teacher.preprocess, head=head, output="scores").to(device).eval()


@METHODS.register("teacher_probe")
class TeacherProbe(Method):
    """Frozen teacher features -> standardise -> linear head (the upper bound of every student)."""

    uses_teacher = True

    def student_name(self, cfg: Mapping[str, Any]) -> str:
        t = teacher_config(cfg)
        return f"{t['name']} (frozen) + linear" if "feature" not in t else f"{t['name']}/{t['feature']} (frozen) + linear"

    def fit(self, data: LabeledData, cfg: Mapping[str, Any], run_dir: Path, seed: int) -> Fitted:
        teacher = build_teacher(teacher_config(cfg)).to(default_device(cfg))
        clf = fit_teacher_classifier(data, cfg, run_dir, seed, teacher)
        ncm = Predictor(teacher, teacher.preprocess, output="embedding")
        t = teacher_config(cfg)
        return Fitted(clf, self.student_name(cfg), side_predictors={"teacher_ncm": ncm}, embedder=ncm,
                      extra={"embedding": f"{t['name']} {t.get('feature', '')} as it is (no training)".replace("  ", " ")})
