"""Config plumbing shared by every layer: OmegaConf nodes as plain Python containers."""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["plain"]


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
