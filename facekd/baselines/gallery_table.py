"""The enroll protocol's table: every row's embedding used with a gallery (see :mod:`facekd.gallery_eval`)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from facekd.baselines.base import MethodResult
from facekd.runs import atomic_path

__all__ = ["GALLERY_KEYS", "summarize_gallery", "gallery_markdown", "plot_gallery"]

GALLERY_KEYS = ("trained_accuracy", "enrolled_accuracy", "dir", "far", "dir_oracle", "threshold")


def summarize_gallery(results: Sequence[MethodResult]) -> dict[str, dict[str, Any]]:
    """Mean and std over seeds of each k's gallery figures (``{"k1": {"dir_mean": ..., ...}}``), with the
    templates chosen and each calibration source's FAR on the strangers."""
    figs = [r.extra["gallery"] for r in results if r.extra.get("gallery")]
    out: dict[str, dict[str, Any]] = {}
    for k in (figs[0] if figs else {}):
        if not k.startswith("k"):
            continue
        per = [f[k] for f in figs if k in f]
        row: dict[str, Any] = {"seeds": len(per), "templates": sorted({p["template"] for p in per})}
        for key in GALLERY_KEYS:
            v = np.array([p[key] for p in per], dtype=float)
            row[f"{key}_mean"], row[f"{key}_std"] = float(v.mean()), float(v.std())
        for src in ("synthetic", "enrolled"):
            v = [p["sources"][src]["far_on_strangers"] for p in per if src in p.get("sources", {})]
            if v:
                row[f"{src}_far_mean"], row[f"{src}_far_std"] = float(np.mean(v)), float(np.std(v))
        row["embedding"] = str(figs[0].get("embedding", results[0].student))
        out[k] = row
    return out


def _pm(row: Mapping[str, Any], key: str, scale: float = 100.0, digits: int = 1) -> str:
    m, s = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if m is None or not np.isfinite(m):
        return "–"
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}" if row.get("seeds", 1) > 1 else f"{scale * m:.{digits}f}"


def gallery_markdown(rows: Sequence[Mapping[str, Any]], data: Any, settings: Mapping[str, Any]) -> str:
    """The gallery table (one line per row and k) and what it measured."""
    split = data.split
    far = 100 * float(settings["far"])
    head = (f"| method | embedding | k | trained people % | enrolled-only people % | DIR@FAR {far:g}% (calibrated) % | "
            f"FAR on strangers % | DIR@FAR {far:g}% (oracle) % | threshold | template |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        for k, g in (r.get("gallery") or {}).items():
            lines.append(f"| {r['method']} | {g['embedding']} | {k[1:]} | {_pm(g, 'trained_accuracy')} | "
                         f"{_pm(g, 'enrolled_accuracy')} | {_pm(g, 'dir')} | {_pm(g, 'far')} | {_pm(g, 'dir_oracle')} | "
                         f"{_pm(g, 'threshold', 1.0, 3)} | {'/'.join(g['templates'])} |")
    src = {"max": "the stricter of leave-one-person-out among the enrolled photos and synthetic impostor faces",
           "synthetic": "synthetic impostor faces", "enrolled": "leave-one-person-out among the enrolled photos"}
    n_syn = (settings.get("impostors_id") or {}).get("n", 0)
    note = (f"One gallery of {len(split.classes)} trained and {len(split.enroll_classes)} enrolled-only people "
            f"(never seen by any training or distillation step), k photos each; queries: the trained people's "
            f"{len(split.test)} test photos and the enrolled-only people's {len(split.enroll_query)} other photos. "
            f"Accuracy: the best-scoring person (cosine, no threshold). The threshold is calibrated at FAR {far:g}% "
            f"on {src[settings['calibration']]}" + (f" ({n_syn} faces)" if n_syn else "") +
            f", never on a person of the split; DIR and FAR are measured at it, FAR on the {len(split.strangers)} "
            f"photos of {len(split.stranger_classes)} strangers, who are never enrolled nor used to calibrate. The "
            f"oracle column sets the threshold on those strangers themselves (an optimistic bound). Template: how a "
            f"person's photos are matched (mean of embeddings, or best of all), chosen on the trained people's val "
            f"photos.")
    return "### Gallery: enroll, identify, reject\n\n" + "\n".join(lines) + "\n\n" + note


def plot_gallery(rows: Sequence[Mapping[str, Any]], path: Any, k: str = "k1", title: str = "") -> Any:
    """Grouped bars per row: gallery accuracy on trained and on enrolled-only people, and DIR at the calibrated
    threshold, for ``k`` enrolled photos, with the std over seeds as error bars."""
    from pathlib import Path

    from matplotlib.figure import Figure

    shown = [r for r in rows if k in (r.get("gallery") or {})]
    keys = [("trained_accuracy", "trained people"), ("enrolled_accuracy", "enrolled-only people"),
            ("dir", "DIR at the calibrated threshold")]
    fig = Figure(figsize=(max(6.0, 1.3 * len(shown) + 2), 4.4), dpi=120)
    ax = fig.add_subplot()
    x = np.arange(len(shown))
    width = 0.27
    for i, (key, label) in enumerate(keys):
        means = [100 * r["gallery"][k][f"{key}_mean"] for r in shown]
        stds = [100 * r["gallery"][k][f"{key}_std"] for r in shown]
        ax.bar(x + (i - 1) * width, means, width, yerr=stds, capsize=3, label=label)
    ax.set_xticks(x, [r["method"] for r in shown], rotation=25, ha="right")
    ax.set_ylabel(f"% (k = {k[1:]} photo{'s' if k != 'k1' else ''} enrolled per person)")
    ax.set_ylim(0, 105)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path
