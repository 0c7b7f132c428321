"""``triplet``: a Siamese embedding network trained with the triplet loss (pytorch-metric-learning).

The student (``student: {name, input_size}``) outputs an ``embedding_dim`` embedding.  Batches hold
``m_per_class`` augmented images of each of ``batch_size / m_per_class`` identities
(``MPerClassSampler``); a ``TripletMarginMiner`` picks the triplets (``semihard`` by default) and
``TripletMarginLoss`` (euclidean distance on L2-normalised embeddings) scores them.

It sits in the comparison table through the nearest class mean on its embeddings (class means of the
unaugmented train images); the paper's own number, the triplet accuracy (fraction of test triplets
with d(anchor, positive) < d(anchor, negative)), is reported as ``extra["triplet_accuracy"]``.
Selection is on val nearest-class-mean accuracy.  Embedding collapse (every image mapped to about the
same point, so the triplet loss sits at the margin) is detected on the train images at the chosen
state: ``extra["collapsed"]`` is true when the mean per-dimension std of the L2-normalised embeddings is
below ``collapse_std`` (a warning is logged too).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from facekd.baselines.base import METHODS, Fitted, Method, Predictor, plain
from facekd.baselines.common import batched, seed_augmentation, selection_score, step_train_config
from facekd.baselines.scratch import student_config
from facekd.data.labeled import LabeledData, split_datasets
from facekd.engine import Task, Trainer, load_best
from facekd.models import build_student
from facekd.errors import ConfigError

__all__ = ["TripletTask", "Triplet", "ncm_logits"]

log = logging.getLogger(__name__)


def ncm_logits(train_emb: torch.Tensor, train_y: torch.Tensor, emb: torch.Tensor, num_classes: int,
               scale: float = 10.0) -> torch.Tensor:
    """Scaled cosine similarities of ``emb`` to the class means of ``train_emb`` (classes absent from train: -inf)."""
    tr = F.normalize(train_emb.float(), dim=1)
    means = torch.zeros(num_classes, tr.shape[1], device=tr.device).index_add_(0, train_y.to(tr.device), tr)
    logits = scale * F.normalize(emb.float(), dim=1) @ F.normalize(means, dim=1).T
    present = torch.bincount(train_y.to(tr.device), minlength=num_classes) > 0
    return logits.masked_fill(~present, float("-inf"))


class TripletTask(Task):
    """Embedding net + triplet loss and miner; val = nearest-class-mean accuracy against the train images."""

    def __init__(self, net: torch.nn.Module, cfg: Mapping[str, Any], train: tuple[torch.Tensor, torch.Tensor],
                 val: tuple[torch.Tensor, torch.Tensor], num_classes: int, eval_batch_size: int = 64) -> None:
        super().__init__()
        from pytorch_metric_learning import losses, miners

        self.net, self.num_classes, self.eval_batch_size = net, num_classes, eval_batch_size
        margin = float(cfg.get("margin", 0.2))
        self.loss = losses.TripletMarginLoss(margin=margin)
        self.miner = miners.TripletMarginMiner(margin=margin, type_of_triplets=str(cfg.get("miner", "semihard")))
        self.train_x, self.train_y = train
        self.val_x, self.val_y = val

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = self.net.preprocess(images)
        return self.net(x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x).float()

    def training_step(self, batch: Any) -> Any:
        images, labels = batch
        emb = self.embed(images)
        triplets = self.miner(emb, labels)
        loss = self.loss(emb, labels, triplets)
        return loss, {"mined_triplets": float(len(triplets[0]))}

    def embed_all(self, images: torch.Tensor) -> torch.Tensor:
        return batched(lambda x: self.embed(x.to(self.device)), images, self.eval_batch_size)

    def evaluate(self) -> dict[str, float]:
        etr = self.embed_all(self.train_x)
        logits = ncm_logits(etr, self.train_y, self.embed_all(self.val_x), self.num_classes)
        y = self.val_y.to(logits.device)
        loss = float(F.cross_entropy(logits, y))
        acc = float((logits.argmax(1) == y).float().mean())
        return {"val_loss": loss, "val_accuracy": acc, "val_select": selection_score(acc, loss),
                "train_embedding_std": float(F.normalize(etr, dim=1).std(0).mean())}


@METHODS.register("triplet")
class Triplet(Method):
    """Siamese network, triplet loss with mining, m-per-class batches; nearest class mean to classify."""

    def student_name(self, cfg: Mapping[str, Any]) -> str:
        s = student_config(cfg)
        return f"{s['name']}@{s.get('input_size', 64)} siamese"

    def check(self, data: LabeledData, cfg: Mapping[str, Any]) -> None:
        if data.num_classes < 2:
            raise ConfigError("triplet needs at least two identities")

    def fit(self, data: LabeledData, cfg: Mapping[str, Any], run_dir: Path, seed: int) -> Fitted:
        from pytorch_metric_learning.samplers import MPerClassSampler

        net = build_student(student_config(cfg), int(cfg.get("embedding_dim", 128)))
        sets = split_datasets(data, ("train", "val"), augment_train=bool(cfg.get("augment", True)))
        seed_augmentation(sets["train"], seed)
        plain_train = split_datasets(data, ("train",), augment_train=False)["train"].tensors()
        tc, per_epoch = step_train_config(cfg, seed)
        eval_every = per_epoch // tc.batch_size
        m = int(cfg.get("m_per_class", 2))
        n_ids = len(set(sets["train"].labels.tolist()))
        batch = min(tc.batch_size, m * n_ids) // m * m
        if batch < 2 * m:
            raise ConfigError(f"triplet: a batch of {m} images for each of at least 2 identities is needed; "
                              f"batch_size={tc.batch_size}, m_per_class={m}, {n_ids} identities in train")
        sampler = MPerClassSampler(sets["train"].labels, m, batch_size=batch, length_before_new_iter=eval_every * batch)
        loader = DataLoader(sets["train"], batch_size=batch, sampler=sampler, drop_last=True,
                            num_workers=int(cfg.get("num_workers", 0)))
        task = TripletTask(net, cfg, plain_train, sets["val"].tensors(), data.num_classes,
                           int(cfg.get("eval_batch_size", 64)))
        Trainer(tc, run_dir, config={"method": plain(cfg), "split": data.split.id}).fit(task, loader)
        load_best(task, run_dir)
        task.eval()
        with torch.no_grad():
            std = float(F.normalize(task.embed_all(plain_train[0]), dim=1).std(0).mean())
        collapsed = std < float(cfg.get("collapse_std", 1e-3))
        if collapsed:
            log.warning("triplet: the embedding collapsed (mean per-dimension std %.2e on the train images)", std)
        return Fitted(Predictor(task.net, net.preprocess, output="embedding").eval(), self.student_name(cfg),
                      extra={"train_embedding_std": std, "collapsed": collapsed, "batch_size": batch})
