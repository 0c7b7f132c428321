"""``scratch``: a student network trained from random init on the labeled train split only.

The student (``student: {name: resnet18 | convnet9, input_size}``, from the model registry) gets a
projection to the number of classes as its classifier and is trained with cross-entropy on augmented
train images (the ``data.augment`` pipeline), selection on val.  ``student: {name: resnet50}`` trains
torchvision's ResNet-50 the same way (the paper's third scratch network; not a registered student).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import nn
from torch.utils.data import Dataset

from facekd.baselines.base import METHODS, Features, Fitted, Method, Predictor, plain
from facekd.baselines.common import ImageClassifierTask, seed_augmentation, step_train_config, train_engine
from facekd.data.labeled import LabeledData, split_datasets
from facekd.data.preprocess import Preprocess
from facekd.models import build_student

__all__ = ["DEFAULT_STUDENT", "student_config", "build_classifier", "Scratch", "penultimate"]

DEFAULT_STUDENT = {"name": "resnet18", "input_size": 64}


def student_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return dict(plain(cfg.get("student")) or DEFAULT_STUDENT)


def build_classifier(student_cfg: Mapping[str, Any], num_classes: int) -> tuple[nn.Module, Preprocess]:
    """A random-init classifier network (class scores out) and its preprocessing."""
    student_cfg = dict(student_cfg)
    if student_cfg.get("name") == "resnet50":
        from torchvision.models import resnet50

        size = int(student_cfg.get("input_size", 112))
        net = resnet50(weights=None, num_classes=num_classes)
        return net, Preprocess(size=size, scale=1.0 / 255.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    net = build_student(student_cfg, num_classes)
    return net, net.preprocess


def train_classifier(data: LabeledData, cfg: Mapping[str, Any], run_dir: Path, seed: int,
                     loss_fn: Any = None, train_set: Dataset | None = None, num_outputs: int | None = None,
                     to_classes: nn.Module | None = None) -> Predictor:
    """Train the method's student as a classifier (val selection); see module doc.

    ``train_set`` replaces the augmented train split (items ``(image, label, *extra)`` for ``loss_fn``).
    ``num_outputs`` (default: the number of classes) sizes the net's output; ``to_classes`` maps those outputs
    to class scores and becomes the deployed predictor's head (e.g. subclass logits pooled per class).
    """
    net, pre = build_classifier(student_config(cfg), num_outputs or data.num_classes)
    sets = split_datasets(data, ("train", "val") if train_set is None else ("val",),
                          augment_train=bool(cfg.get("augment", True)))
    tc, per_epoch = step_train_config(cfg, seed)
    task = ImageClassifierTask(net, pre, sets["val"].tensors(), loss_fn=loss_fn,
                               eval_batch_size=int(cfg.get("eval_batch_size", 64)), to_classes=to_classes)
    if train_set is None:
        train_set = seed_augmentation(sets["train"], seed)
    train_engine(task, train_set, tc, per_epoch, run_dir, {"method": cfg, "split": data.split.id})
    return Predictor(task.net, pre, head=to_classes, output="scores").eval()


@METHODS.register("scratch")
class Scratch(Method):
    """Student from random init, cross-entropy on the augmented train split, selection on val."""

    def student_name(self, cfg: Mapping[str, Any]) -> str:
        s = student_config(cfg)
        return f"{s['name']}@{s.get('input_size', 64)}"

    def fit(self, data: LabeledData, cfg: Mapping[str, Any], run_dir: Path, seed: int) -> Fitted:
        predictor = train_classifier(data, cfg, run_dir, seed)
        embedder = penultimate(predictor)
        return Fitted(predictor, self.student_name(cfg), embedder=embedder,
                      extra={"embedding": f"{self.student_name(cfg)} penultimate" if embedder else self.student_name(cfg)})


def penultimate(predictor: Predictor) -> Predictor | None:
    """The student's penultimate features (before its class projection) as an embedding; None for a network
    without ``backbone_features`` (torchvision's ResNet-50: its body's output is used)."""
    if not hasattr(predictor.body, "backbone_features"):
        return None
    return Predictor(Features(predictor.body, "backbone_features"), predictor.preprocess, output="embedding").eval()
