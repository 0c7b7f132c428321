"""The distilled student's quality against the number of synthetic faces it saw (stream mode).

For each point ``N`` of ``curve.faces`` the comparison row ``curve.row`` (a ``distilled`` row: distill, then
a linear head) runs with its distill stage in stream mode: ``curve.epochs`` epochs, each drawing at least
``ceil(N / epochs)`` new generator faces (``distill.samples_per_epoch`` is set to the shortest whole number of
batches whose weighted share for the synthetic source is that count; the other sources, such as the labeled
train views, keep their weights), the teacher scoring every batch.  The student of the **last** epoch is
finetuned (``distill.train.monitor=epoch``), so the student at point ``N`` has seen ``N`` faces, rounded up to
whole epochs and batches; the exact count is reported (``faces_seen``).  Every point and seed is a
cached comparison result, so a longer curve reruns only its new points.

Reported per point: the finetuned test accuracy (mean ± std over seeds) and the student's R² against the
teacher's features on the real val and test photos and on held-out synthetic faces.  Written to
``curve.out_dir``: ``curve.csv``, ``curve.json`` and ``curve.png``.
"""
from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from facekd.baselines.base import MethodResult, run_method
from facekd.baselines.compare import _seeds, row_config
from facekd.config import canonical_row, compose_config, plain, run_profile
from facekd.data.labeled import prepare_labeled
from facekd.distill.batches import mixture_counts
from facekd.distill.sources import active_source_weights
from facekd.errors import ConfigError
from facekd.plots import _figure, _save
from facekd.runs import atomic_path, write_json
from facekd.validate import check_int

__all__ = ["curve_points", "point_overrides", "samples_for", "summarize_point", "plot_curve", "scale_curve"]

log = logging.getLogger(__name__)

R2_KEYS = ("real_val_r2", "real_test_r2", "holdout_r2")
CSV_FIELDS = ["faces", "faces_seen", "faces_per_epoch", "seeds", "accuracy_mean", "accuracy_std",
              *[f"{k}_{s}" for k in R2_KEYS for s in ("mean", "std")]]


def curve_points(curve: Mapping[str, Any]) -> tuple[list[int], int]:
    """``(sorted distinct face counts, epochs)`` of the ``curve`` section, checked (errors name the key)."""
    faces = curve.get("faces")
    if not isinstance(faces, (list, tuple)) or not faces:
        raise ConfigError(f"curve.faces must be a non-empty list of face counts, e.g. [2000,20000]; got {faces!r}")
    for n in faces:
        check_int(n, "curve.faces[]", minimum=1)
    epochs = curve.get("epochs", 6)
    check_int(epochs, "curve.epochs", minimum=1)
    if min(faces) < int(epochs):
        raise ConfigError(f"curve.faces has {min(faces)}, fewer faces than curve.epochs={epochs}: every epoch needs "
                          "at least one new face; lower curve.epochs or raise the count")
    return sorted({int(n) for n in faces}), int(epochs)


def samples_for(per_epoch: int, weights: Sequence[float], index: int = 0, batch_size: int = 1) -> int:
    """The shortest epoch length, a multiple of ``batch_size`` (the engine keeps whole batches only), whose weighted
    share (:func:`mixture_counts`) for source ``index`` is at least ``per_epoch``."""
    w = np.asarray(weights, dtype=np.float64)
    total = max(per_epoch, int(math.floor(per_epoch * w.sum() / w[index])) - 1)
    while mixture_counts(total, w)[index] < per_epoch:
        total += 1
    return -(-total // int(batch_size)) * int(batch_size)


def _distill_plan(row_cfg: Mapping[str, Any], paths_root: Any) -> tuple[list[float], int]:
    """The weights of the distill sources the row's distill run will use (synthetic first) and its batch size
    (a dry compose of the distill config with the row's overrides)."""
    d = plain(compose_config("distill", ["recipe=paper", f"paths.root={paths_root}", *plain(row_cfg.get("distill_overrides") or [])]))
    weights = active_source_weights(d["distill"]["sources"])
    if "synthetic" not in weights:
        raise ConfigError("curve: the synthetic source has weight 0 in the row's distill config, so no face is seen; "
                          "drop distill.sources.synthetic.weight=0 from curve.overrides")
    return list(weights.values()), int(d["distill"]["train"]["batch_size"])


def point_overrides(faces: int, epochs: int, weights: Sequence[float], batch_size: int = 1) -> tuple[list[str], int]:
    """The distill overrides of one point, and the synthetic faces each of its epochs draws."""
    wanted = -(-int(faces) // int(epochs))
    total = samples_for(wanted, weights, 0, batch_size)
    per_epoch = int(mixture_counts(total, weights)[0])
    return ([f"distill.train.epochs={epochs}", "distill.teacher_mode=online", "distill.sources.synthetic.mode=stream",
             f"distill.sources.synthetic.stream.faces_per_epoch={per_epoch}", f"distill.samples_per_epoch={total}",
             "distill.train.monitor=epoch", "distill.train.mode=max"], per_epoch)


def summarize_point(faces: int, per_epoch: int, epochs: int, results: Sequence[MethodResult]) -> dict[str, Any]:
    """Mean and std over seeds (population std) of one point's accuracy and distill R²."""
    out: dict[str, Any] = {"faces": int(faces), "faces_seen": int(per_epoch) * int(epochs),
                           "faces_per_epoch": int(per_epoch), "seeds": len(results)}
    acc = np.array([r.accuracy for r in results], dtype=float)
    out["accuracy_mean"], out["accuracy_std"] = float(acc.mean()), float(acc.std())
    for k in R2_KEYS:
        vals = [r.extra[f"distill_{k}"] for r in results if f"distill_{k}" in r.extra]
        if vals:
            out[f"{k}_mean"], out[f"{k}_std"] = float(np.mean(vals)), float(np.std(vals))
    return out


def _faces_axis(ax: Any, x: np.ndarray) -> None:
    """A log x axis labelled at the points only."""
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(x, [f"{int(v):,}" for v in x])
    ax.set_xlabel("synthetic faces seen (log)")


def plot_curve(points: Sequence[Mapping[str, Any]], path: str | Path, title: str = "",
               references: Mapping[str, float] | None = None) -> Path:
    """Two panels against faces seen (log x): R² on real val / test and holdout; finetuned test accuracy."""
    fig = _figure(10.0, 4.0)
    x = np.array([p["faces_seen"] for p in points], dtype=float)
    ax = fig.add_subplot(1, 2, 1)
    for k, label in zip(R2_KEYS, ("real val photos", "real test photos", "held-out synthetic faces")):
        if all(f"{k}_mean" in p for p in points):
            ax.errorbar(x, [p[f"{k}_mean"] for p in points], yerr=[p[f"{k}_std"] for p in points], marker="o",
                        capsize=3, label=label)
    _faces_axis(ax, x)
    ax.set_ylabel("R² vs the teacher's features")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(1, 2, 2)
    ax.errorbar(x, [100 * p["accuracy_mean"] for p in points], yerr=[100 * p["accuracy_std"] for p in points],
                marker="o", capsize=3, color="tab:blue", label="distilled student + linear head")
    for (name, value), color in zip((references or {}).items(), ("tab:green", "tab:red", "tab:grey")):
        ax.axhline(100 * value, linestyle="--", linewidth=1, color=color, label=name)
    _faces_axis(ax, x)
    ax.set_ylabel("test accuracy %")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def scale_curve(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Run every point of ``cfg.curve`` for every seed (cached rows), write the CSV, JSON and plot; return points."""
    cfg = plain(cfg)
    curve = cfg.get("curve") or {}
    faces, epochs = curve_points(curve)
    row_name = canonical_row(str(curve.get("row", "distill_bce_probe")))
    baselines = cfg.get("baselines") or {}
    if row_name not in baselines or str((baselines[row_name] or {}).get("method")) != "distilled":
        known = sorted(k for k, v in baselines.items() if str((v or {}).get("method")) == "distilled")
        raise ConfigError(f"curve.row={row_name!r} is not a distilled comparison row; use one of {', '.join(known)}")
    _, row = row_config(cfg, row_name, run_profile(cfg) == "smoke")
    extra_overrides = [str(o) for o in plain(curve.get("overrides") or [])]
    root = Path(cfg["paths"]["root"])
    out_dir = Path(curve.get("out_dir") or root / "scale_curve")
    seeds = _seeds(cfg)
    data = prepare_labeled(cfg["data"], root)
    operational = {"device": cfg.get("device", "auto"), "progress": bool(cfg.get("progress", True))}
    base_overrides = [*plain(row.get("distill_overrides") or []), *extra_overrides]
    weights, batch_size = _distill_plan({**row, "distill_overrides": base_overrides}, root)
    points, t0 = [], time.perf_counter()
    for n in faces:
        overrides, per_epoch = point_overrides(n, epochs, weights, batch_size)
        point_cfg = {**row, "distill_overrides": [*base_overrides, *overrides], **operational}
        results = []
        for seed in seeds:
            t = time.perf_counter()
            res = run_method("distilled", point_cfg, cfg["data"], root, seed, data=data)
            log.info("curve: %d faces, seed %d: accuracy %.4f, real test R² %s (%.0f s)", n, seed, res.accuracy,
                     res.extra.get("distill_real_test_r2"), time.perf_counter() - t)
            results.append(res)
        points.append(summarize_point(n, per_epoch, epochs, results))
    refs = {str(k): float(v) for k, v in (plain(curve.get("references")) or {}).items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "curve.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(points)
    write_json(out_dir / "curve.json", {"row": row_name, "epochs": epochs, "seeds": seeds, "points": points,
                                        "source_weights": weights, "overrides": extra_overrides,
                                        "wall_seconds": round(time.perf_counter() - t0, 1)})
    title = f"{row_name}, stream mode, {epochs} epochs; {len(seeds)} seed(s) {seeds}"
    plot_curve(points, out_dir / "curve.png", title, refs)
    print(curve_markdown(points, title) + f"\n\nwritten to {out_dir}")
    return points


def curve_markdown(points: Sequence[Mapping[str, Any]], title: str = "") -> str:
    """The points as a markdown table (percentages for accuracy, R² as is)."""
    def pm(p: Mapping[str, Any], k: str, scale: float = 1.0, digits: int = 2) -> str:
        return "–" if f"{k}_mean" not in p else f"{scale * p[f'{k}_mean']:.{digits}f} ± {scale * p[f'{k}_std']:.{digits}f}"

    lines = [f"{title}\n" if title else "",
             "| faces seen | per epoch | test acc % | R² real val | R² real test | R² held-out synthetic |",
             "|---|---|---|---|---|---|"]
    for p in points:
        lines.append(f"| {p['faces_seen']:,} | {p['faces_per_epoch']:,} | {pm(p, 'accuracy', 100, 1)} | "
                     f"{pm(p, 'real_val_r2')} | {pm(p, 'real_test_r2')} | {pm(p, 'holdout_r2')} |")
    return "\n".join(line for line in lines if line)
