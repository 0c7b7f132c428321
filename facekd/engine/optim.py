"""The optimizer and learning-rate schedule, built from config (including the paper's ``lr / sqrt(1 + t)``)."""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

import torch

from facekd.config import plain as _plain
from facekd.errors import ConfigError

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "SCHEDULES"]

_OPTIM_KEYS = {"sgd": {"lr", "weight_decay", "momentum", "nesterov"},
               "adam": {"lr", "weight_decay", "betas", "eps"},
               "adamw": {"lr", "weight_decay", "betas", "eps"}}


def build_optimizer(params: Iterable[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """An optimizer from ``{"name": sgd|adam|adamw, "lr", "weight_decay", "momentum" (sgd), ...}``.

    ``params`` are parameters, or param groups (dicts); a group's ``lr_scale`` multiplies ``lr`` (e.g. a
    smaller rate for an unfrozen backbone).  Defaults: weight_decay 0, SGD momentum 0.9.
    """
    cfg = dict(_plain(cfg))
    name = str(cfg.pop("name", "adam")).lower()
    if name not in _OPTIM_KEYS:
        raise ConfigError(f"unknown optimizer '{name}'; known optimizers: {', '.join(sorted(_OPTIM_KEYS))}")
    unknown = set(cfg) - _OPTIM_KEYS[name]
    if unknown:
        raise ConfigError(f"optimizer '{name}' has no option(s) {', '.join(sorted(unknown))}; "
                          f"its options: {', '.join(sorted(_OPTIM_KEYS[name]))}")
    if "lr" not in cfg:
        raise ConfigError(f"optimizer '{name}' needs an lr")
    lr = float(cfg.pop("lr"))
    cfg["weight_decay"] = float(cfg.get("weight_decay", 0.0))
    if "betas" in cfg:
        cfg["betas"] = tuple(cfg["betas"])
    plain, groups = [], []
    for g in params:
        if isinstance(g, Mapping):
            g = dict(g)
            g["lr"] = float(g.get("lr", lr * float(g.pop("lr_scale", 1.0))))
            g["params"] = [p for p in g["params"] if p.requires_grad]
            if g["params"]:
                groups.append(g)
        elif g.requires_grad:
            plain.append(g)
    if plain:
        groups.insert(0, {"params": plain, "lr": lr})
    if not groups:
        raise ValueError("no trainable parameters: every parameter has requires_grad=False")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(cfg.get("momentum", 0.9)),
                               nesterov=bool(cfg.get("nesterov", False)), weight_decay=cfg["weight_decay"])
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, **cfg)


SCHEDULES = ("constant", "inv_sqrt", "cosine", "step")


def lr_factor(cfg: Mapping[str, Any], total: int) -> Callable[[int], float]:
    """The multiplier of the base lr after ``t`` schedule units (epochs or steps), ``total`` units in all.

    - ``constant``: 1.
    - ``inv_sqrt``: ``1 / sqrt(1 + t)``, the paper's diminishing step size ``lr_t = lr / sqrt(1 + t)``; the
      paper counts ``t`` in **epochs** (``interval: epoch``), starting at 0.
    - ``cosine``: from 1 down to ``min_factor`` (default 0) over ``total`` units.
    - ``step``: ``gamma ** (t // step_size)``.
    ``warmup: W`` (units) ramps linearly up to the schedule over the first W units.
    """
    cfg = dict(_plain(cfg))
    name = cfg.get("name", "constant")
    warmup = int(cfg.get("warmup", 0))
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule '{name}'; known schedules: {', '.join(SCHEDULES)}")
    unknown = set(cfg) - {"name", "interval", "warmup", "min_factor", "gamma", "step_size"}
    if unknown:
        raise ConfigError(f"schedule '{name}' has no option(s) {', '.join(sorted(unknown))}")
    min_factor, gamma, step_size = float(cfg.get("min_factor", 0.0)), float(cfg.get("gamma", 0.1)), \
        int(cfg.get("step_size", 30))

    def base(t: int) -> float:
        if name == "inv_sqrt":
            return 1.0 / math.sqrt(1.0 + t)
        if name == "cosine":
            span = max(1, total - warmup)
            return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(t, span) / span))
        if name == "step":
            return gamma ** (t // step_size)
        return 1.0

    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / (warmup + 1) * base(0)
        return base(t - warmup)

    return factor


def build_scheduler(opt: torch.optim.Optimizer, cfg: Mapping[str, Any], steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` from ``{"name": constant|inv_sqrt|cosine|step, "interval": epoch|step, ...}``.

    With ``interval: epoch`` (default, the paper's) call ``step()`` once per epoch, with ``interval: step``
    once per optimizer step; the :class:`~facekd.engine.Trainer` does so.  See :func:`lr_factor` for the shapes.
    """
    cfg = dict(_plain(cfg))
    interval = cfg.get("interval", "epoch")
    if interval not in ("epoch", "step"):
        raise ConfigError(f"schedule interval must be 'epoch' or 'step', got '{interval}'")
    total = epochs if interval == "epoch" else epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, total))
