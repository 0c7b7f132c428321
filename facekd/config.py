"""Config plumbing shared by every layer: OmegaConf nodes as plain Python containers, and the comparison rows.

A comparison row is one file, ``configs/baseline/<row>.yaml``: :func:`register_rows` lists the folder and
registers the Hydra config ``rows``, which places every row file at ``baselines.<row>`` (the comparison's
configs include it), so a new row needs no other edit.  :data:`ROW_ALIASES` keeps the rows' former names.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["CONFIGS", "ROW_ALIASES", "DEFAULT_TEACHER", "teacher_config", "plain", "run_profile", "row_names",
           "register_rows", "canonical_row", "compose_config"]

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ROW_DIR = CONFIGS / "baseline"

# former row names -> the names that say what the row does (0.1.0 renames; the old names still run, with a notice)
ROW_ALIASES: dict[str, str] = {
    "transfer": "teacher_probe",
    "kd_labels": "hinton_kd",
    "feature_kd_mse": "distill_mse_probe",
    "feature_kd_bce": "distill_bce_probe",
    "feature_kd_bce_skd": "distill_bce_maps_probe",
    "feature_kd_bce_unfrozen": "distill_bce_finetune_samelr",
    "feature_kd_bce_unfrozen_lr01": "distill_bce_finetune",
    "feature_kd_bce_mixup": "distill_bce_mixup_probe",
    "feature_kd_bce_mixup_lr01": "distill_bce_mixup_finetune",
    "feature_kd_bce_mixup_cosface": "distill_bce_mixup_finetune_cosface",
    "feature_kd_bce_mixup_cosface_hold": "distill_bce_mixup_finetune_cosface_hold",
    "feature_kd_bce_mixup_lr01_mobilefacenet": "distill_bce_mixup_finetune_mobilefacenet",
    "skd": "ce_skd",
    "skd_distilled": "distill_bce_finetune_skd",
    "fitnet": "ce_fitnet",
    "at": "ce_at",
}


def row_names() -> list[str]:
    """Every registered comparison row: the files ``configs/baseline/*.yaml``, sorted."""
    return sorted(p.stem for p in ROW_DIR.glob("*.yaml"))


def register_rows() -> None:
    """Register the Hydra config ``rows``: a defaults list placing each row file at ``baselines.<row>``."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="rows", node={"defaults": [{f"baseline@baselines.{r}": r} for r in row_names()]})


def compose_config(config_name: str, overrides: Sequence[str] = (), hydra_config: bool = False) -> Any:
    """Compose the primary config ``configs/<config_name>.yaml`` with Hydra overrides.

    Works inside a running Hydra app (reusing its initialisation) and outside one.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_rows()
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_config)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_config)


def canonical_row(name: str) -> str:
    """``name``, or the row it was renamed to (with a one-line notice)."""
    new = ROW_ALIASES.get(name)
    if new is None:
        return name
    log.warning("row '%s' is now called '%s'; the old name still works for now", name, new)
    return new


def plain(cfg: Any) -> Any:
    """An OmegaConf node (or any mapping / sequence) as plain Python containers, interpolations resolved.

    Mappings come back as new dicts, so callers may change them freely; anything else is returned as is.
    """
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(cfg, Mapping):
        return {k: plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [plain(v) for v in cfg]
    return cfg


DEFAULT_TEACHER = {"name": "sface", "feature": "embedding"}


def teacher_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A row's ``teacher`` section (the comparison injects its own; default: the embedded SFace, 128-d embedding)."""
    return dict(plain(cfg.get("teacher")) or DEFAULT_TEACHER)


def run_profile(cfg: Any = None) -> str:
    """The ``profile`` group chosen for this run (``default``, ``smoke``, ``gpu`` or ``gpu_stream``).

    Read from Hydra's record of the run's choices; outside a Hydra run, from ``cfg["run_profile"]``
    (tests), else ``default``.
    """
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return str(HydraConfig.get().runtime.choices.get("profile") or "default")
    except ImportError:  # pragma: no cover
        pass
    return str((cfg or {}).get("run_profile") or "default") if isinstance(cfg, Mapping) else "default"
