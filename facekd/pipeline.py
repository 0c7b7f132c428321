"""Stage orchestration: the stage runs a comparison row needs, made through their own configs.

Stages talk only through run folders.  A row that needs a distill (or generate) run asks
:func:`ensure_distill_run` / :func:`ensure_generate_run`: a finished run folder is returned as is; a
missing one is made by the stage itself, from its own primary config (``configs/<stage>.yaml``, composed
by :func:`facekd.cli.compose_config`) plus the row's overrides, exactly as the stage's script would.
The jobs built on the comparison (the main job, specialize) live in :mod:`facekd.jobs`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from facekd.config import compose_config, plain, teacher_config
from facekd.data.augment import build_augmentation
from facekd.distill.stage import distill
from facekd.errors import ConfigError
from facekd.generators import generate
from facekd.runs import RunError, config_hash, read_manifest

__all__ = ["distill_name", "student_run_path", "run_complete", "run_identity", "ensure_distill_run",
           "ensure_generate_run", "augment_preset"]

log = logging.getLogger(__name__)


def distill_name(cfg: Mapping[str, Any], seed: int = 0, split_id: str | None = None) -> str:
    """The distill run folder name of this row and seed: ``<student>-<loss>-<teacher>`` (the distill stage's default
    name), plus ``-<hash>`` of the row's ``distill_overrides`` when it has any (rows distilled differently
    never share a folder), plus ``-split<8 characters>`` of the split the row distills on, when given (rows of two
    splits in one ``paths.root`` never share a folder: a student may have seen the other split's test photos),
    plus ``-seed<k>`` for seed k > 0."""
    name = f"{cfg.get('student', 'resnet18')}-{cfg.get('loss', 'bce')}-{teacher_config(cfg)['name']}"
    overrides = [str(o) for o in plain(cfg.get("distill_overrides") or [])]
    if overrides:
        name += "-" + config_hash(sorted(overrides))[:8]
    if split_id:
        name += f"-split{str(split_id)[:8]}"
    return name if int(seed) == 0 else f"{name}-seed{int(seed)}"


def student_run_path(cfg: Mapping[str, Any], paths_root: str | os.PathLike, seed: int = 0,
                     split_id: str | None = None) -> Path:
    """``student_run`` when given (one student for every seed), else this seed's own distill run on ``split_id``."""
    run = cfg.get("student_run")
    if run:
        return Path(run)
    return Path(paths_root) / "distill" / distill_name(cfg, seed, split_id)


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
                       seed: int = 0, split_id: str | None = None) -> Path:
    """The finished distill run of this row and seed on the split ``split_id`` (the split ``data_cfg`` makes);
    runs generate and distill first when allowed (see module doc)."""
    from omegaconf import OmegaConf, open_dict

    run = student_run_path(cfg, paths_root, seed, split_id)
    if run_complete(run, "distill"):
        return run
    loss, student = cfg.get("loss", "bce"), cfg.get("student", "resnet18")
    if not cfg.get("run_missing", True) or cfg.get("student_run"):
        raise RunError(f"distilled ({loss}) needs a finished distill run at {run}; make it with "
                       f"`python scripts/generate.py paths.root={paths_root}` then `python scripts/distill.py "
                       f"loss={loss} student={student} paths.root={paths_root} seed={int(seed)} "
                       f"distill.name={run.name}` (or set run_missing: true)")
    device = str(cfg.get("device", "auto"))
    common = [f"paths.root={paths_root}", f"device={device}"]
    progress = bool(cfg.get("progress", True))
    teacher = teacher_config(cfg)
    overrides = plain(cfg.get("distill_overrides") or [])
    recipe = [] if any(str(o).startswith("recipe=") for o in overrides) else ["recipe=paper"]  # rows pin the paper's
    dcfg = compose_config("distill", [*recipe, f"loss={loss}", f"student={student}", f"teacher={teacher['name']}",
                                            "resume=true", *common,
                                            f"distill.train.progress={progress}",
                                            f"seed={int(seed)}", f"distill.name={run.name}", *overrides])
    with open_dict(dcfg):
        dcfg.data = OmegaConf.create(plain(data_cfg))
        dcfg.teacher = OmegaConf.merge(dcfg.teacher, OmegaConf.create(teacher))
    ensure_generate_run(cfg, paths_root, plain(cfg.get("generate_overrides") or []), Path(dcfg.distill.generate_run))
    log.info("distilled: distilling %s with the %s loss first (%s)", student, loss, run)
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
    if isinstance(spec, str):
        presets = plain(compose_config("distill", []).distill.augment_presets)
        if spec not in presets:
            raise ConfigError(f"unknown augmentation preset {spec!r}; presets: {', '.join(presets)}")
        spec = presets[spec]
    steps = plain(spec)
    return steps, build_augmentation(steps)
