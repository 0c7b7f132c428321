"""``distilled``: the paper's method as a comparison row, taken from the distill and finetune stages.

The row reads a finished distill run (``student_run``, default ``${paths.root}/distill/<student>-<loss>-<teacher>``,
the distill stage's own default folder, for seed 0 and ``<student>-<loss>-<teacher>-seed<k>`` distilled with
``seed=k`` for seed k, so the spread over seeds includes the distillation's; a row with
``distill_overrides`` gets ``<student>-<loss>-<teacher>-<hash of them>[-seed<k>]``; a given ``student_run`` is
shared by every seed and only the head is reseeded) and runs the finetune stage on it under the shared split
(:func:`facekd.finetune.finetune`, into ``${paths.root}/finetune/<this row's run folder name>``); the
finetuned model (frozen student + norm + linear head) is then scored like every other row.

When the distill run is missing and ``run_missing`` is true, :func:`facekd.pipeline.ensure_distill_run` runs the
distill stage first with its
own config (``configs/distill.yaml`` with ``loss=<loss> student=<student>``, the same ``data`` and
``paths.root``, plus ``distill_overrides``), and before it the generate stage when its run is missing
(``configs/generate.yaml`` plus ``generate_overrides``).  With ``run_missing: false`` a missing run is
an error that names the commands to run.  The distill run's identity (config hash and the student file's
sha256) is part of this row's cache key, so a redistilled student is finetuned again.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

from omegaconf import OmegaConf

from facekd.baselines.base import Features, Fitted, METHODS, Method, Predictor, default_device, plain
from facekd.config import CONFIGS, compose_config, teacher_config
from facekd.data.labeled import LabeledData
from facekd.errors import UnknownNameError
from facekd.finetune import Preprocessed, finetune, load_finetuned
from facekd.pipeline import ensure_distill_run, run_identity
from facekd.runs import read_manifest

__all__ = ["Distilled"]

log = logging.getLogger(__name__)


@METHODS.register("distilled")
class Distilled(Method):
    """Distilled student (distill stage) + linear head (finetune stage), scored under the shared split."""

    uses_teacher = True

    def __init__(self) -> None:
        self.student_run: Path | None = None

    def student_name(self, cfg: Mapping[str, Any]) -> str:
        return f"{cfg.get('student', 'resnet18')} distilled ({cfg.get('loss', 'bce')})"

    def resolve(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """A row with ``recipe: NAME`` runs that recipe (``configs/recipe/``) as the stages do: its distill run
        gets ``recipe=NAME`` before the row's ``distill_overrides`` (unless they name one; rows distill with the
        paper's by default), and its finetune section is the finetune stage's under ``recipe=NAME`` with the
        row's own ``finetune`` keys laid over it."""
        name = cfg.get("recipe")
        if not name:
            return cfg
        known = sorted(p.stem for p in (CONFIGS / "recipe").glob("*.yaml"))
        if name not in known:
            raise UnknownNameError(f"the row's recipe '{name}' is unknown; recipes (configs/recipe/): "
                                   f"{', '.join(known)}")
        stage = plain(compose_config("finetune", [f"recipe={name}"])["finetune"])
        for key in ("student_run", "name"):  # the row sets these itself
            stage.pop(key, None)
        section = OmegaConf.to_container(OmegaConf.merge(stage, plain(cfg.get("finetune") or {})), resolve=True)
        overrides = plain(cfg.get("distill_overrides") or [])
        if name != "paper" and not any(str(o).startswith("recipe=") for o in overrides):  # paper: the rows' default
            overrides = [f"recipe={name}", *overrides]
        return {**cfg, "finetune": section, "distill_overrides": overrides}

    def prepare(self, data: LabeledData, cfg: Mapping[str, Any], paths_root: str | os.PathLike,
                seed: int = 0) -> dict[str, Any]:
        self.paths_root = Path(paths_root)
        self.student_run = ensure_distill_run(cfg, data.cfg, paths_root, seed, data.split.id)
        return {"student_run": str(self.student_run), "distill": run_identity(self.student_run, "distill")}

    def fit(self, data: LabeledData, cfg: Mapping[str, Any], run_dir: Path, seed: int) -> Fitted:
        if self.student_run is None:
            raise RuntimeError("distilled.fit needs prepare() first (run_method calls it)")
        section = {**plain(cfg.get("finetune") or {}), "student_run": str(self.student_run), "name": run_dir.name,
                   "expected_teacher": {k: v for k, v in teacher_config(cfg).items() if k in ("name", "feature")}}
        ft_cfg = {"finetune": section, "data": plain(data.cfg), "paths": {"root": str(self.paths_root)},
                  "seed": int(seed), "device": str(cfg.get("device", "auto"))}
        metrics = finetune(ft_cfg)
        model, _ = load_finetuned(metrics["run_dir"], default_device(cfg))
        body = Preprocessed(model)
        card = {k: metrics[k] for k in ("params", "mflops", "cpu_ms_per_img", "cpu_share", "load1", "busy") if k in metrics}
        distill = read_manifest(self.student_run, "distill", complete=True)
        extra = {"student_run": str(self.student_run), "finetune_run": metrics["run_dir"],
                 "finetune_best_epoch": metrics.get("best_epoch")}
        best = distill.get("best") or {}
        for k in ("holdout_r2", "real_val_r2", "real_test_r2"):  # R² of student vs teacher features (distill stage)
            if k in best:
                extra[f"distill_{k}"] = best[k]
        extra["uses_labels"] = bool(distill.get("uses_labels", False))
        if metrics.get("int8"):  # finetune.int8.enabled: the int8 copies' parity and test accuracy
            extra["int8"] = metrics["int8"]
        if metrics.get("deployed"):  # the exported ONNX files, timed under onnxruntime (batch 1, one thread)
            extra["deployed"] = metrics["deployed"]
        extra["embedding"] = f"{self.student_name(cfg)}, {model.features} features"
        embedder = Predictor(Features(model, "extract"), model.preprocess, output="embedding").eval()
        own = {"val": metrics["val"], "test": metrics["test"],
               **({"open_set": metrics["open_set"]} if "open_set" in metrics else {})}
        return Fitted(Predictor(body, model.preprocess, output="scores").eval(), self.student_name(cfg),
                      extra=extra, card=card, embedder=embedder, scores=own)
