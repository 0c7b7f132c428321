"""Open-set recognition: say "unknown" for people the model was not trained on.

A face is *accepted* as its top class when its score (:func:`open_set_score`, the largest softmax
probability over the model's class scores) is at least the run's threshold, and *rejected* as unknown
otherwise. The threshold is calibrated on images of held-out unknown identities, never on test:
:func:`calibrate_threshold` picks the lowest threshold whose false-accept rate on them is at most the
requested one. On test, :func:`open_set_metrics` reports the detection-and-identification rate (a known
face accepted *and* named right) at that threshold and the false-accept rate actually observed on test
unknowns; :func:`open_set_roc` traces both over every threshold.

The threshold travels in the finetune run folder as ``open_set.json`` (:func:`write_open_set`,
:func:`read_open_set`), which is what ``scripts/identify.py`` applies.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from facekd.errors import ArtifactError, ConfigError
from facekd.runs import read_json, write_json

__all__ = ["OPEN_SET_FILE", "SCORE", "open_set_score", "calibrate_threshold", "false_accept_rate",
           "open_set_metrics", "open_set_roc", "write_open_set", "read_open_set", "NCM_SCALE", "ncm_class_scores",
           "check_far", "calibrate_and_score"]

OPEN_SET_FILE = "open_set.json"
SCORE = "max_softmax"  # the score's name, recorded with the threshold


def open_set_score(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(predicted class, score)`` of each row of class scores (logits): argmax, and the largest softmax."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"class scores must be N x C with C >= 2, got shape {s.shape}")
    z = s - s.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return s.argmax(axis=1), p.max(axis=1)


def false_accept_rate(unknown_scores: np.ndarray, threshold: float) -> float:
    """The share of unknown faces accepted (score >= threshold)."""
    u = np.asarray(unknown_scores, dtype=np.float64)
    return float((u >= threshold).mean()) if len(u) else float("nan")


def calibrate_threshold(unknown_scores: np.ndarray, far: float) -> float:
    """The lowest threshold whose false-accept rate on ``unknown_scores`` is at most ``far``.

    With n unknown scores at most ``floor(far * n)`` may be accepted, so the threshold lies just above the
    ``(floor(far * n) + 1)``-th highest score (ties stay rejected together). With ``far * n < 1`` no unknown
    may pass: the threshold lies just above the highest, and the FAR reached is 0 (the resolution is 1/n).
    """
    if isinstance(far, bool) or not isinstance(far, (int, float)) or not 0.0 <= float(far) < 1.0:
        raise ConfigError(f"finetune.open_set.far must be a number in [0, 1), got {far!r}; e.g. "
                          "finetune.open_set.far=0.01")
    u = np.sort(np.asarray(unknown_scores, dtype=np.float64))[::-1]
    if not len(u):
        raise ConfigError("no calibration images of unknown identities: set data.unknown_identities=N (N >= 1) "
                          "so that a threshold can be calibrated without touching test")
    k = int(math.floor(float(far) * len(u) + 1e-9))
    if k >= len(u):
        return float("-inf")
    return float(np.nextafter(u[k], np.inf))


def open_set_metrics(known_scores: np.ndarray, known_labels: np.ndarray, unknown_scores: np.ndarray,
                     threshold: float) -> dict[str, float]:
    """Test figures at ``threshold``: ``dir`` (known faces accepted and named right), ``far`` (unknown faces
    accepted), ``closed_accuracy`` (named right, ignoring the threshold), with the counts."""
    pred, score = open_set_score(known_scores)
    labels = np.asarray(known_labels)
    _, u = open_set_score(unknown_scores) if len(unknown_scores) else (None, np.zeros(0))
    return {"dir": float(((pred == labels) & (score >= threshold)).mean()) if len(labels) else float("nan"),
            "far": false_accept_rate(u, threshold),
            "closed_accuracy": float((pred == labels).mean()) if len(labels) else float("nan"),
            "threshold": float(threshold), "n_known": int(len(labels)), "n_unknown": int(len(u))}


def open_set_roc(known_scores: np.ndarray, known_labels: np.ndarray, unknown_scores: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(far, dir, thresholds)`` over every distinct score, from the strictest threshold to the loosest."""
    pred, score = open_set_score(known_scores)
    right = pred == np.asarray(known_labels)
    _, u = open_set_score(unknown_scores)
    thresholds = np.unique(np.concatenate([score, u, [np.inf]]))[::-1]
    far = np.array([(u >= t).mean() for t in thresholds])
    dir_ = np.array([(right & (score >= t)).mean() for t in thresholds])
    return far, dir_, thresholds


def write_open_set(run_dir: str | os.PathLike, threshold: float, far: float, n_calibration: int,
                   **extra: Any) -> Path:
    """Record the calibrated rejection rule in ``run_dir/open_set.json``."""
    path = Path(run_dir) / OPEN_SET_FILE
    write_json(path, {"score": SCORE, "threshold": float(threshold), "far": float(far),
                      "n_calibration": int(n_calibration), **extra})
    return path


def read_open_set(run_dir: str | os.PathLike) -> Mapping[str, Any] | None:
    """The run's rejection rule, or ``None`` when it was trained closed-set (no unknown identities)."""
    path = Path(run_dir) / OPEN_SET_FILE
    if not path.exists():
        return None
    try:
        rule = read_json(path)
        float(rule["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{path} is damaged ({type(e).__name__}: {e}); rerun the finetune stage to "
                            "calibrate the threshold again") from e
    if rule.get("score") != SCORE:
        raise ArtifactError(f"{path} uses the score {rule.get('score')!r}, which this facekd does not know "
                            f"(it knows {SCORE!r}); rerun the finetune stage")
    return rule


# class scores of a nearest-class-mean classifier: this many times the cosine similarity to each class mean
NCM_SCALE = 16.0


def check_far(far: Any, key: str) -> float:
    """``far`` as a float in [0, 1); anything else is a ConfigError naming ``key``."""
    if isinstance(far, bool) or not isinstance(far, (int, float)) or not 0.0 <= float(far) < 1.0:
        raise ConfigError(f"{key} must be a number in [0, 1) (the false-accept rate the rejection threshold is "
                          f"calibrated to on held-out unknown identities), got {far!r}; e.g. {key}=0.01")
    return float(far)


def ncm_class_scores(train_feats: np.ndarray, train_labels: np.ndarray, feats: np.ndarray, num_classes: int,
                     metric: str = "cosine", scale: float = NCM_SCALE) -> np.ndarray:
    """Class scores (logits) of a nearest-class-mean classifier, for the open-set score of embedding methods.

    ``cosine``: ``scale`` x the cosine similarity of each (L2-normalised) feature to each class mean of the
    L2-normalised training features, as :func:`facekd.metrics.nearest_class_mean_predict` compares them;
    ``euclidean``: ``-scale`` x the distance to each class mean over the root-mean-square distance of the
    training features to their own class mean.  The argmax is the nearest class mean's prediction either way;
    a class without training features scores ``-inf``.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unknown metric '{metric}'; use 'cosine' or 'euclidean'")
    xtr = np.asarray(train_feats, dtype=np.float64).reshape(len(train_feats), -1)
    x = np.asarray(feats, dtype=np.float64).reshape(len(feats), -1)
    ytr = np.asarray(train_labels).ravel()

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    if metric == "cosine":
        xtr, x = unit(xtr), unit(x)
    out = np.full((len(x), int(num_classes)), -np.inf)
    present = [c for c in range(int(num_classes)) if np.any(ytr == c)]
    means = np.stack([xtr[ytr == c].mean(0) for c in present])
    if metric == "cosine":
        out[:, present] = scale * (x @ unit(means).T)
    else:
        own = means[np.searchsorted(present, ytr)]
        spread = max(float(np.sqrt(((xtr - own) ** 2).sum(1).mean())), 1e-12)
        out[:, present] = -scale * np.sqrt(((x[:, None, :] - means[None]) ** 2).sum(-1)) / spread
    return out


def calibrate_and_score(calibration_scores: np.ndarray, known_scores: np.ndarray, known_labels: np.ndarray,
                        unknown_scores: np.ndarray, far: float) -> dict[str, float]:
    """Calibrate the threshold at ``far`` on the class scores of the calibration unknowns, then score test.

    Returns :func:`open_set_metrics` (``dir``, ``far`` observed on test unknowns, ...) plus ``far_target``,
    ``far_calibration`` (reached on the calibration unknowns) and ``n_calibration``.
    """
    _, calibration = open_set_score(calibration_scores)
    threshold = calibrate_threshold(calibration, far)
    return {**open_set_metrics(known_scores, known_labels, unknown_scores, threshold), "far_target": float(far),
            "far_calibration": false_accept_rate(calibration, threshold), "n_calibration": int(len(calibration))}
