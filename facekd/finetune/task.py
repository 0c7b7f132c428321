"""The finetune training task for the engine: a linear head on a (frozen or unfrozen) student.

Three ways to feed it, picked by the stage:

* ``inputs="features"``: batches are precomputed frozen student features (no augmentation, frozen
  backbone): the fast path, the student never runs during training;
* ``inputs="images"`` with a frozen student: batches are (augmented) uint8 images and the frozen student
  runs every step without gradients (kept in eval mode, its batch norm statistics never change);
* ``inputs="images"`` with ``unfreeze``: the student trains too, at ``backbone_lr_scale`` times the lr.

A frozen student is not a registered sub-module, so checkpoints and ``best.safetensors`` hold only what
trains (norm statistics and the head).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from facekd.engine import Task, autocast
from facekd.finetune.model import SpecializedModel
from facekd.metrics import classification_metrics, selection_score
from facekd.errors import ConfigError

__all__ = ["LOSSES", "COSFACE_MARGIN", "head_for", "classification_loss", "HeadTask", "predict_scores"]

LOSSES = ("bce", "ce", "cosface")
COSFACE_MARGIN = 0.25  # subtracted from the target class's cosine (the head's scale is 16: the logit drops by 4)


def head_for(loss: str) -> str:
    """The head a loss trains: ``cosine`` for ``cosface``, else ``linear``."""
    return "cosine" if loss == "cosface" else "linear"


def classification_loss(name: str, logits: torch.Tensor, labels: torch.Tensor, scale: float = 16.0) -> torch.Tensor:
    """``bce``: sigmoid binary cross-entropy against one-hot labels, mean over N x K (the paper's);
    ``ce``: softmax cross-entropy; ``cosface``: cross-entropy on a cosine head's logits (``scale`` x cosine) with
    :data:`COSFACE_MARGIN` taken off the target class's cosine (CosFace, large-margin cosine loss)."""
    logits = logits.float()
    if name == "cosface":
        return F.cross_entropy(logits - scale * COSFACE_MARGIN * F.one_hot(labels, logits.shape[1]), labels)
    if name == "bce":
        return F.binary_cross_entropy_with_logits(logits, F.one_hot(labels, logits.shape[1]).float())
    if name == "ce":
        return F.cross_entropy(logits, labels)
    raise ConfigError(f"unknown finetune loss '{name}'; use one of {', '.join(LOSSES)}")


@torch.no_grad()
def predict_scores(fn: Any, x: torch.Tensor, device: torch.device, batch_size: int = 64,
                   desc: str | None = None) -> torch.Tensor:
    """``fn`` over ``x`` in batches on ``device`` (bf16 autocast on CUDA, fp32 on a CPU, as the exported model
    runs); float32 outputs on the CPU.

    ``desc`` shows a progress bar when there is more than one batch."""
    out = []
    for i in tqdm(range(0, len(x), batch_size), desc=desc, leave=False,
                  disable=desc is None or len(x) <= batch_size):
        with autocast(device, enabled=device.type == "cuda"):
            out.append(fn(x[i:i + batch_size].to(device, non_blocking=True)).float().cpu())
    return torch.cat(out)


class HeadTask(Task):
    """Train ``model.head`` (and the student when ``unfreeze``) with ``loss`` on labeled batches.

    ``val`` is ``(inputs, labels)`` of the val split, in the same form as the training batches
    (features or uint8 images).  :meth:`evaluate` returns ``val_loss`` and ``val_<metric>`` for accuracy and
    precision / recall / F1, macro and micro, over all ``model.num_classes`` classes; with ``select_on`` (a
    key such as ``val_f1_macro``) also ``val_select``, that key with ties broken by the lower val loss.
    """

    def __init__(self, model: SpecializedModel, loss: str, val: tuple[torch.Tensor, torch.Tensor], *,
                 inputs: str = "features", unfreeze: bool = False, backbone_lr_scale: float = 0.1,
                 eval_batch_size: int = 64, select_on: str | None = None, hold: nn.Module | None = None) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"unknown finetune loss '{loss}'; use one of {', '.join(LOSSES)}")
        if inputs not in ("features", "images"):
            raise ValueError(f"inputs must be 'features' or 'images', got {inputs!r}")
        if unfreeze and inputs == "features":
            raise ValueError("an unfrozen backbone needs image inputs, not precomputed features")
        self.loss_name, self.inputs, self.unfreeze = loss, inputs, unfreeze
        self.backbone_lr_scale, self.eval_batch_size = float(backbone_lr_scale), int(eval_batch_size)
        self.head, self.norm = model.head, model.norm
        self._model = [model]  # a list: the model (and a frozen student) are not registered sub-modules
        if unfreeze:
            self.student = model.student
            model.student.requires_grad_(True)
        else:
            model.student.requires_grad_(False)
        self.val, self.select_on = val, select_on
        self._hold = [hold] if hold is not None else []  # finetune.hold (not a registered module: no parameters)

    @property
    def model(self) -> SpecializedModel:
        return self._model[0]

    def train(self, mode: bool = True) -> "HeadTask":
        super().train(mode)
        if not self.unfreeze:
            self.model.student.eval()
        return self

    def _sync_student(self) -> None:
        """Keep a frozen student on the task's device (the engine moves only registered modules)."""
        if not self.unfreeze and self.inputs == "images":
            self.model.student.to(self.device)

    def on_epoch_start(self, epoch: int) -> None:
        self._sync_student()

    def param_groups(self) -> list[dict]:
        groups = [{"params": list(self.head.parameters())}]
        if self.unfreeze:
            groups.append({"params": list(self.model.student.parameters()), "lr_scale": self.backbone_lr_scale})
        return groups

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of one batch of inputs (features or uint8 images)."""
        if self.inputs == "features":
            return self.model.classify(x)
        pre = self.model.preprocess(x)
        if self.unfreeze:
            return self.model.classify(self.model.extract(pre))
        with torch.no_grad():
            feats = self.model.extract(pre)
        return self.model.classify(feats)

    def training_step(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y = batch
        logits = self.scores(x)
        loss = classification_loss(self.loss_name, logits, y, getattr(self.head, "scale", 16.0))
        logs = {"train_accuracy": (logits.argmax(1) == y).float().mean().detach()}
        if self._hold and self.unfreeze:
            held = self._hold[0](self.model.student, self.model.preprocess, self.device)
            loss = loss + held
            logs["train_hold"] = held.detach()
        return loss, logs

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self._sync_student()
        x, y = self.val
        logits = predict_scores(self.scores, x, self.device, self.eval_batch_size)
        out = {"val_loss": float(classification_loss(self.loss_name, logits, y.cpu(), getattr(self.head, "scale", 16.0)))}
        metrics = classification_metrics(y.cpu().numpy(), logits.argmax(1).numpy(), labels=list(range(logits.shape[1])))
        out.update({f"val_{k}": v for k, v in metrics.items()})
        if self.select_on is not None:
            out["val_select"] = selection_score(out[self.select_on], out["val_loss"])
        return out
