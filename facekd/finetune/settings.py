"""The ``finetune`` config section, checked: :class:`FinetuneSettings` (see ``configs/finetune.yaml`` for each key).

:meth:`FinetuneSettings.hashed` is what the finetune stage's resume check hashes: every key that changes the
trained head, whatever its value (the keys of :data:`_OPERATIONAL` are left out).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from facekd.config import plain as _plain
from facekd.errors import ConfigError
from facekd.finetune.hold import check_hold
from facekd.finetune.int8 import check_int8
from facekd.finetune.model import FEATURES, NORMS
from facekd.finetune.task import LOSSES
from facekd.openset import check_far

__all__ = ["DEFAULT_FAR", "TIES", "FinetuneSettings"]

DEFAULT_FAR = 0.01

# how epochs that tie on the monitored val metric are told apart (val sets hold one image per identity)
TIES = ("lower_val_loss", "earliest")

# keys of the finetune section that do not change the result (left out of the resume hash)
# (open_set: the threshold is calibrated after training, so it never changes the trained head)
_OPERATIONAL = ("name", "export_onnx", "parity_images", "parity_atol", "card_repeats", "eval_batch_size", "plots",
                "open_set", "int8")
_TRAIN_DEFAULTS = {"epochs": 200, "batch_size": 16, "drop_last": False, "optim": {"name": "adam", "lr": 1e-2},
                   "schedule": {"name": "inv_sqrt", "interval": "epoch"}, "resume": True}


@dataclass(frozen=True)
class FinetuneSettings:
    """The ``finetune`` config section, checked (see ``configs/finetune.yaml`` for each key)."""

    student_run: str
    name: str | None = None
    expected_teacher: dict | None = None
    features: str = "embed"
    feature_norm: str = "standardize"
    loss: str = "bce"
    augment: bool = False
    unfreeze: bool = False
    backbone_lr_scale: float = 0.1
    monitor: str = "val_f1_macro"
    ties: str = "lower_val_loss"
    eval_batch_size: int = 64
    export_onnx: bool = True
    parity_images: int = 8
    parity_atol: float = 1e-3
    card_repeats: int = 20
    plots: bool = True
    open_set: dict = field(default_factory=lambda: {"far": DEFAULT_FAR})
    int8: dict = field(default_factory=dict)
    hold: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = [(self.features in FEATURES, f"finetune.features must be one of {FEATURES}, got {self.features!r}"),
                  (self.feature_norm in NORMS, f"finetune.feature_norm must be one of {NORMS}, got {self.feature_norm!r}"),
                  (self.loss in LOSSES, f"finetune.loss must be one of {LOSSES}, got {self.loss!r}"),
                  (self.backbone_lr_scale > 0, f"finetune.backbone_lr_scale must be > 0, got {self.backbone_lr_scale}"),
                  (self.monitor.startswith("val_"), f"finetune.monitor must be a val metric (val_f1_macro, "
                                                    f"val_accuracy, val_loss, ...), got {self.monitor!r}"),
                  (self.ties in TIES, f"finetune.ties must be one of {TIES}, got {self.ties!r}"),
                  (self.parity_images >= 1, "finetune.parity_images must be >= 1"),
                  (bool(self.student_run), "finetune.student_run must name a distill run folder")]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        if self.name is not None and (not self.name or "/" in self.name or self.name in (".", "..")):
            raise ValueError(f"finetune.name must be a plain folder name, got {self.name!r}")
        if not isinstance(self.open_set, Mapping) or set(self.open_set) - {"far"}:
            raise ConfigError(f"finetune.open_set must be a mapping with the key far, got {self.open_set!r}; set it "
                              "like finetune.open_set.far=0.01")
        check_far(self.open_set.get("far", DEFAULT_FAR), "finetune.open_set.far")
        object.__setattr__(self, "int8", check_int8(self.int8))
        object.__setattr__(self, "hold", check_hold(self.hold, self.unfreeze))
        if self.int8["enabled"] and not self.export_onnx:
            raise ConfigError("finetune.int8.enabled=true quantizes the exported ONNX models, but "
                              "finetune.export_onnx=false; set finetune.export_onnx=true or finetune.int8.enabled=false")
        if self.expected_teacher is not None and not isinstance(self.expected_teacher, Mapping):
            raise ValueError("finetune.expected_teacher must be null or a mapping of teacher signature fields, "
                             "e.g. {name: sface, feature: embedding}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "FinetuneSettings":
        sec = dict(_plain(section))
        known = set(cls.__dataclass_fields__)
        unknown = set(sec) - known
        if unknown:
            raise ValueError(f"unknown finetune keys {sorted(unknown)}; known: {sorted(known)}")
        sec["train"] = {**_TRAIN_DEFAULTS, **dict(sec.get("train") or {})}
        return cls(**sec)

    @property
    def mode(self) -> str:
        return "min" if self.monitor.endswith("loss") else "max"

    @property
    def select_key(self) -> str:
        """The key the engine selects on: ``val_select`` (monitor, ties to the lower val loss) or the monitor."""
        return "val_select" if self.ties == "lower_val_loss" and self.mode == "max" else self.monitor

    @property
    def precomputed(self) -> bool:
        """The fast path: frozen backbone and no augmentation, so features are computed once."""
        return not (self.augment or self.unfreeze)

    @property
    def far(self) -> float:
        """The false-accept rate the open-set threshold is calibrated to."""
        return float(self.open_set.get("far", DEFAULT_FAR))

    def default_name(self, data_name: str, unknown_identities: int = 0) -> str:
        name = f"{data_name}-{Path(self.student_run).name}-{self.loss}"
        return (name + ("-aug" if self.augment else "") + ("-unfrozen" if self.unfreeze else "")
                + (f"-open{int(unknown_identities)}" if unknown_identities else ""))

    def hashed(self) -> dict:
        """The section as the resume check hashes it: every key that changes the trained head (all of them but
        :data:`_OPERATIONAL`), whatever its value."""
        return {k: v for k, v in asdict(self).items() if k not in _OPERATIONAL}
