"""Feature distillation as a regulariser of supervised training (SKD, Eq. 6): ``skd``, ``fitnet``, ``at``.

The student is trained on the augmented labeled train split with

    L = CE(student, labels) + lambda / 2 * L_KD

where ``L_KD`` is a :class:`~facekd.distill.tap_loss.TapLoss` over pairs of named taps (student module path,
teacher module path): SKD's Eq. 5 over one tap per stage, a FitNet hint on one layer, or attention transfer.
The teacher is frozen; the adapters train with the student and are saved in the row's run state (not in
the deployed predictor).

Rows (``configs/baseline/``):

* ``skd``: from random init;
* ``distill_bce_finetune_skd``: from the label-free distilled student of the distill stage (``init: distilled``),
  the full recipe: pretrain on synthetic faces without labels, then specialise with labels and the teacher
  as regulariser;
* ``fitnet``, ``at``: the same machinery with other loss terms.

``kd.teacher_mode: cached`` (CPU-friendly): the teacher scores ``kd.views`` fixed views of every train image
(view 0 clean, the others augmented with ``data.augment``, drawn from the seed); its tap targets are cached per
image bytes in ``${paths.root}/cache/teacher_taps``, and the student trains on those fixed views.
``online``: the student trains on freshly augmented views every step, exactly the ``scratch`` row's data, and
the teacher runs on each batch (the target statistics come from 4 cached views per photo).  With ``kd.synthetic.count > 0`` the KD term also draws on that many
unlabeled synthetic faces of the generate run (target-like augmentation); those carry no label, only CE on
the labeled views uses labels.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, Dataset, TensorDataset

from facekd.baselines.base import Fitted, METHODS, Method, Predictor, default_device, plain
from facekd.baselines.common import ImageClassifierTask, seed_augmentation, step_train_config, train_engine
from facekd.baselines.kd_views import augmented_views, synthetic_views
from facekd.baselines.scratch import build_classifier, student_config
from facekd.config import teacher_config
from facekd.data.labeled import LabeledData, split_datasets
from facekd.distill.student_run import load_student
from facekd.distill.tap_cache import teacher_tap_targets
from facekd.distill.tap_loss import TapLoss, TapPairError, check_tap_options, parse_pairs, pool_to
from facekd.models import build_teacher
from facekd.models.base import Teacher
from facekd.models.taps import FeatureTaps, tap_set, tap_shapes
from facekd.pipeline import ensure_distill_run, ensure_generate_run, run_identity

__all__ = ["TapTargets", "CETapsTask", "CETaps", "kd_settings", "UNLABELED"]

UNLABELED = -1


def kd_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The row's ``kd`` section with defaults, checked (errors name the key)."""
    kd = {"loss": "skd", "lambda": 1.0, "beta": 2.0, "lipschitz": 1.0, "spectral_iters": 8, "student_taps": "stages", "teacher_taps": "stages",
          "pairs": None, "views": 24, "cache_max_gb": 4.0, "init": "random", "teacher_mode": "cached",
          **plain(cfg.get("kd") or {})}
    kd["synthetic"] = {"count": 0, "augment": "target_like", "generate_overrides": [], **(kd.get("synthetic") or {})}
    lam = float(kd["lambda"])
    if not lam >= 0:
        raise TapPairError(f"kd.lambda must be >= 0 (the weight of the KD term in L = CE + lambda/2 * L_KD), got {lam}")
    check_tap_options(kd["beta"], kd["lipschitz"], "kd")
    if kd["init"] not in ("random", "distilled"):
        raise TapPairError(f"kd.init must be 'random' or 'distilled', got {kd['init']!r}")
    if kd["teacher_mode"] not in ("cached", "online"):
        raise TapPairError(f"kd.teacher_mode must be 'cached' or 'online', got {kd['teacher_mode']!r}")
    if int(kd["views"]) < 1:
        raise TapPairError(f"kd.views must be >= 1, got {kd['views']}")
    if int(kd["synthetic"]["count"]) < 0:
        raise TapPairError(f"kd.synthetic.count must be >= 0, got {kd['synthetic']['count']}")
    return kd


class TapTargets(Dataset):
    """``(image, label, *tap targets)`` items: uint8 images, labels (``-1`` = unlabeled) and fp16 target arrays."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, targets: Sequence[np.ndarray]) -> None:
        if any(len(t) != len(images) for t in targets) or len(labels) != len(images):
            raise ValueError("images, labels and tap targets must have the same length")
        self.images, self.labels, self.targets = images, labels, list(targets)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple:
        return (self.images[i], self.labels[i], *(torch.from_numpy(np.array(t[i], dtype=np.float32)) for t in self.targets))


class CETapsTask(ImageClassifierTask):
    """Cross-entropy on the labeled items plus ``lambda/2`` times the tap loss on every item; logs each term."""

    def __init__(self, net: nn.Module, preprocess: Any, val: tuple[torch.Tensor, torch.Tensor], kd: TapLoss,
                 student_taps: Sequence[str], lam: float, eval_batch_size: int = 64,
                 teacher: Teacher | None = None) -> None:
        super().__init__(net, preprocess, val, eval_batch_size=eval_batch_size)
        self.kd = kd
        self.lam = float(lam)
        self.taps = FeatureTaps(net, student_taps, key="kd.student_taps")
        self.__dict__["teacher"] = teacher  # online mode: runs every step; never trained or saved
        self.__dict__["teacher_taps"] = (FeatureTaps(teacher, [p.teacher for p in kd.pairs], detach=True,
                                                     key="kd.teacher_taps") if teacher is not None else None)

    @torch.no_grad()
    def teacher_targets(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Online mode: the teacher's tap maps of this batch, pooled onto each pair's grid."""
        if self.teacher.device != images.device:
            self.teacher.to(images.device)
        self.teacher.features(images)
        return [pool_to(t.float(), g) for t, g in zip(self.teacher_taps.collect().values(), self.kd.grids)]

    def training_step(self, batch: Any) -> Any:
        images, labels, *targets = batch
        if not targets:
            targets = self.teacher_targets(images)
        logits = self.net(self.inputs(images)).float()
        student = self.taps.collect()
        labeled = labels != UNLABELED
        ce = F.cross_entropy(logits[labeled], labels[labeled]) if bool(labeled.any()) else logits.sum() * 0
        kd, terms = self.kd(student, targets)
        return ce + self.lam / 2 * kd, {"ce": ce.detach(), "kd": kd.detach(), **terms}

    def evaluate(self) -> dict[str, float]:
        out = super().evaluate()
        self.taps.clear()
        return out


def _distilled_backbone(net: nn.Module, run: Path, device: torch.device) -> None:
    """Copy the distilled student's weights (all but its projection) into the classifier ``net``."""
    student = load_student(run, device="cpu")
    state = {k: v for k, v in student.state_dict().items() if not k.startswith("proj.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("proj.")]:
        raise TapPairError(f"the distilled student in {run} does not fit the row's student network "
                           f"(unexpected {unexpected[:4]}, missing {missing[:4]}); distill the same student")


@METHODS.register("ce_taps")
class CETaps(Method):
    """Student trained on CE + lambda/2 * multi-tap feature KD towards the frozen teacher (see module doc)."""

    uses_teacher = True

    def __init__(self) -> None:
        self.paths_root: Path | None = None
        self.student_run: Path | None = None
        self.synthetic_run: Path | None = None

    def student_name(self, cfg: Mapping[str, Any]) -> str:
        s, kd = student_config(cfg), kd_settings(cfg)
        init = " (distilled init)" if kd["init"] == "distilled" else ""
        return f"{s['name']}@{s.get('input_size', 64)}{init} <- {teacher_config(cfg)['name']} ({kd['loss']})"

    def check(self, data: LabeledData, cfg: Mapping[str, Any]) -> None:
        kd_settings(cfg)

    def prepare(self, data: LabeledData, cfg: Mapping[str, Any], paths_root: str | os.PathLike,
                seed: int = 0) -> dict[str, Any]:
        kd = kd_settings(cfg)
        self.paths_root = Path(paths_root)
        inputs: dict[str, Any] = {}
        if kd["init"] == "distilled":
            dist = {"loss": "bce", "student": student_config(cfg)["name"], **plain(cfg.get("distill") or {}),
                    "device": cfg.get("device", "auto"), "progress": cfg.get("progress", True)}
            self.student_run = ensure_distill_run(dist, data.cfg, paths_root, seed, data.split.id)
            inputs["distill"] = run_identity(self.student_run, "distill")
        if int(kd["synthetic"]["count"]) > 0:
            self.synthetic_run = ensure_generate_run(cfg, paths_root, kd["synthetic"].get("generate_overrides") or [])
            inputs["generate"] = run_identity(self.synthetic_run, "generate")
        return inputs

    def fit(self, data: LabeledData, cfg: Mapping[str, Any], run_dir: Path, seed: int) -> Fitted:
        kd = kd_settings(cfg)
        device = default_device(cfg)
        progress = bool(cfg.get("progress", True))
        teacher = build_teacher(teacher_config(cfg)).to(device)
        net, pre = build_classifier(student_config(cfg), data.num_classes)
        if kd["init"] == "distilled":
            _distilled_backbone(net, self.student_run, device)
        s_name, t_name = student_config(cfg)["name"], teacher.name
        s_paths = tap_set(s_name, kd["student_taps"], "kd.student_taps")
        t_paths = tap_set(t_name, kd["teacher_taps"], "kd.teacher_taps")
        pairs = parse_pairs(kd["pairs"], s_paths, t_paths, str(kd["loss"]))
        s_shapes = tap_shapes(net, [p.student for p in pairs], pre.size, key="kd.student_taps")
        t_shapes = tap_shapes(teacher, [p.teacher for p in pairs], teacher.preprocess.size, key="kd.teacher_taps")
        loss = TapLoss(pairs, s_shapes, t_shapes, beta=None if kd["beta"] is None or kd["loss"] != "skd" else float(kd["beta"]),
                       lipschitz=float(kd["lipschitz"]), spectral_iters=int(kd["spectral_iters"]))

        online = kd["teacher_mode"] == "online"
        # cached: the teacher's maps of `views` fixed views per photo; online: of 4 views, for the target statistics
        images, labels = augmented_views(data, 4 if online else int(kd["views"]), seed, bool(cfg.get("augment", True)))
        if self.synthetic_run is not None:
            syn = synthetic_views(self.synthetic_run, int(kd["synthetic"]["count"]), kd["synthetic"]["augment"],
                                  images.shape[-1], seed)
            images = torch.cat([images, syn])
            labels = torch.cat([labels, torch.full((len(syn),), UNLABELED, dtype=labels.dtype)])
        cache_dir = self.paths_root / "cache" / "teacher_taps" if self.paths_root else Path(run_dir) / "teacher_taps"
        targets = teacher_tap_targets(teacher, images, [p.teacher for p in pairs], loss.grids, cache_dir,
                                      float(kd["cache_max_gb"]), int(cfg.get("eval_batch_size", 64)), progress)
        loss.fit_targets([torch.from_numpy(np.asarray(t[labels.numpy() != UNLABELED], dtype=np.float32))
                          for t in targets])

        sets = split_datasets(data, ("train", "val") if online else ("val",),
                              augment_train=bool(cfg.get("augment", True)))
        if online:  # fresh augmented views every step, exactly the scratch row's data; the teacher runs on each
            train_set: Dataset = seed_augmentation(sets["train"], seed)
            if self.synthetic_run is not None:
                syn = labels == UNLABELED
                train_set = ConcatDataset([train_set, TensorDataset(images[syn], labels[syn])])
        else:
            train_set = TapTargets(images, labels, targets)
            teacher = None
        tc, per_epoch = step_train_config(cfg, seed)
        task = CETapsTask(net, pre, sets["val"].tensors(), loss, [p.student for p in pairs],
                                      float(kd["lambda"]), int(cfg.get("eval_batch_size", 64)), teacher=teacher)
        train_engine(task, train_set, tc, per_epoch, run_dir, {"method": cfg, "split": data.split.id})
        task.taps.remove()
        if task.teacher_taps is not None:
            task.teacher_taps.remove()
        extra = {"kd_loss": kd["loss"], "lambda": float(kd["lambda"]), "teacher_mode": kd["teacher_mode"],
                 "views": None if online else int(kd["views"]),
                 "pairs": [f"{p.student}->{p.teacher}" for p in pairs], "init": kd["init"],
                 "synthetic": int(kd["synthetic"]["count"]),
                 "student_params": sum(p.numel() for p in task.net.parameters()),
                 "adapter_params": sum(p.numel() for p in loss.parameters())}
        if self.student_run is not None:
            extra["student_run"] = str(self.student_run)
        return Fitted(Predictor(task.net, pre, output="scores").eval(), self.student_name(cfg), extra=extra)


