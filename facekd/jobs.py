"""The jobs built on the comparison: the main job (``scripts/demo.py``) and ``scripts/specialize.py``.

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

from facekd.baselines.compare import compare_baselines
from facekd.config import plain
from facekd.errors import ConfigError
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
    finetune through the comparison's first row that makes a finetune run, score it on the held-out photos,
    record the run in ``<out_dir>/model.json`` and print the ``identify`` command.  Returns the finetune run."""
    cfg = plain(cfg)
    compare_baselines(cfg)
    out_dir = Path(cfg["out_dir"])
    results = read_json(out_dir / "results.json")["results"]
    runs = [(row, seeds[0]["extra"]["finetune_run"]) for row, seeds in results.items()
            if seeds and (seeds[0].get("extra") or {}).get("finetune_run")]
    if not runs:
        raise ConfigError(f"methods={cfg.get('methods')} makes no finetune run, so there is no model to identify "
                          "with; keep a distilled row (distill_bce_probe, the default) in methods")
    row, run = runs[0]
    write_json(out_dir / "model.json", {"row": row, "finetune_run": run})
    print(f"model ({row}): {run}\nenroll people (no training) and name the faces in new photos with:\n"
          f"  python scripts/enroll.py enroll.model={run} enroll.people=FOLDER_OF_PEOPLE\n"
          f"  python scripts/identify.py identify.gallery={Path(cfg['paths']['root']) / 'galleries' / Path(run).name}.npz "
          f"identify.input=PHOTO_OR_FOLDER\nor with its classifier (the people it was trained on):\n"
          f"  python scripts/identify.py identify.model={run} identify.input=PHOTO_OR_FOLDER")
    return run
