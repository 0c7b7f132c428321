"""Finetune: a linear head on the frozen distilled student (or the whole student, gently), trained on a few
labeled images per person.

``finetune(cfg)`` runs the stage (``python scripts/finetune.py``); :func:`load_finetuned` reads a finished
run's specialized model back.  See :mod:`facekd.finetune.stage` for what the run folder holds.  The names below
are loaded from their modules on first use, so importing one submodule never imports the whole stage.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOME = {"finetune": "stage", "load_finetuned": "stage", "run_dir_for": "stage", "ONNX_INPUT_SPEC": "exports",
         "FinetuneSettings": "settings", "SpecializedModel": "model", "FeatureNorm": "model", "Preprocessed": "model",
         "HeadTask": "task", "classification_loss": "task"}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'facekd.finetune' has no attribute {name!r}")
    return getattr(importlib.import_module(f"facekd.finetune.{_HOME[name]}"), name)
