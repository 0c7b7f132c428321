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

__all__ = ["OPEN_SET_FILE", "SCORE", "open_set_score", "calibrate_threshold", "false_accept_rate",
           "open_set_metrics", "open_set_roc", "write_open_set", "read_open_set"]

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
    from facekd.runs import write_json

    path = Path(run_dir) / OPEN_SET_FILE
    write_json(path, {"score": SCORE, "threshold": float(threshold), "far": float(far),
                      "n_calibration": int(n_calibration), **extra})
    return path


def read_open_set(run_dir: str | os.PathLike) -> Mapping[str, Any] | None:
    """The run's rejection rule, or ``None`` when it was trained closed-set (no unknown identities)."""
    from facekd.runs import read_json

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
