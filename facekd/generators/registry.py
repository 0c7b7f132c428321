"""The generator registry: ``generator=<name>`` in the config picks one of these builders."""
from __future__ import annotations

from facekd.registry import Registry

__all__ = ["GENERATORS"]

GENERATORS: Registry = Registry("generator", "facekd.generators")
