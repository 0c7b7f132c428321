"""``finetune.hold``: keep the student's embedding near the teacher's on unlabeled faces while it is fine-tuned.

Fine-tuning the whole student on a few labeled people reshapes its embedding around them; on people it never
trained on the embedding gets worse (results/enroll-gallery.md).  With ``finetune.hold.weight`` > 0 every
training step adds ``weight`` times the student's own distillation loss (the distill run's loss, e.g. sigmoid-BCE
on standardized teacher features) on a batch of synthetic faces, so the student keeps mapping faces where the
teacher maps them:

* the faces: ``hold.faces`` faces spread over the student's generate run, shown as the labeled photos are
  (square at ``data.image_size``, grey when the photos are grey), never a labeled photo;
* their targets: the teacher's features of those faces, computed once when the run starts;
* the loss's feature statistics: those of the same teacher features.

Only an unfrozen student (``finetune.unfreeze=true``) can move, so only it takes the term.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from torch import nn

from facekd.distill.losses import FeatureStats, build_loss
from facekd.errors import ConfigError
from facekd.finetune.synthetic import student_synthetic_faces
from facekd.models import build_teacher

__all__ = ["HOLD_DEFAULTS", "HoldTerm", "check_hold", "build_hold"]

log = logging.getLogger(__name__)

HOLD_DEFAULTS = {"weight": 0.0, "faces": 1000, "batch_size": 32}
KEY = "finetune.hold"


def check_hold(section: Mapping[str, Any] | None, unfreeze: bool) -> dict[str, Any]:
    """The ``finetune.hold`` section with defaults filled in; unknown keys and bad values are refused by name."""
    sec = dict(section or {})
    unknown = sorted(set(sec) - set(HOLD_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown {KEY} key(s) {', '.join(unknown)}; it accepts: {', '.join(HOLD_DEFAULTS)}")
    out = {**HOLD_DEFAULTS, **sec}
    if not (isinstance(out["weight"], (int, float)) and out["weight"] >= 0):
        raise ConfigError(f"{KEY}.weight must be >= 0 (0 = off), got {out['weight']!r}")
    for k in ("faces", "batch_size"):
        if not (isinstance(out[k], int) and out[k] >= 1):
            raise ConfigError(f"{KEY}.{k} must be a positive integer, got {out[k]!r}")
    if out["weight"] > 0 and not unfreeze:
        raise ConfigError(f"{KEY}.weight={out['weight']} holds an unfrozen student near the teacher, but "
                          "finetune.unfreeze=false (a frozen student cannot move); set finetune.unfreeze=true or "
                          f"{KEY}.weight=0")
    return out


class HoldTerm(nn.Module):
    """``weight * loss(student.embed(faces), teacher features)`` on a random batch of held faces per call."""

    def __init__(self, faces: torch.Tensor, targets: torch.Tensor, loss: nn.Module, weight: float, batch_size: int,
                 seed: int = 0) -> None:
        super().__init__()
        if len(faces) != len(targets) or len(faces) == 0:
            raise ValueError(f"hold: {len(faces)} faces for {len(targets)} targets")
        self.faces, self.targets, self.loss = faces, targets, loss
        self.weight, self.batch_size = float(weight), int(batch_size)
        self.generator = torch.Generator().manual_seed(int(seed))

    def forward(self, student: nn.Module, preprocess: Any, device: torch.device) -> torch.Tensor:
        idx = torch.randint(len(self.faces), (min(self.batch_size, len(self.faces)),), generator=self.generator)
        x = preprocess(self.faces[idx].to(device, non_blocking=True))
        return self.weight * self.loss(student.embed(x), self.targets[idx].to(device, non_blocking=True))


def _loss_config(student_manifest: Mapping[str, Any]) -> dict[str, Any]:
    cfg = dict(((student_manifest.get("config") or {}).get("loss")) or {})
    if cfg.get("paper_connector") or student_manifest.get("metric_space", "teacher") != "teacher":
        raise ConfigError(f"{KEY}.weight > 0 needs a label-free student (its output in the teacher's feature "
                          "space); this one was distilled through the paper's label-trained connector. Set "
                          f"{KEY}.weight=0 or distill with loss.paper_connector=false")
    for k in ("connector", "paper_connector"):
        cfg.pop(k, None)
    return cfg


def build_hold(student_manifest: Mapping[str, Any], section: Mapping[str, Any], image_size: int, grey: bool,
               seed: int) -> HoldTerm | None:
    """The hold term of a run (None when ``weight`` is 0): faces from the student's generate run, their teacher
    features (the teacher the student was distilled from) and the distill run's loss."""
    if not float(section["weight"]) > 0:
        return None
    loss_cfg = _loss_config(student_manifest)
    faces = torch.from_numpy(student_synthetic_faces(student_manifest, int(section["faces"]), image_size, grey, KEY,
                                                     spread=True))
    teacher = build_teacher((student_manifest.get("config") or {}).get("teacher") or {"name": "sface"})
    with torch.no_grad():
        targets = torch.cat([teacher.features(faces[i:i + 64]).cpu() for i in range(0, len(faces), 64)])
    stats = FeatureStats.from_batches([targets])
    log.info("finetune.hold: %d synthetic faces with %s features, weight %g", len(faces), teacher.name,
             float(section["weight"]))
    return HoldTerm(faces, targets, build_loss(loss_cfg, stats), float(section["weight"]),
                    int(section["batch_size"]), seed)
