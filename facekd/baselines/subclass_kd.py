"""``subclass_kd``: subclass distillation (Müller, Kornblith and Hinton, 2020), the Sun paper's second method.

1. **Teacher.** The frozen teacher's features of ``kd.views`` augmented views per train photo (view 0 clean)
   are standardised and a linear head with ``C x K`` subclass logits is trained on them (val selection).  The
   class score is the log of the summed subclass probabilities (:func:`class_logits`, a logsumexp per class),
   trained with cross-entropy; an auxiliary contrastive term (:func:`subclass_aux_loss`, weight ``aux.weight``)
   keeps the subclasses in use: on normalised subclass logits, every item of a batch should be more similar to
   itself than to the others.
2. **Student.** From random init, on

       L = alpha * CE(classes) + (1 - alpha) * T^2 * KL(softmax(teacher subclasses / T) || softmax(student / T))

   over the same views as ``hinton_kd``, with the same network, steps, optimizer and augmentation
   (``configs/baseline/subclass_kd.yaml``), so the two rows differ only in the knowledge transferred.  Its
   ``C x K`` outputs are pooled to ``C`` class scores for val, test and the deployed model (:class:`SubclassPool`).
   ``kd.unlabeled_views`` and ``kd.synthetic.count`` add unlabeled images to the KL term only
   (:func:`~facekd.baselines.hinton_kd.logit_kd_train_set`).
3. **Collapse check.** For each class, the share of the teacher's probability mass on the train views that
   each of its subclasses receives; a subclass under 1% is dead.  Reported as ``extra["subclasses_used"]``
   (of ``C x K``), with a warning naming the classes where ``K - 1`` or more are dead.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from facekd.baselines.base import Fitted, METHODS, Predictor, default_device, plain
from facekd.baselines.common import FeatureHeadTask, Standardize, batched, step_train_config, train_engine
from facekd.baselines.hinton_kd import HintonKD, labeled_ce, logit_kd_train_set, on_teacher_scores, unlabeled_settings
from facekd.baselines.kd_views import augmented_views
from facekd.baselines.scratch import student_config, train_classifier
from facekd.config import teacher_config
from facekd.data.labeled import LabeledData, split_datasets
from facekd.errors import ConfigError
from facekd.models import build_teacher
from facekd.validate import check_choice, check_float, check_int

__all__ = ["class_logits", "SubclassPool", "subclass_aux_loss", "subclass_kd_loss", "subclass_usage",
           "subclass_settings", "SubclassHeadTask", "fit_subclass_teacher", "SubclassKD", "DEAD_SHARE"]

log = logging.getLogger(__name__)

DEAD_SHARE = 0.01  # a subclass with less than this share of its class's teacher probability mass is dead


def class_logits(subclass_logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``B x (C*K)`` subclass logits (class-major: subclass ``k`` of class ``c`` at ``c*K + k``) to ``B x C`` class
    logits, ``log sum_k exp(z_ck)``: their softmax is the sum of the subclass probabilities of each class."""
    b, n = subclass_logits.shape
    if n % num_classes:
        raise ValueError(f"{n} subclass logits are not a multiple of {num_classes} classes")
    return torch.logsumexp(subclass_logits.reshape(b, num_classes, n // num_classes), dim=2)


class SubclassPool(nn.Module):
    """A parameter-free head: subclass logits to class logits (:func:`class_logits`)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = int(num_classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return class_logits(z, self.num_classes)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


def subclass_aux_loss(subclass_logits: torch.Tensor, temperature: float = 1.0, normalize: str = "batch",
                      eps: float = 1e-6) -> torch.Tensor:
    """The auxiliary term that keeps the teacher's subclasses in use (Müller et al., 2020).

    The logits are normalised (``batch``: each logit to zero mean, unit variance over the batch, as in the
    paper; ``example``: each row over its logits, as in the authors' demo code) and scaled by
    ``1 / sqrt(C*K)``; with ``s_ij = z_i . z_j / T`` the loss is ``mean_i [logsumexp_j s_ij - s_ii]``, the
    cross-entropy of telling each item apart from the rest of the batch.  Needs a batch of at least 2.
    """
    if temperature <= 0:
        raise ConfigError(f"aux.temperature must be > 0, got {temperature}")
    z = subclass_logits.float()
    if len(z) < 2:
        return z.sum() * 0.0
    if normalize == "batch":
        z = (z - z.mean(0, keepdim=True)) / torch.sqrt(z.var(0, unbiased=False, keepdim=True) + eps)
    elif normalize == "example":
        z = (z - z.mean(1, keepdim=True)) / torch.sqrt(z.var(1, unbiased=False, keepdim=True) + eps)
    else:
        raise ConfigError(f"aux.normalize must be 'batch' or 'example', got {normalize!r}")
    z = z / math.sqrt(z.shape[1])
    s = z @ z.T / float(temperature)
    return (torch.logsumexp(s, dim=1) - s.diagonal()).mean()


def subclass_kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     alpha: float, temperature: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``alpha * CE(class_logits(student), labels) + (1 - alpha) * T^2 * KL(p_teacher || p_student)``.

    The KL runs over the ``C*K`` subclass distributions at temperature ``T`` on every item; the CE skips
    unlabeled items (label :data:`~facekd.baselines.hinton_kd.UNLABELED`).  Returns the loss and its terms.
    """
    t = float(temperature)
    ce = labeled_ce(class_logits(student, num_classes), labels)
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher.float() / t, dim=1),
                  reduction="batchmean", log_target=True)
    return alpha * ce + (1.0 - alpha) * t * t * kl, {"ce": ce.detach(), "kl": kl.detach()}


def subclass_usage(probs: torch.Tensor, num_classes: int, dead_share: float = DEAD_SHARE) -> dict[str, Any]:
    """How the teacher uses its subclasses: ``probs`` is ``N x (C*K)`` subclass probabilities.

    Per class, each subclass's share of the class's total probability mass over the ``N`` items; shares under
    ``dead_share`` are dead.  Returns ``used`` (live subclasses), ``total`` (``C*K``), ``per_class`` (live
    per class) and ``collapsed`` (classes with ``K - 1`` or more dead subclasses).
    """
    n, ck = probs.shape
    k = ck // num_classes
    mass = probs.double().sum(0).reshape(num_classes, k)
    share = mass / mass.sum(1, keepdim=True).clamp_min(1e-300)
    live = (share >= dead_share).sum(1)
    return {"used": int(live.sum()), "total": int(ck), "per_class": live.tolist(),
            "collapsed": [c for c in range(num_classes) if k - int(live[c]) >= k - 1]}


def subclass_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The row's ``kd`` and ``aux`` options with defaults, checked; errors name the key."""
    kd = {"subclasses": 4, "alpha": 0.1, "temperature": 1.0, **plain(cfg.get("kd") or {})}
    aux = {"weight": 1.0, "temperature": 1.0, "normalize": "batch", **plain(cfg.get("aux") or {})}
    k = check_int(kd["subclasses"], "kd.subclasses", minimum=None)
    if k < 2:
        raise ConfigError(f"kd.subclasses={k}: subclass distillation needs at least 2 subclasses per class; "
                          "with one it is plain Hinton KD, so use the hinton_kd row instead")
    alpha = check_float(kd["alpha"], "kd.alpha")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"kd.alpha={alpha} is outside [0, 1]: it weighs the label loss against the subclass "
                          "KL term (alpha = 1: labels only, 0: teacher only)")
    t = check_float(kd["temperature"], "kd.temperature")
    if not t > 0:
        raise ConfigError(f"kd.temperature={t} must be > 0 (the softmax temperature of the KL term)")
    if not check_float(aux["temperature"], "aux.temperature") > 0:
        raise ConfigError(f"aux.temperature={aux['temperature']} must be > 0")
    if not check_float(aux["weight"], "aux.weight") >= 0:
        raise ConfigError(f"aux.weight={aux['weight']} must be >= 0")
    check_choice(aux["normalize"], "aux.normalize", ("batch", "example"))
    return {"kd": {**kd, **unlabeled_settings(kd), "subclasses": k, "alpha": alpha, "temperature": t},
            "aux": aux}


class SubclassHeadTask(FeatureHeadTask):
    """A ``C*K`` linear head on fixed teacher features: class CE (summed subclass probabilities) plus
    ``aux_weight`` times :func:`subclass_aux_loss`; scored on val by class accuracy and loss."""

    def __init__(self, head: nn.Module, num_classes: int, val: tuple[torch.Tensor, torch.Tensor],
                 aux: Mapping[str, Any]) -> None:
        super().__init__(head, val, to_classes=SubclassPool(num_classes))
        self.aux = dict(aux)

    def training_step(self, batch: Any) -> Any:
        x, y = batch
        z = self.head(x).float()
        ce = F.cross_entropy(self.to_classes(z), y)
        aux = subclass_aux_loss(z, float(self.aux["temperature"]), str(self.aux["normalize"]))
        return ce + float(self.aux["weight"]) * aux, {"ce": ce.detach(), "aux": aux.detach()}


def fit_subclass_teacher(data: LabeledData, cfg: Mapping[str, Any], run_dir: Path,
                         seed: int) -> tuple[Predictor, dict[str, Any]]:
    """The frozen teacher + standardisation + a ``C*K`` subclass head (see module doc, step 1).

    Returns the predictor of subclass logits and the collapse check (:func:`subclass_usage`) on the train views.
    """
    settings = subclass_settings(cfg)
    kd, aux = settings["kd"], settings["aux"]
    k, c = int(kd["subclasses"]), data.num_classes
    device = default_device(cfg)
    teacher = build_teacher(teacher_config(cfg)).to(device)
    bs = int(cfg.get("eval_batch_size", 64))
    x, y = augmented_views(data, int(kd["views"]), seed, bool(cfg.get("augment", True)))
    xva, yva = split_datasets(data, ("val",))["val"].tensors()
    ftr = batched(teacher.features, x, bs).cpu().flatten(1)
    fva = batched(teacher.features, xva, bs).cpu().flatten(1)
    std = Standardize.fitted(ftr)
    head = nn.Linear(ftr.shape[1], c * k)
    head_cfg = {"teacher": teacher.signature, "head": plain(cfg.get("head")), "aux": aux, "subclasses": k,
                "views": int(kd["views"]), "split": data.split.id}
    tc, per_epoch = step_train_config(cfg, seed, section="head", amp=False, channels_last=False)
    task = SubclassHeadTask(head, c, (std(fva), yva), aux)
    train_engine(task, TensorDataset(std(ftr), y), tc, per_epoch, Path(run_dir) / "teacher_head", head_cfg)
    with torch.no_grad():
        usage = subclass_usage(torch.softmax(task.head(std(ftr).to(task.device)).float(), 1).cpu(), c)
    body = nn.Sequential(teacher, nn.Flatten(1), std)
    return Predictor(body, teacher.preprocess, head=task.head, output="scores").to(device).eval(), usage


@METHODS.register("subclass_kd")
class SubclassKD(HintonKD):
    """Student trained on labels and the teacher's subclass distributions (subclass distillation); makes its
    generate run (synthetic faces in the KL term) as ``hinton_kd`` does."""

    def student_name(self, cfg: Mapping[str, Any]) -> str:
        s = student_config(cfg)
        k = subclass_settings(cfg)["kd"]["subclasses"]
        return f"{s['name']}@{s.get('input_size', 64)} <- {teacher_config(cfg)['name']} ({k} subclasses/class)"

    def check(self, data: LabeledData, cfg: Mapping[str, Any]) -> None:
        subclass_settings(cfg)

    def fit(self, data: LabeledData, cfg: Mapping[str, Any], run_dir: Path, seed: int) -> Fitted:
        kd = subclass_settings(cfg)["kd"]
        c, k = data.num_classes, int(kd["subclasses"])
        alpha, temperature = float(kd["alpha"]), float(kd["temperature"])
        teacher, usage = fit_subclass_teacher(data, cfg, run_dir, seed)
        if usage["collapsed"]:
            log.warning("subclass_kd: the teacher leaves %d of %d classes with %d or more of their %d subclasses "
                        "dead (under %.0f%% of the class's probability mass); raise aux.weight or lower "
                        "kd.subclasses", len(usage["collapsed"]), c, k - 1, k, 100 * DEAD_SHARE)

        loss_fn = on_teacher_scores(teacher, lambda s, t, y: subclass_kd_loss(s, t, y, c, alpha, temperature))

        train_set, extra = logit_kd_train_set(data, cfg, teacher, seed, self.synthetic_run)
        student = train_classifier(data, cfg, run_dir, seed, loss_fn=loss_fn, train_set=train_set,
                                   num_outputs=c * k, to_classes=SubclassPool(c))
        side = Predictor(teacher.body, teacher.preprocess, head=nn.Sequential(teacher.head, SubclassPool(c)),
                         output="scores").eval()
        return Fitted(student, self.student_name(cfg),
                      extra={"alpha": alpha, "temperature": temperature, "subclasses": k,
                             "subclasses_used": usage["used"], "subclasses_total": usage["total"],
                             "collapsed_classes": len(usage["collapsed"]), **extra},
                      side_predictors={"teacher": side})
