"""The one evaluation every model goes through: the comparison's rows and the finetune stage alike.

A :class:`Predictor` maps uint8 RGB images to class scores (``output="scores"``) or to embeddings
(``output="embedding"``); :func:`evaluate_fitted` scores it on parts of the shared split: scores by argmax,
embeddings by the nearest class mean of the unaugmented train images' embeddings (plus the paper's triplet
accuracy on test), and on an open-set split the rejection threshold calibrated on ``unknown_val`` with DIR and
FAR on test (:func:`facekd.openset.calibrate_and_score`).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from facekd.data.labeled import LabeledData, split_datasets
from facekd.data.preprocess import Preprocess
from facekd.metrics import classification_metrics, nearest_class_mean_predict, triplet_accuracy
from facekd.openset import calibrate_and_score, ncm_class_scores

__all__ = ["Predictor", "embed_images", "evaluate_fitted"]

log = logging.getLogger(__name__)


class Predictor(nn.Module):
    """What a fitted method deploys: ``preprocess -> body -> head``.

    ``forward`` takes the preprocessed float input (this is what model cards time and count);
    :meth:`predict` takes uint8 (or float 0-255) RGB ``B x 3 x H x W`` images.  ``head`` is None for an
    embedding method.  Always used in eval mode.
    """

    def __init__(self, body: nn.Module, preprocess: Preprocess, head: nn.Module | None = None,
                 output: str = "scores") -> None:
        super().__init__()
        if output not in ("scores", "embedding"):
            raise ValueError(f"output must be 'scores' or 'embedding', got {output!r}")
        self.body, self.head, self.preprocess, self.output = body, head, preprocess, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x)
        return f if self.head is None else self.head(f)

    @property
    def device(self) -> torch.device:
        for t in (*self.parameters(), *self.buffers()):
            return t.device
        return torch.device("cpu")

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        self.eval()
        return self(self.preprocess(images.to(self.device))).float()


@torch.no_grad()
def embed_images(predictor: Predictor, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``predictor.predict`` over uint8 ``images`` in batches, on the predictor's device; N x D on the CPU."""
    out = [predictor.predict(images[i:i + batch_size]).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0)


def evaluate_fitted(predictor: Predictor, data: LabeledData, parts: tuple[str, ...] = ("val", "test"), *,
                    ncm_metric: str = "cosine", triplet_metric: str = "euclidean", n_triplets: int = 2000,
                    batch_size: int = 64,
                    datasets: Mapping[str, Any] | None = None, open_set_far: float | None = None,
                    keep_scores: bool = False) -> dict[str, dict[str, Any]]:
    """Classification metrics of ``predictor`` on each part (``{part: metrics}``), plus ``"extra"``.

    Scores are classified by argmax.  Embeddings are classified by the nearest class mean (``ncm_metric``)
    of the unaugmented train images' embeddings; on the test part they also get the paper's triplet
    accuracy (fraction of ``n_triplets`` test triplets, drawn with seed 0, with d(a, p) < d(a, n);
    ``triplet_metric`` euclidean or cosine) and the mean per-dimension std of the embeddings (about 0 =
    collapse).

    With ``open_set_far`` on an open-set split, ``"open_set"`` holds the open-set figures of the test part
    (:func:`facekd.openset.calibrate_and_score`: threshold calibrated on ``unknown_val``, ``dir`` on the known
    test faces, ``far`` observed on ``unknown_test``).  With ``keep_scores``, ``"scores"`` holds each scored part's
    class scores (N x C; nearest-class-mean scores for embeddings), the open-set parts included.
    """
    labels = list(range(data.num_classes))
    open_set = open_set_far is not None and "test" in parts and bool(getattr(data, "open_set", False))
    need = set(parts) | ({"train"} if predictor.output == "embedding" else set())
    unknown_parts = ("unknown_val", "unknown_test") if open_set else ()
    sets = dict(datasets or {})
    missing = tuple(p for p in ("train", "val", "test", *unknown_parts) if p in need | set(unknown_parts)
                    and p not in sets)
    if missing:
        sets.update(split_datasets(data, missing, augment_train=False))
    out: dict[str, dict[str, Any]] = {"extra": {}, "scores": {}}
    if predictor.output == "embedding":
        xtr, ytr = sets["train"].tensors()
        etr = embed_images(predictor, xtr, batch_size).numpy()

    def class_scores(z: torch.Tensor) -> np.ndarray:
        if predictor.output == "scores":
            return z.numpy()
        return ncm_class_scores(etr, ytr.numpy(), z.numpy(), len(labels), metric=ncm_metric)

    for part in parts:
        x, y = sets[part].tensors()
        if len(y) == 0:
            continue
        z = embed_images(predictor, x, batch_size)
        if predictor.output == "scores":
            pred = z.argmax(1).numpy()
        else:
            pred = nearest_class_mean_predict(etr, ytr.numpy(), z.numpy(), metric=ncm_metric)
        out[part] = classification_metrics(y.numpy(), pred, labels=labels)
        if keep_scores:
            out["scores"][part] = class_scores(z)
        if predictor.output == "embedding" and part == "test":
            if np.bincount(y.numpy()).max() < 2:  # no class with two test images: no triplet can be formed
                log.warning("no test class has two images: triplet accuracy is not computed")
            else:
                out["extra"]["triplet_accuracy"] = triplet_accuracy(z, y.numpy(), n_triplets=n_triplets, seed=0,
                                                                    metric=triplet_metric)
            out["extra"]["embedding_std"] = float(z.double().std(0).mean())
        if open_set and part == "test":
            unknown = {u: class_scores(embed_images(predictor, sets[u].tensors()[0], batch_size))
                       for u in ("unknown_val", "unknown_test")}
            out["open_set"] = calibrate_and_score(unknown["unknown_val"], class_scores(z), y.numpy(),
                                                  unknown["unknown_test"], open_set_far)
            if keep_scores:
                out["scores"].update(unknown)
    if not keep_scores:
        del out["scores"]
    return out
