"""Distillation on named feature taps: per-pair adapters and a weighted sum of per-pair loss terms.

A *pair* links a student tap to a teacher tap (:mod:`facekd.models.taps`)::

    {student: backbone.layer3, teacher: net.body.conv_12, weight: 1.0, loss: mse}

**Alignment rule.**  Maps (``C x H x W``) pair with maps and vectors with vectors; anything else is refused.
The common grid of a map pair is the smaller grid in each dimension: the larger map is average-pooled onto
it (``adaptive_avg_pool2d``).  Teacher maps are pooled once, when they are computed (so the cache holds them
at the common grid); student maps are pooled in the adapter.  A pair whose grids are not ordered (one is
taller, the other wider) has no alignment and is refused.

**Adapters** (:class:`TapAdapter`) map the student's channels onto the teacher's: ``1x1 conv + BN`` for maps,
``Linear`` for vectors.  They train with the student, are saved with the run's state (``kd.adapters.*``) and
are not part of the deployed model.  Attention transfer compares channel-free attention maps, so its pairs
need no channel adapter (``adapter: none``).

**Teacher targets are standardised** per channel with fixed statistics of the training targets
(:class:`~facekd.models.standardize.Standardize`, channelwise), so a term's size does not depend on the teacher layer's scale.

**Loss terms** (``loss`` of a pair, registry :data:`TAP_TERMS`):

* ``mse`` / ``fitnet``: mean squared error between adapted student and target (FitNets' hint loss);
* ``cosine``: ``1 - cos`` per sample (vectors or flattened maps);
* ``bce``: sigmoid-BCE of the adapted student logits against ``sigmoid(target)`` (label-free BCE);
* ``at``: attention transfer (Zagoruyko & Komodakis): ``|| a_s/|a_s| - a_t/|a_t| ||^2`` with
  ``a = mean_c F_c^2`` flattened, on the aligned grid;
* ``skd``: the SKD paper's Eq. 5 term ``||FM_T - FM_S||^2 + lipschitz * | ||TM_T||_SN - ||TM_S||_SN |``.
  The transmitting matrix of a map is its ``C x HW`` matrix per sample, and ``||.||_SN`` its spectral norm
  (``torch.linalg.matrix_norm(ord=2)``, or ``spectral_iters`` power iterations: much cheaper, same value).  Both parts are normalised by size (the squared norm by the number
  of elements, the spectral norm by its square root) so taps of different sizes are comparable.

:class:`TapLoss` sums ``weight_i * term_i`` and returns the total with every term for logging.  With
``beta`` set (SKD), pair ``i`` of ``L`` (1-based, bottom to top) is divided by ``beta^(L-1-i)``: the top pair
gets weight ``beta``, each lower pair ``beta`` times less.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from facekd.models.standardize import Standardize
from facekd.errors import FacekdError
from facekd.registry import Registry

__all__ = ["TapPair", "TapPairError", "TAP_TERMS", "common_grid", "pool_to", "TapAdapter",
           "TapLoss", "skd_weights", "attention_map", "spectral_norms", "parse_pairs"]


class TapPairError(FacekdError, ValueError):
    """A pair of taps that cannot be aligned or a loss option out of range."""


# Per-pair loss terms by name: ``term(student, target, lipschitz=..., spectral_iters=...) -> scalar``.
TAP_TERMS: Registry[Callable[..., torch.Tensor]] = Registry("loss term")


@dataclass(frozen=True)
class TapPair:
    student: str
    teacher: str
    weight: float = 1.0
    loss: str = "mse"
    adapter: str = "conv"  # conv (1x1 conv + BN / Linear) | none (shapes must already agree in channels)


def parse_pairs(spec: Sequence[Mapping[str, Any]] | None, student_taps: Sequence[str], teacher_taps: Sequence[str],
                loss: str, key: str = "kd.pairs") -> list[TapPair]:
    """Explicit ``pairs`` or, when empty, the student and teacher tap sets zipped (same length required)."""
    if spec:
        out = []
        for i, p in enumerate(spec):
            p = dict(p)
            if "student" not in p or "teacher" not in p:
                raise TapPairError(f"{key}[{i}] needs 'student' and 'teacher' module paths, got {p}")
            term = str(p.get("loss", loss))
            out.append(TapPair(str(p["student"]), str(p["teacher"]), float(p.get("weight", 1.0)), term,
                               str(p.get("adapter", "none" if term == "at" else "conv"))))
        return out
    if len(student_taps) != len(teacher_taps):
        raise TapPairError(f"{key}: the student tap set has {len(student_taps)} taps and the teacher's "
                           f"{len(teacher_taps)}; give equally long sets or list the pairs explicitly")
    return [TapPair(s, t, 1.0, loss, "none" if loss == "at" else "conv") for s, t in zip(student_taps, teacher_taps)]


def common_grid(s_shape: Sequence[int], t_shape: Sequence[int], key: str = "kd.pairs") -> tuple[int, ...] | None:
    """The grid both maps are pooled to (``None`` for a vector pair); refuses shapes no rule aligns."""
    s_shape, t_shape = tuple(s_shape), tuple(t_shape)
    if len(s_shape) == 1 and len(t_shape) == 1:
        return None
    if len(s_shape) != 3 or len(t_shape) != 3:
        raise TapPairError(f"{key}: cannot align a student tap of shape {s_shape} with a teacher tap of shape "
                           f"{t_shape}; pair maps (C x H x W) with maps and vectors with vectors")
    (sh, sw), (th, tw) = s_shape[1:], t_shape[1:]
    if (sh - th) * (sw - tw) < 0:
        raise TapPairError(f"{key}: student grid {sh}x{sw} and teacher grid {th}x{tw} are not ordered (one is "
                           "taller, the other wider), so neither can be pooled onto the other; pick taps whose "
                           "grids nest")
    return (min(sh, th), min(sw, tw))


def pool_to(x: torch.Tensor, grid: tuple[int, ...] | None) -> torch.Tensor:
    """Average-pool a ``B x C x H x W`` map onto ``grid`` (a no-op when it already has it, or for vectors)."""
    if grid is None or tuple(x.shape[-2:]) == tuple(grid):
        return x
    return F.adaptive_avg_pool2d(x, grid)


class TapAdapter(nn.Module):
    """Student tap -> the teacher tap's channels on the common grid (see module doc)."""

    def __init__(self, s_shape: Sequence[int], t_shape: Sequence[int], kind: str = "conv", key: str = "kd.pairs") -> None:
        super().__init__()
        self.grid = common_grid(s_shape, t_shape, key)
        cs, ct = int(s_shape[0]), int(t_shape[0])
        if kind == "none":
            if self.grid is None and cs != ct:
                raise TapPairError(f"{key}: adapter 'none' needs equal vector sizes, got {cs} and {ct}")
            self.map: nn.Module = nn.Identity()
        elif kind == "conv":
            if self.grid is None:
                self.map = nn.Linear(cs, ct)
            else:
                self.map = nn.Sequential(nn.Conv2d(cs, ct, 1, bias=False), nn.BatchNorm2d(ct))
        else:
            raise TapPairError(f"{key}: adapter must be 'conv' or 'none', got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grid is None:
            return self.map(x.flatten(1))
        return self.map(pool_to(x, self.grid))


def attention_map(x: torch.Tensor) -> torch.Tensor:
    """Attention transfer's map: ``mean_c x_c^2`` flattened and L2-normalised per sample."""
    return F.normalize(x.float().pow(2).mean(1).flatten(1), dim=1)


def spectral_norms(x: torch.Tensor, iters: int = 0) -> torch.Tensor:
    """Per-sample spectral norm of the ``C x HW`` transmitting matrix of a map (``C x 1`` for a vector).

    ``iters=0``: exact (``torch.linalg.matrix_norm(ord=2)``, an SVD per sample).  ``iters>0``: that many
    power iterations without gradient, then ``sigma = |M v|`` with the found ``v`` (whose gradient is the exact
    one at convergence); feature maps have a well separated top singular value, so a few iterations suffice,
    at a fraction of the SVD's cost.
    """
    m = x.float().flatten(2) if x.dim() == 4 else x.float().unsqueeze(-1)
    if iters <= 0 or m.shape[-1] == 1:
        return torch.linalg.matrix_norm(m, ord=2)
    with torch.no_grad():
        v = F.normalize(m.abs().sum(1) + 1e-6, dim=1)
        for _ in range(int(iters)):
            u = F.normalize(torch.bmm(m, v.unsqueeze(-1)).squeeze(-1), dim=1)
            v = F.normalize(torch.bmm(m.transpose(1, 2), u.unsqueeze(-1)).squeeze(-1), dim=1)
    return torch.bmm(m, v.unsqueeze(-1)).squeeze(-1).norm(dim=1)


@TAP_TERMS.register("mse")
@TAP_TERMS.register("fitnet")
def _mse(s: torch.Tensor, t: torch.Tensor, **_: Any) -> torch.Tensor:
    return F.mse_loss(s.float(), t)


@TAP_TERMS.register("cosine")
def _cosine(s: torch.Tensor, t: torch.Tensor, **_: Any) -> torch.Tensor:
    return (1 - F.cosine_similarity(s.float().flatten(1), t.flatten(1), dim=1)).mean()


@TAP_TERMS.register("bce")
def _bce(s: torch.Tensor, t: torch.Tensor, **_: Any) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(s.float(), torch.sigmoid(t))


@TAP_TERMS.register("at")
def _at(s: torch.Tensor, t: torch.Tensor, **_: Any) -> torch.Tensor:
    if s.dim() != 4:
        raise TapPairError("attention transfer ('at') needs map taps (C x H x W), got a vector tap")
    return (attention_map(s) - attention_map(t)).pow(2).sum(1).mean()


@TAP_TERMS.register("skd")
def _skd(s: torch.Tensor, t: torch.Tensor, lipschitz: float = 1.0, spectral_iters: int = 0, **_: Any) -> torch.Tensor:
    s = s.float()
    fm = F.mse_loss(s, t)
    if lipschitz == 0:
        return fm
    scale = float(s[0].numel()) ** 0.5
    sn = (spectral_norms(t, spectral_iters) - spectral_norms(s, spectral_iters)).abs().mean() / scale
    return fm + lipschitz * sn


def check_tap_options(beta: float | None, lipschitz: float, prefix: str) -> None:
    """Refuse ``beta <= 1`` (SKD weights higher layers more; ``None`` = equal weights) and ``lipschitz < 0``."""
    if beta is not None and not float(beta) > 1:
        raise TapPairError(f"{prefix}.beta must be > 1 (SKD weights higher layers more: 1/beta^(L-1-i)), got {beta}; "
                           f"use {prefix}.beta=null for equal weights")
    if not float(lipschitz) >= 0:
        raise TapPairError(f"{prefix}.lipschitz must be >= 0, got {lipschitz}")


def skd_weights(n: int, beta: float) -> list[float]:
    """Eq. 5's layer weights ``1 / beta^(L-1-i)`` for ``i = 1..L`` (bottom to top)."""
    if not beta > 1:
        raise TapPairError(f"kd.beta must be > 1 (SKD weights the top layers more), got {beta}")
    return [float(beta) ** -(n - 1 - i) for i in range(1, n + 1)]


class TapLoss(nn.Module):
    """Weighted sum of per-pair terms over adapted student taps and (aligned) teacher targets.

    ``forward(student_taps, targets)`` takes the student's tap outputs by module path and the teacher
    targets in pair order (already pooled to each pair's grid); returns ``(total, {"kd/<term>/<i>": value})``.
    """

    def __init__(self, pairs: Sequence[TapPair], student_shapes: Mapping[str, Sequence[int]],
                 teacher_shapes: Mapping[str, Sequence[int]], beta: float | None = None, lipschitz: float = 1.0,
                 spectral_iters: int = 0, key: str = "kd.pairs") -> None:
        super().__init__()
        if lipschitz < 0:
            raise TapPairError(f"kd.lipschitz must be >= 0, got {lipschitz}")
        unknown = sorted({p.loss for p in pairs} - set(TAP_TERMS.names()))
        if unknown:
            raise TapPairError(f"{key}: unknown loss term(s) {', '.join(unknown)}; "
                               f"choose from {', '.join(TAP_TERMS.names())}")
        if not pairs:
            raise TapPairError(f"{key}: no tap pairs to distill")
        self.pairs = list(pairs)
        self.lipschitz = float(lipschitz)
        self.spectral_iters = int(spectral_iters)
        self.adapters = nn.ModuleList(TapAdapter(student_shapes[p.student], teacher_shapes[p.teacher], p.adapter,
                                                 f"{key}[{i}] ({p.student} -> {p.teacher})")
                                      for i, p in enumerate(self.pairs))
        self.norms = nn.ModuleList(Standardize(int(teacher_shapes[p.teacher][0]), eps=1e-4, channelwise=True)
                                   for p in self.pairs)
        layer = skd_weights(len(self.pairs), beta) if beta is not None else [1.0] * len(self.pairs)
        self.weights = [p.weight * w for p, w in zip(self.pairs, layer)]

    @property
    def grids(self) -> list[tuple[int, ...] | None]:
        """The common grid of each pair: teacher targets must be pooled to it (:func:`pool_to`)."""
        return [a.grid for a in self.adapters]

    @torch.no_grad()
    def fit_targets(self, targets: Sequence[torch.Tensor]) -> "TapLoss":
        """Fix the per-channel target statistics from (a sample of) the aligned training targets."""
        for norm, t in zip(self.norms, targets):
            norm.fit(t)
        return self

    def forward(self, student: Mapping[str, torch.Tensor], targets: Sequence[torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = torch.zeros((), device=targets[0].device)
        terms: dict[str, torch.Tensor] = {}
        for i, (p, adapter, norm, w) in enumerate(zip(self.pairs, self.adapters, self.norms, self.weights)):
            s = adapter(student[p.student])
            t = norm(targets[i])
            value = TAP_TERMS.get(p.loss)(s, t, lipschitz=self.lipschitz, spectral_iters=self.spectral_iters)
            terms[f"kd/{p.loss}/{i}"] = value.detach()
            total = total + w * value
        return total, terms
