"""Drawing primitives shared by the stages and the report: curves, confusion matrices, t-SNE maps.

Pure plotting: each function takes arrays or metric rows, writes one PNG atomically and returns its path.
Nothing here knows about stages or run folders.  Figures are drawn with ``matplotlib.figure.Figure``
(no pyplot state, no display needed).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from facekd.runs import atomic_path

__all__ = ["plot_curves", "plot_confusion", "plot_tsne", "confusion_matrix", "tsne_embedding", "plot_open_set_roc",
           "plot_speed_accuracy", "pareto_front"]


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi, bbox_inches="tight")
    return path


def _figure(width: float, height: float, dpi: int = 120) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi)


def plot_curves(history: Sequence[Mapping[str, Any]], keys: Sequence[str], path: str | os.PathLike, *,
                x: str = "epoch", best: int | None = None, title: str = "", ylabel: str = "") -> Path:
    """Line plot of ``keys`` of the per-epoch ``history`` rows against ``x``; ``best`` marks the chosen epoch.

    Rows lacking a key are skipped for that line; a key no row has raises ``KeyError``.
    """
    if not history:
        raise ValueError("plot_curves needs at least one history row")
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    for key in keys:
        pts = [(float(r[x]), float(r[key])) for r in history if key in r and r[key] is not None]
        if not pts:
            raise KeyError(f"no history row has '{key}'; keys present: {sorted(set().union(*history))}")
        xs, ys = zip(*pts)
        ax.plot(xs, ys, label=key, marker="." if len(xs) <= 30 else None)
    if best is not None:
        ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best {x} {best}")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """``num_classes`` x ``num_classes`` counts: row = true class, column = predicted class."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64).ravel(), np.asarray(y_pred, dtype=np.int64).ravel()
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    bad = [int(v) for v in np.concatenate([y_true, y_pred]) if not 0 <= v < num_classes]
    if bad:
        raise ValueError(f"labels out of range 0..{num_classes - 1}: {sorted(set(bad))[:10]}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def plot_confusion(y_true: Any, y_pred: Any, classes: Sequence[str], path: str | os.PathLike, *,
                   normalize: bool = True, title: str = "") -> Path:
    """Confusion matrix image (rows true, columns predicted; row-normalized by default).

    Class names label the axes up to 50 classes; beyond that only indices are shown.  Cell counts are
    printed when there are at most 15 classes.
    """
    n = len(classes)
    cm = confusion_matrix(y_true, y_pred, n)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    side = min(14.0, max(4.5, 0.22 * n + 2.5))
    fig = _figure(side, side * 0.9)
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(1, int(cm.max())))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class" if normalize else "count")
    if n <= 50:
        ax.set_xticks(range(n), [str(c) for c in classes], rotation=90, fontsize=max(4, 9 - n // 10))
        ax.set_yticks(range(n), [str(c) for c in classes], fontsize=max(4, 9 - n // 10))
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > 0.5 * shown.max() else "black")
    acc = np.trace(cm) / max(1, cm.sum())
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion matrix ({cm.sum()} images, accuracy {100 * acc:.1f}%)")
    return _save(fig, path)


def tsne_embedding(feats: Any, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE (scikit-learn) of N x D features; perplexity is capped below N.

    Up to 2,000 points run on one thread: OpenMP threads only slow such small problems down, badly so on
    a busy machine."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(feats, dtype=np.float32).reshape(len(feats), -1)
    if len(x) < 3:
        raise ValueError(f"t-SNE needs at least 3 samples, got {len(x)}")
    perp = float(min(perplexity, max(1.0, (len(x) - 1) / 3)))
    with threadpool_limits(limits=1 if len(x) <= 2000 else None):
        return TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(x)


def plot_tsne(feature_sets: Mapping[str, tuple[Any, Any]], path: str | os.PathLike, *, seed: int = 0,
              perplexity: float = 30.0, title: str = "") -> Path:
    """t-SNE maps of several feature sets side by side, points coloured by label.

    ``feature_sets`` maps a panel title (e.g. ``"distilled student"``, ``"scratch"``) to
    ``(N x D features, N labels)``.  Each panel is embedded separately with the same seed.
    """
    if not feature_sets:
        raise ValueError("plot_tsne needs at least one feature set")
    import matplotlib

    k = len(feature_sets)
    fig = _figure(4.8 * k, 4.6)
    cmap = matplotlib.colormaps["tab20"]
    for i, (name, (feats, labels)) in enumerate(feature_sets.items()):
        labels = np.asarray(labels).ravel()
        if len(labels) != len(feats):
            raise ValueError(f"'{name}': {len(feats)} features but {len(labels)} labels")
        xy = tsne_embedding(feats, seed, perplexity)
        ax = fig.add_subplot(1, k, i + 1)
        _, codes = np.unique(labels, return_inverse=True)
        ax.scatter(xy[:, 0], xy[:, 1], c=[cmap(c % 20) for c in codes], s=10, linewidths=0)
        ax.set_title(f"{name} ({len(labels)} images, {codes.max() + 1} classes)", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_open_set_roc(far: Any, dir_: Any, path: str | os.PathLike, *, at: tuple[float, float] | None = None,
                      far_target: float | None = None, title: str = "") -> Path:
    """The open-set ROC: detection-and-identification rate (y) against the false-accept rate on unknowns (x,
    log scale), one point per threshold; ``at`` = ``(far, dir)`` marks the calibrated threshold on test and
    ``far_target`` the FAR it was calibrated to."""
    far, dir_ = np.asarray(far, dtype=float), np.asarray(dir_, dtype=float)
    if far.shape != dir_.shape or not far.size:
        raise ValueError(f"far and dir must be equal-length, non-empty curves, got {far.shape} and {dir_.shape}")
    positive = far[far > 0]
    floor = min(positive.min() / 2, 1e-3) if positive.size else 1e-3  # FAR 0 drawn at the left edge
    fig = _figure(6.0, 4.2)
    ax = fig.add_subplot()
    ax.step(np.maximum(far, floor), dir_, where="post", color="tab:blue", label="test (known vs unknown faces)")
    if far_target is not None and far_target > 0:
        ax.axvline(far_target, color="grey", linestyle="--", linewidth=1, label=f"target FAR {100 * far_target:g}%")
    if at is not None:
        ax.plot([max(at[0], floor)], [at[1]], marker="o", color="tab:red", linestyle="none",
                label=f"calibrated threshold: FAR {100 * at[0]:.1f}%, DIR {100 * at[1]:.1f}%")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.05)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false-accept rate on unknown identities (log; 0 drawn at the left edge)")
    ax.set_ylabel("detection and identification rate")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def pareto_front(points: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The points no other point beats on both axes (lower ``ms``, higher ``accuracy``), fastest first."""
    front: list[Mapping[str, Any]] = []
    best = -np.inf
    for p in sorted(points, key=lambda p: (float(p["ms"]), -float(p["accuracy"]))):
        if float(p["accuracy"]) > best:
            front.append(p)
            best = float(p["accuracy"])
    return front


def plot_speed_accuracy(points: Sequence[Mapping[str, Any]], path: str | os.PathLike, *, title: str = "",
                        xlabel: str = "ms per face (ONNX, batch 1, one CPU thread; log scale)",
                        ylabel: str = "test accuracy %") -> Path:
    """One marker per ``{"label", "ms", "accuracy", "accuracy_std", "precision"}`` point (accuracy in %; ``short``,
    when given, is the label drawn), error bars of one std, the Pareto front (faster and at least as accurate)
    joined by a line; int8 points hollow."""
    fig = _figure(7.0, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    pts = sorted(points, key=lambda p: float(p["ms"]))
    for p in pts:
        hollow = p.get("precision") == "int8"
        ax.errorbar(float(p["ms"]), float(p["accuracy"]), yerr=float(p.get("accuracy_std") or 0.0), fmt="o",
                    mfc="white" if hollow else None, capsize=3, ms=7)
        ax.annotate(str(p.get("short") or p["label"]), (float(p["ms"]), float(p["accuracy"])),
                    textcoords="offset points", xytext=(6, 5), fontsize=8)
    front = pareto_front(pts)
    if len(front) > 1:
        ax.plot([float(p["ms"]) for p in front], [float(p["accuracy"]) for p in front], "--", color="grey", lw=1,
                label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.25)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)
