"""The main job: the whole method on one labeled set, beside its references, as one table.

:func:`main_job` runs the comparison rows of the ``demo`` config (by default the distilled student,
i.e. generate -> distill -> finetune, plus the teacher's linear probe, ResNet-18 from scratch and raw
pixels) through :func:`facekd.baselines.compare.compare_baselines`, so every row shares the split,
seeds and metrics.  It then draws a t-SNE of the test features of two rows side by side.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from facekd.baselines.base import plain
from facekd.baselines.compare import compare_baselines
from facekd.plots import plot_tsne
from facekd.runs import read_json, write_json

__all__ = ["main_job"]

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
