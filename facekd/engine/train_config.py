"""The engine's options (:class:`TrainConfig`), type-checked from a config section."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from facekd.config import plain as _plain
from facekd.errors import ConfigError
from facekd.validate import check_bool, check_float, check_int

__all__ = ["TrainConfig", "check_train_types"]

_TRAIN_INTS = {"epochs": 1, "batch_size": 1, "num_workers": 0, "log_every": 1, "seed": None}
_TRAIN_BOOLS = ("drop_last", "shuffle", "persistent_workers", "amp", "channels_last", "resume", "progress",
                "ddp_find_unused")


def check_train_types(data: Mapping[str, Any], section: str = "train") -> None:
    """Refuse a training option of the wrong type (a boolean or string where a number belongs, ...), naming
    ``<section>.<key>``; values are only checked, never converted, so config hashes stay as they were."""
    for key, minimum in _TRAIN_INTS.items():
        if key in data:
            check_int(data[key], f"{section}.{key}", minimum=minimum)
    if "steps_per_epoch" in data:
        check_int(data["steps_per_epoch"], f"{section}.steps_per_epoch", minimum=1, allow_none=True)
    for key in _TRAIN_BOOLS:
        if key in data:
            check_bool(data[key], f"{section}.{key}")
    if "grad_clip" in data:
        check_float(data["grad_clip"], f"{section}.grad_clip", minimum=0, strict=True, allow_none=True)
    optim = data.get("optim") or {}
    if isinstance(optim, Mapping):
        if "lr" in optim:
            check_float(optim["lr"], f"{section}.optim.lr", minimum=0, strict=True, what="the learning rate")
        for key in ("weight_decay", "momentum"):
            if key in optim:
                check_float(optim[key], f"{section}.optim.{key}", minimum=0)


@dataclass
class TrainConfig:
    """Everything the engine needs; build it from a config section with :meth:`from_config`.

    ``batch_size`` is per process.  ``monitor`` names a key of the epoch row (``train_loss`` or one that
    ``evaluate()`` returns) and ``mode`` says whether smaller (``min``) or larger (``max``) is better.
    ``steps_per_epoch`` is needed only for an iterable without ``len`` and a per-step schedule.
    """

    epochs: int = 1
    batch_size: int = 32
    num_workers: int = 0
    drop_last: bool = True
    shuffle: bool = True
    persistent_workers: bool = False
    optim: dict = field(default_factory=lambda: {"name": "adam", "lr": 1e-3})
    schedule: dict = field(default_factory=lambda: {"name": "constant", "interval": "epoch"})
    grad_clip: float | None = None
    monitor: str = "val_loss"
    mode: str = "min"
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    seed: int = 0
    resume: bool = False
    log_every: int = 20
    progress: bool = True
    steps_per_epoch: int | None = None
    ddp_find_unused: bool = False

    # fields that do not change the result, so a resume may change them
    OPERATIONAL = ("num_workers", "persistent_workers", "device", "resume", "log_every", "progress")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None = None, section: str = "train",
                    **overrides: Any) -> "TrainConfig":
        """The engine's options from a config section (named ``section`` in messages), type-checked."""
        data = {**(_plain(cfg) or {}), **overrides}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown training option(s) {', '.join(f'{section}.{k}' for k in sorted(unknown))}; "
                              f"known: {', '.join(sorted(names))}")
        check_train_types(data, section)
        return cls(**data)

    def __post_init__(self) -> None:
        self.optim, self.schedule = dict(_plain(self.optim)), dict(_plain(self.schedule))
        if self.mode not in ("min", "max"):
            raise ConfigError(f"mode must be 'min' or 'max', got '{self.mode}'")
        if self.monitor.startswith("test"):
            raise ConfigError(f"monitor '{self.monitor}' looks like a test metric; select epochs on validation")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be positive")

    def hashed(self) -> dict:
        """The fields that define the result (what a resumed run must share)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.OPERATIONAL}
