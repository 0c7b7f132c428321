"""The jobs that chain the stages: the main job (``scripts/demo.py``, on the comparison) and
``scripts/specialize.py`` (the stages directly, on a user's own folder of people).

:func:`main_job` runs the comparison rows of the ``demo`` config (the paper's recipe and facekd's recommended
one, i.e. generate -> distill -> finetune, plus the teacher's linear probe, ResNet-18 from scratch and raw
pixels) through :func:`facekd.baselines.compare.compare_baselines`, so every row shares the split, seeds and
metrics, then draws a t-SNE of the test features of its rows side by side.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from omegaconf import OmegaConf, open_dict

from facekd.baselines.compare import compare_baselines
from facekd.config import compose_config, plain, run_profile
from facekd.data.labeled import prepare_labeled
from facekd.distill.stage import distill
from facekd.errors import ConfigError
from facekd.finetune.stage import finetune
from facekd.pipeline import ensure_generate_run, run_complete
from facekd.plots import plot_tsne
from facekd.runs import read_json, write_json

__all__ = ["main_job", "specialize"]

log = logging.getLogger(__name__)


def _test_features(run_dir: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(Path(run_dir) / "test_features.npz") as z:
        return z["features"], z["labels"]


def main_job(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Run the comparison rows of ``cfg`` and save ``tsne.png`` for ``cfg.tsne``; returns the table rows."""
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
    finetune with the chosen recipe, the stages run directly; prints a short summary (accuracy on the held-out
    photos, the model folder, how to use it) and returns the finetune run.  The run names carry the split's hash,
    so a rerun after the folder changes makes new runs, and a rerun without a change reuses every stage."""
    cfg = plain(cfg)
    root, recipe, s = Path(cfg["paths"]["root"]), str(cfg["recipe"]["name"]), dict(cfg.get("specialize") or {})
    profile = run_profile(cfg)
    common = [f"paths.root={root}", f"device={cfg.get('device', 'auto')}", f"seed={int(cfg.get('seed', 0))}",
              *([f"profile={profile}"] if profile != "default" else [])]
    data = prepare_labeled(cfg["data"], root)
    _check_people(data, cfg["data"])
    tag = f"{s.get('name') or cfg['data'].get('name', 'faces')}-{recipe}-{data.split.id[:8]}"
    progress = bool(cfg.get("progress", True))
    student_run = _specialize_distill(cfg, common, recipe, tag, progress, s)
    fcfg = compose_config("finetune", [*common, f"recipe={recipe}", f"finetune.student_run={student_run}",
                                       f"finetune.name={tag}", "finetune.export_onnx=true",
                                       f"finetune.train.progress={progress}",
                                       *[str(o) for o in s.get("finetune_overrides") or []]])
    with open_dict(fcfg):
        fcfg.data = OmegaConf.create(cfg["data"])
    metrics = finetune(fcfg)
    _print_summary(data, metrics, recipe, root)
    return str(metrics["run_dir"])


def _check_people(data: Any, data_cfg: Mapping[str, Any]) -> None:
    """Refuse a folder where fewer than two people have enough photos, naming the minimum per person."""
    if data.num_classes >= 2:
        return
    need = int(data_cfg.get("per_class", 5)) + int(data_cfg.get("val", 1)) + 1
    raise ConfigError(f"data.root={data_cfg.get('root')}: {data.num_classes} person has enough photos, and a face "
                      f"model needs at least 2. Each person needs at least {need} photos with a face (data.per_class="
                      f"{data_cfg.get('per_class')} to train, data.val={data_cfg.get('val')} to choose the model, and 1 "
                      "to test it); add photos, or lower data.per_class")


def _specialize_distill(cfg: Mapping[str, Any], common: list[str], recipe: str, tag: str, progress: bool,
                        s: Mapping[str, Any]) -> Path:
    """The distill run of this folder and recipe: made (after its generate run) when missing, reused when done."""
    dcfg = compose_config("distill", [*common, f"recipe={recipe}", f"distill.name={tag}", "resume=true",
                                      f"distill.train.progress={progress}",
                                      *[str(o) for o in s.get("distill_overrides") or []]])
    with open_dict(dcfg):
        dcfg.data = OmegaConf.create(cfg["data"])
    run = Path(cfg["paths"]["root"]) / "distill" / tag
    if run_complete(run, "distill"):
        return run
    profile = [o for o in common if o.startswith("profile=")]
    ensure_generate_run(cfg, cfg["paths"]["root"], [*profile, *[str(o) for o in s.get("generate_overrides") or []]],
                        Path(dcfg.distill.generate_run))
    return Path(distill(dcfg))


def _print_summary(data: Any, metrics: Mapping[str, Any], recipe: str, root: Path) -> None:
    """What the user needs: how well the model names their held-out photos, where it is, how to use it."""
    run, test, n = metrics["run_dir"], metrics["test"], metrics["n_images"]
    print(f"\n{data.num_classes} people; {n['train']} photos trained on, {n['val']} to choose the model, "
          f"{n['test']} held out.\n"
          f"held-out photos named right: {100 * test['accuracy']:.1f}% (macro F1 {100 * test['f1_macro']:.1f}%)\n"
          f"model ({recipe} recipe): {run}\n\nname the people in new photos:\n"
          f"  facekd identify identify.model={run} identify.input=PHOTO_OR_FOLDER\n"
          f"or enroll people with no training (a gallery), then identify with it:\n"
          f"  facekd enroll enroll.model={run} enroll.people=FOLDER_OF_PEOPLE\n"
          f"  facekd identify identify.gallery={root / 'galleries' / Path(run).name}.npz identify.input=PHOTO_OR_FOLDER")
