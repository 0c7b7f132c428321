"""Config plumbing shared by every layer: OmegaConf nodes as plain Python containers."""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["plain", "run_profile"]


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
