"""Stage orchestration: the main job, and the stage runs a comparison row needs, made through their own configs.

Stages talk only through run folders.  A row that needs a distill (or generate) run asks
:func:`ensure_distill_run` / :func:`ensure_generate_run`: a finished run folder is returned as is; a
missing one is made by the stage itself, from its own primary config (``configs/<stage>.yaml``, composed
by :func:`facekd.cli.compose_config`) plus the row's overrides, exactly as the stage's script would.

:func:`main_job` runs the comparison rows of the ``demo`` config (by default the distilled student,
i.e. generate -> distill -> finetune, plus the teacher's linear probe, ResNet-18 from scratch and raw
pixels) through :func:`facekd.baselines.compare.compare_baselines`, so every row shares the split,
seeds and metrics.  It then draws a t-SNE of the test features of two rows side by side.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from facekd.cli import compose_config
from facekd.config import plain
from facekd.errors import ConfigError
from facekd.runs import RunError, read_json, read_manifest, write_json

__all__ = ["main_job", "specialize", "run_complete", "run_identity", "ensure_distill_run", "ensure_generate_run",
           "augment_preset"]

log = logging.getLogger(__name__)


def _test_features(run_dir: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(Path(run_dir) / "test_features.npz") as z:
        return z["features"], z["labels"]


def main_job(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Run the comparison rows of ``cfg`` and save ``tsne.png`` for ``cfg.tsne``; returns the table rows."""
    from facekd.baselines.compare import compare_baselines
    from facekd.plots import plot_tsne

    cfg = plain(cfg)
    t0 = time.perf_counter()
    rows = compare_baselines(cfg)
    out_dir = Path(cfg["out_dir"])
    results = read_json(out_dir / "results.json")["results"]
    sets = {}
    for row in cfg.get("tsne") or []:
        if row not in results:
            log.warning("t-SNE: row %s is not in this comparison; skipped", row)
            continue
        run_dir = results[row][0]["run_dir"]
        try:
            sets[row] = _test_features(run_dir)
        except FileNotFoundError:
            log.warning("t-SNE: %s saved no test features; skipped", run_dir)
    if len(sets) >= 1:
        plot_tsne(sets, out_dir / "tsne.png", seed=int(cfg.get("seed", 0)))
    wall = round(time.perf_counter() - t0, 1)
    write_json(out_dir / "wall_time.json", {"seconds": wall})
    print(f"main job finished in {wall / 60:.1f} min; table, CSV, accuracy chart and t-SNE in {out_dir}")
    return rows


def specialize(cfg: Mapping[str, Any]) -> str:
    """A model for a user's own folder of people (``configs/specialize.yaml``): align, generate, distill and
    finetune through the comparison's first row that makes a finetune run, score it on the held-out photos,
    record the run in ``<out_dir>/model.json`` and print the ``identify`` command.  Returns the finetune run."""
    from facekd.baselines.compare import compare_baselines

    cfg = plain(cfg)
    compare_baselines(cfg)
    out_dir = Path(cfg["out_dir"])
    results = read_json(out_dir / "results.json")["results"]
    runs = [(row, seeds[0]["extra"]["finetune_run"]) for row, seeds in results.items()
            if seeds and (seeds[0].get("extra") or {}).get("finetune_run")]
    if not runs:
        raise ConfigError(f"methods={cfg.get('methods')} makes no finetune run, so there is no model to identify "
                          "with; keep a feature_kd row (feature_kd_bce, the default) in methods")
    row, run = runs[0]
    write_json(out_dir / "model.json", {"row": row, "finetune_run": run})
    print(f"model ({row}): {run}\nenroll people (no training) and name the faces in new photos with:\n"
          f"  python scripts/enroll.py enroll.model={run} enroll.people=FOLDER_OF_PEOPLE\n"
          f"  python scripts/identify.py identify.gallery={Path(cfg['paths']['root']) / 'galleries' / Path(run).name}.npz "
          f"identify.input=PHOTO_OR_FOLDER\nor with its classifier (the people it was trained on):\n"
          f"  python scripts/identify.py identify.model={run} identify.input=PHOTO_OR_FOLDER")
    return run


def run_complete(run_dir: Path, stage: str) -> bool:
    """Whether ``run_dir`` holds a finished run of ``stage`` (a manifest marked complete)."""
    try:
        read_manifest(run_dir, stage, complete=True)
        return True
    except RunError:
        return False


def run_identity(run_dir: str | os.PathLike, stage: str) -> dict[str, Any]:
    """What a finished run is, for the cache key of whatever reads it: its config hash and the sha256 of
    every artifact its manifest records, so a run remade with the same config but other bytes counts as new."""
    manifest = read_manifest(run_dir, stage, complete=True)
    artifacts = manifest.get("artifacts") or {}
    return {"config_hash": manifest.get("config_hash"),
            "artifacts": {name: (rec or {}).get("sha256") for name, rec in sorted(artifacts.items())}}


def ensure_distill_run(cfg: Mapping[str, Any], data_cfg: Mapping[str, Any], paths_root: str | os.PathLike,
                       seed: int = 0) -> Path:
    """The finished distill run of this row and seed; runs generate and distill first when allowed (see
    module doc)."""
    from omegaconf import OmegaConf, open_dict

    from facekd.baselines.feature_kd import row_teacher, student_run_path

    run = student_run_path(cfg, paths_root, seed)
    if run_complete(run, "distill"):
        return run
    loss, student = cfg.get("loss", "bce"), cfg.get("student", "resnet18")
    if not cfg.get("run_missing", True) or cfg.get("student_run"):
        raise RunError(f"feature_kd ({loss}) needs a finished distill run at {run}; make it with "
                       f"`python scripts/generate.py paths.root={paths_root}` then `python scripts/distill_features.py "
                       f"loss={loss} student={student} paths.root={paths_root} seed={int(seed)} "
                       f"distill.name={run.name}` (or set run_missing: true)")
    device = str(cfg.get("device", "auto"))
    common = [f"paths.root={paths_root}", f"device={device}"]
    progress = bool(cfg.get("progress", True))
    teacher = row_teacher(cfg)
    dcfg = compose_config("distill", [f"loss={loss}", f"student={student}", f"teacher={teacher['name']}",
                                            "resume=true", *common,
                                            f"distill.train.progress={progress}",
                                            f"seed={int(seed)}", f"distill.name={run.name}",
                                            *plain(cfg.get("distill_overrides") or [])])
    with open_dict(dcfg):
        dcfg.data = OmegaConf.create(plain(data_cfg))
        dcfg.teacher = OmegaConf.merge(dcfg.teacher, OmegaConf.create(teacher))
    ensure_generate_run(cfg, paths_root, plain(cfg.get("generate_overrides") or []), Path(dcfg.distill.generate_run))
    from facekd.distill.stage import distill

    log.info("feature_kd: distilling %s with the %s loss first (%s)", student, loss, run)
    made = Path(distill(dcfg))
    if made.resolve() != run.resolve():
        raise RunError(f"the distill stage wrote {made}, expected {run}; set student_run to it")
    return run


def ensure_generate_run(cfg: Mapping[str, Any], paths_root: str | os.PathLike, overrides: Sequence[str] = (),
                        run: Path | None = None) -> Path:
    """The finished generate run ``run`` (default: the distill config's ``distill.generate_run``); runs the
    generate stage (``configs/generate.yaml`` plus ``overrides``) when it is missing."""
    common = [f"paths.root={paths_root}", f"device={cfg.get('device', 'auto')}"]
    if run is None:
        run = Path(compose_config("distill", common).distill.generate_run)
    if run_complete(run, "generate"):
        return run
    from facekd.generators import generate

    gcfg = compose_config("generate", [*common, f"generate.progress={bool(cfg.get('progress', True))}",
                                             *[str(o) for o in overrides]])
    log.info("generating the synthetic faces first (%s)", run)
    made = generate(gcfg)
    if Path(made).resolve() != Path(run).resolve():
        raise RunError(f"the generate stage wrote {made}, but the distill config reads {run}; "
                       "align generate.name and distill.generate_run")
    return Path(run)


def augment_preset(spec: Any) -> tuple[Any, Any]:
    """``(steps, albumentations pipeline)`` of a preset name of ``distill.augment_presets`` or a list of steps."""
    from facekd.data.augment import build_augmentation

    if isinstance(spec, str):
        presets = plain(compose_config("distill", []).distill.augment_presets)
        if spec not in presets:
            raise ConfigError(f"unknown augmentation preset {spec!r}; presets: {', '.join(presets)}")
        spec = presets[spec]
    steps = plain(spec)
    return steps, build_augmentation(steps)
