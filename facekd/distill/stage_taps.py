"""Multi-layer targets for the label-free distill stage: ``distill.taps``.

With ``distill.taps.weight > 0`` the student is trained on

    L = L_feature(embedding) + weight * L_taps

where ``L_feature`` is the ``loss`` group's term on the teacher's vector feature (the embedding tap) and
``L_taps`` a :class:`~facekd.distill.tap_loss.TapLoss` over pairs of intermediate maps (by default the
``stages`` tap sets, one tap per stage of each network, with SKD's Eq. 5 term).  No label is used.  The
teacher's tap targets are computed once per feature cache, on the cache's stored views (the student's input
size, upsampled by the teacher's own preprocessing), and cached per image bytes beside the feature caches
(``<distill.cache_dir>/taps``).  In online and stream mode the teacher's maps are taken by forward hooks from
the very forward pass that scores each batch, pooled to the same grids; their standardisation is fitted once
on the images that set the feature statistics (one seeded view of each image, or the stream's seeded
``stats_faces``).  ``image_mean`` targets are refused with a message (maps are per view).

The adapters train with the student and are saved as ``adapters.safetensors`` in the run folder; the
student file (``student.safetensors``) never holds them.  Each epoch logs every tap term and, on the eval
caches (held-out synthetic faces, real val and test photos), ``<eval>_tap<i>_r2``: R² between the adapted
student map and the standardised teacher map.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from facekd.distill.tap_cache import teacher_tap_targets
from facekd.distill.tap_loss import TapLoss, TapPairError, check_tap_options, parse_pairs, pool_to
from facekd.metrics import RegressionMeter
from facekd.models import Student, Teacher
from facekd.models.taps import FeatureTaps, tap_set, tap_shapes

__all__ = ["DEFAULTS", "tap_settings", "build_tap_loss", "tap_targets_for", "images_of", "fit_target_stats",
           "TapTerm"]

DEFAULTS = {"weight": 0.0, "loss": "skd", "student": "stages", "teacher": "stages", "pairs": None, "beta": 2.0,
            "lipschitz": 1.0, "spectral_iters": 8, "cache_max_gb": 4.0}
FIT_ROWS = 2048  # target statistics from at most this many rows of the first train cache


def tap_settings(d: Mapping[str, Any]) -> dict[str, Any]:
    """``distill.taps`` with defaults, checked; ``weight`` 0 means off."""
    t = {**DEFAULTS, **dict(d.get("taps") or {})}
    if not float(t["weight"]) >= 0:
        raise TapPairError(f"distill.taps.weight must be >= 0 (0 = no multi-layer term), got {t['weight']}")
    check_tap_options(t["beta"], t["lipschitz"], "distill.taps")
    if float(t["weight"]) > 0:
        bad = [n for n, s in (d.get("sources") or {}).items() if (s or {}).get("targets", "view") != "view"
               and float((s or {}).get("weight", 0) or 0) > 0]
        if bad:
            raise TapPairError(f"distill.taps trains on each view's own maps; distill.sources.{bad[0]}.targets must "
                               "be 'view'")
    return t


def build_tap_loss(t: Mapping[str, Any], student: Student, teacher: Teacher) -> TapLoss:
    """The :class:`TapLoss` of the settings for this student and teacher (shapes from dry runs)."""
    s_paths = tap_set(student.name, t["student"], "distill.taps.student")
    t_paths = tap_set(teacher.name, t["teacher"], "distill.taps.teacher")
    pairs = parse_pairs(t["pairs"], s_paths, t_paths, str(t["loss"]), key="distill.taps.pairs")
    s_shapes = tap_shapes(student, [p.student for p in pairs], student.input_size, key="distill.taps.student")
    t_shapes = tap_shapes(teacher, [p.teacher for p in pairs], teacher.preprocess.size, key="distill.taps.teacher")
    beta = float(t["beta"]) if t["beta"] is not None and t["loss"] == "skd" else None
    return TapLoss(pairs, s_shapes, t_shapes, beta=beta, lipschitz=float(t["lipschitz"]),
                   spectral_iters=int(t["spectral_iters"]), key="distill.taps.pairs")


def tap_targets_for(cache: Any, teacher: Teacher, loss: TapLoss, cache_dir: Any, max_gb: float, batch_size: int,
                    progress: bool) -> list[np.ndarray]:
    """Teacher tap targets of every stored view of a feature cache (memory-mapped fp16, one array per pair)."""
    return teacher_tap_targets(teacher, cache if isinstance(cache, torch.Tensor) else images_of(cache), [p.teacher for p in loss.pairs], loss.grids, cache_dir, max_gb,
                               batch_size, progress, key_name="distill.taps.cache_max_gb")


def images_of(cache: Any) -> torch.Tensor:
    """A feature cache's stored views as uint8 ``N x 3 x H x W``."""
    return torch.from_numpy(np.array(cache.images)).permute(0, 3, 1, 2).contiguous()


def fit_target_stats(loss: TapLoss, targets: Sequence[np.ndarray]) -> None:
    rows = np.linspace(0, len(targets[0]) - 1, min(len(targets[0]), FIT_ROWS)).astype(np.int64)
    loss.fit_targets([torch.from_numpy(np.asarray(t[rows], dtype=np.float32)) for t in targets])


class TapTerm(torch.nn.Module):
    """The distill task's multi-layer term: hooks on the student, the tap loss and its weight.

    With ``teacher`` (online and stream mode) hooks on the teacher too: :meth:`teacher_targets` returns its maps
    from its last forward pass, pooled to the pairs' grids, as the cached targets are.
    """

    def __init__(self, loss: TapLoss, student: Student, weight: float, teacher: Teacher | None = None) -> None:
        super().__init__()
        self.loss, self.weight = loss, float(weight)
        self.__dict__["hooks"] = FeatureTaps(student, [p.student for p in loss.pairs], key="distill.taps.student")
        self.__dict__["teacher_hooks"] = (None if teacher is None else FeatureTaps(
            teacher, [p.teacher for p in loss.pairs], detach=True, key="distill.taps.teacher"))

    @torch.no_grad()
    def teacher_targets(self) -> list[torch.Tensor]:
        """Online mode: the teacher's maps of the batch it just scored, one per pair, pooled to its grid."""
        maps = self.teacher_hooks.collect()
        return [pool_to(maps[p.teacher].float(), g) for p, g in zip(self.loss.pairs, self.loss.grids)]

    def forward(self, targets: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted term for the student's last forward pass."""
        total, terms = self.loss(self.hooks.collect(), targets)
        return self.weight * total, {"taps": total.detach(), **terms}

    @torch.no_grad()
    def r2(self, meters: list[RegressionMeter], targets: Sequence[torch.Tensor]) -> None:
        """Update per-pair R² meters (adapted student vs standardised teacher) from the last forward pass."""
        student = self.hooks.collect()
        for meter, p, adapter, norm, t in zip(meters, self.loss.pairs, self.loss.adapters, self.loss.norms, targets):
            meter.update(adapter(student[p.student]).float().flatten(1), norm(t).flatten(1))

    def remove(self) -> None:
        self.hooks.remove()
        if self.teacher_hooks is not None:
            self.teacher_hooks.remove()
