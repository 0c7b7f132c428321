"""Finetune: a linear head on the frozen distilled student, trained on a few labeled images per person.

``finetune(cfg)`` runs the stage (``python scripts/finetune.py``); :func:`load_finetuned` reads a finished
run's specialized model back.  See :mod:`facekd.finetune.stage` for what the run folder holds.
"""
from facekd.finetune.model import FeatureNorm, Preprocessed, SpecializedModel
from facekd.finetune.stage import ONNX_INPUT_SPEC, FinetuneSettings, finetune, load_finetuned, run_dir_for
from facekd.finetune.task import HeadTask, classification_loss

__all__ = ["finetune", "load_finetuned", "run_dir_for", "FinetuneSettings", "SpecializedModel", "FeatureNorm",
           "Preprocessed", "HeadTask", "classification_loss", "ONNX_INPUT_SPEC"]
