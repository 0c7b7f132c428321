"""Evaluation metrics shared by every stage and baseline.

- :func:`classification_metrics`: accuracy, and precision / recall / F1 under macro and micro averaging
  (the paper's tables), via scikit-learn.
- :func:`regression_metrics` and the streaming :class:`RegressionMeter`: MSE, MAE and R² between
  student and teacher features.  R² is scikit-learn's ``r2_score(target, pred,
  multioutput="uniform_average")``: one R² per feature dimension, averaged.  The meter keeps per-dimension
  sums only, so memory does not grow with the number of samples.
- :class:`RunningMoments`: streaming per-dimension mean / variance (Chan's parallel update, float64).
- :func:`nearest_class_mean_predict`: the nearest-class-mean classifier (cosine or euclidean).
- :func:`triplet_accuracy` and :func:`sample_triplets`: the fraction of triplets with d(a, p) < d(a, n).
- :func:`selection_score`: a val score with ties broken by the lower val loss (the best-epoch rule).

Inputs may be numpy arrays or torch tensors (any device, any float dtype).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = [
    "classification_metrics",
    "RunningMoments",
    "RegressionMeter",
    "regression_metrics",
    "nearest_class_mean_predict",
    "sample_triplets",
    "triplet_accuracy",
    "selection_score",
]


def selection_score(score: float, loss: float) -> float:
    """A val score (accuracy, F1, ...) with ties broken by the lower val loss.

    The val splits of few-shot protocols are small (one image per identity), so many epochs tie on
    accuracy or F1; keeping the earliest of them would keep an under-trained model.  The loss term,
    ``1e-4 * min(loss, 1000)``, is below one val step for any sane loss.
    """
    return float(score) - 1e-4 * min(float(loss), 1e3)


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """View ``x`` as N x D (a 1-D input is N samples of one dimension)."""
    return x.reshape(len(x), -1) if x.ndim != 1 else x.reshape(-1, 1)


def classification_metrics(y_true: Any, y_pred: Any, labels: Sequence | None = None) -> dict[str, float]:
    """Accuracy and precision / recall / F1, macro- and micro-averaged, and F1 weighted by class support.

    ``labels`` fixes the classes the macro average runs over (default: those in ``y_true`` or ``y_pred``,
    as scikit-learn does).  A class never predicted scores precision 0 (no warning).
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    y_true, y_pred = _numpy(y_true).ravel(), _numpy(y_pred).ravel()
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("classification_metrics needs at least one sample")
    out = {"accuracy": float(accuracy_score(y_true, y_pred))}
    for avg in ("macro", "micro"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg, zero_division=0)
        out.update({f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)})
    _, _, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
    out["f1_weighted"] = float(f)
    return out


class RunningMoments:
    """Per-dimension count, mean and sum of squared deviations, updated batch by batch in float64.

    Uses Chan et al.'s parallel combination, which stays accurate where ``E[x²] - E[x]²`` cancels.
    Works on N x D batches (or N x anything, flattened per sample); memory is O(D).
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, x: Any) -> "RunningMoments":
        x = _rows(torch.as_tensor(x).detach()).to(torch.float64)
        if len(x) == 0:
            return self
        nb, mb = len(x), x.mean(0)
        m2b = ((x - mb) ** 2).sum(0)
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mb, m2b
        else:
            if mb.shape != self.mean.shape:
                raise ValueError(f"batch has {mb.numel()} dimensions, earlier batches had {self.mean.numel()}")
            n = self.n + nb
            delta = mb.to(self.mean.device) - self.mean
            self.mean = self.mean + delta * (nb / n)
            self.m2 = self.m2 + m2b.to(self.m2.device) + delta**2 * (self.n * nb / n)
            self.n = n
        return self

    @property
    def var(self) -> torch.Tensor:
        """Population variance per dimension (divides by N)."""
        if self.mean is None:
            raise ValueError("no samples seen")
        return self.m2 / self.n

    @property
    def std(self) -> torch.Tensor:
        return self.var.sqrt()


class RegressionMeter:
    """Streaming MSE, MAE and R² of ``pred`` against ``target`` (N x D batches).

    Equal to scikit-learn's ``mean_squared_error``, ``mean_absolute_error`` and
    ``r2_score(multioutput="uniform_average")`` on the concatenated batches.  As in scikit-learn, a
    dimension whose target is constant scores R² 1 when predicted exactly and 0 otherwise.
    """

    def __init__(self) -> None:
        self.target = RunningMoments()
        self.sse: torch.Tensor | None = None  # per-dimension sum of squared errors
        self.sae: torch.Tensor | None = None  # per-dimension sum of absolute errors

    def update(self, pred: Any, target: Any) -> "RegressionMeter":
        pred, target = torch.as_tensor(pred).detach(), torch.as_tensor(target).detach()
        if pred.shape != target.shape:
            raise ValueError(f"pred has shape {tuple(pred.shape)} but target has {tuple(target.shape)}")
        pred, target = _rows(pred).to(torch.float64), _rows(target).to(torch.float64)
        err = pred - target.to(pred.device)
        sse, sae = (err**2).sum(0), err.abs().sum(0)
        self.sse = sse if self.sse is None else self.sse + sse
        self.sae = sae if self.sae is None else self.sae + sae
        self.target.update(target)
        return self

    def compute(self) -> dict[str, float]:
        if self.sse is None or self.target.n == 0:
            raise ValueError("RegressionMeter saw no samples")
        n, sse, sst = self.target.n, self.sse, self.target.m2
        r2 = torch.where(sst > 0, 1 - sse / sst.clamp_min(1e-300), (sse == 0).to(sse.dtype))
        return {"mse": float(sse.sum() / (n * sse.numel())), "mae": float(self.sae.sum() / (n * sse.numel())),
                "r2": float(r2.mean())}


def regression_metrics(pred: Any, target: Any) -> dict[str, float]:
    """MSE, MAE and R² (scikit-learn's, averaged over dimensions) of one batch of N x D features."""
    return RegressionMeter().update(pred, target).compute()


def nearest_class_mean_predict(train_feats: Any, train_labels: Any, test_feats: Any,
                               metric: str = "cosine") -> np.ndarray:
    """Predict each test feature's class as that of the nearest class mean of the training features.

    ``cosine``: features are L2-normalised, class means taken and normalised again, and the class of
    highest cosine similarity wins.  ``euclidean``: the class mean at the smallest L2 distance wins.
    Returns the predicted labels (values of ``train_labels``).
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unknown metric '{metric}'; use 'cosine' or 'euclidean'")
    xtr = _numpy(train_feats).reshape(len(train_feats), -1).astype(np.float64)
    xte = _numpy(test_feats).reshape(len(test_feats), -1).astype(np.float64)
    ytr = _numpy(train_labels).ravel()
    if len(xtr) != len(ytr):
        raise ValueError(f"{len(xtr)} training features but {len(ytr)} labels")
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"train features have {xtr.shape[1]} dimensions, test features {xte.shape[1]}")
    classes = np.unique(ytr)

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    if metric == "cosine":
        xtr, xte = unit(xtr), unit(xte)
    means = np.stack([xtr[ytr == c].mean(0) for c in classes])
    if metric == "cosine":
        scores = xte @ unit(means).T
    else:
        scores = -((xte[:, None, :] - means[None, :, :]) ** 2).sum(-1)
    return classes[scores.argmax(1)]


def sample_triplets(labels: Any, n: int, seed: int = 0) -> np.ndarray:
    """Draw ``n`` (anchor, positive, negative) index triplets, reproducibly from ``seed``.

    The anchor comes from a class with at least two samples, the positive is another sample of its
    class, the negative a sample of another class.
    """
    y = _numpy(labels).ravel()
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    eligible = classes[counts >= 2]
    if len(eligible) == 0 or len(classes) < 2:
        raise ValueError("triplets need a class with at least two samples and at least two classes")
    pos = {c: np.flatnonzero(y == c) for c in eligible}
    neg = {c: np.flatnonzero(y != c) for c in eligible}
    out = np.empty((n, 3), dtype=np.int64)
    for i in range(n):
        c = eligible[rng.integers(len(eligible))]
        a, p = rng.choice(pos[c], size=2, replace=False)
        out[i] = (a, p, neg[c][rng.integers(len(neg[c]))])
    return out


def triplet_accuracy(embeddings: Any, labels: Any | None = None, triplets: Any | None = None, *,
                     n_triplets: int = 1000, seed: int = 0, metric: str = "euclidean") -> float:
    """Fraction of triplets whose anchor is strictly closer to its positive than to its negative.

    Pass explicit ``triplets`` (T x 3 indices), or ``labels`` to draw ``n_triplets`` with
    :func:`sample_triplets`.  ``metric`` is ``euclidean`` or ``cosine`` (distance 1 - cos).
    """
    x = _numpy(embeddings).reshape(len(embeddings), -1).astype(np.float64)
    if triplets is None:
        if labels is None:
            raise ValueError("pass either triplets or labels to sample them from")
        triplets = sample_triplets(labels, n_triplets, seed)
    t = np.asarray(_numpy(triplets), dtype=np.int64).reshape(-1, 3)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        d_ap = 1 - (x[t[:, 0]] * x[t[:, 1]]).sum(1)
        d_an = 1 - (x[t[:, 0]] * x[t[:, 2]]).sum(1)
    elif metric == "euclidean":
        d_ap = np.linalg.norm(x[t[:, 0]] - x[t[:, 1]], axis=1)
        d_an = np.linalg.norm(x[t[:, 0]] - x[t[:, 2]], axis=1)
    else:
        raise ValueError(f"unknown metric '{metric}'; use 'euclidean' or 'cosine'")
    return float((d_ap < d_an).mean())
