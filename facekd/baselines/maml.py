"""``maml``: Model-Agnostic Meta-Learning (second- or first-order) with ``torch.func``.

**Network.**  A four-block ConvNet (``width`` channels; Conv3x3 -> norm -> ReLU -> max-pool 2) followed
by a linear head.  The head is zero-initialised for every task and adapted in the inner loop with the
body ("zero trick"), so the same meta-learned body serves 5-way training episodes and the N-way
problem of the whole labeled set at test time.

**Meta-training.**  Episodes are drawn from the train split only: ``n_way`` identities, ``k_shot``
support and ``q_query`` query images of each (augmented when ``augment``).  The inner loop takes
``inner_steps`` SGD steps of size ``inner_lr`` on the support loss (``torch.func.grad`` over
``torch.func.functional_call``); the meta-loss is the query loss of the adapted weights, averaged over
``meta_batch`` episodes, and Adam updates the initial weights.  ``first_order: true`` drops the
second-order terms (FOMAML) by detaching the inner gradients.

**Normalization without leaks.**  Every norm layer normalises with the mean/variance of the *support*
images only, never of the images being classified (no running statistics, no transductive batch
statistics): in an episode the query images are normalised with the support statistics.  After
adaptation at test time the support statistics are computed once and frozen into the network, so
each test image is classified on its own, independently of the other test images.

**Evaluation protocol (the comparison table's row).**  After meta-training, the meta-learned weights
are adapted once on the labeled train split of *all* identities (the few-shot support: ``per_class``
images of each of the C identities, a C-way ``per_class``-shot task) with ``test_inner_steps`` steps,
and the adapted network classifies the test images.  Model selection uses the same protocol with the
val images as queries (every ``eval_every`` meta-steps); test is scored once.

A split without ``n_way`` identities holding ``k_shot + q_query`` train images each raises
:class:`EpisodeError`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from facekd.baselines.base import METHODS, Fitted, Method, Predictor, plain
from facekd.baselines.common import seed_augmentation, selection_score, step_train_config
from facekd.data.datasets import LabeledFaces
from facekd.data.labeled import LabeledData, split_datasets
from facekd.data.preprocess import Preprocess
from facekd.engine import Task, Trainer, load_best
from facekd.errors import FacekdError

__all__ = ["EpisodeError", "SupportNorm2d", "Conv4", "EpisodeSampler", "MAMLLearner", "MAMLTask", "MAML",
           "check_episodes"]

HEAD_W, HEAD_B = "head.weight", "head.bias"


class EpisodeError(FacekdError, ValueError):
    """The labeled set is too small for the requested N-way K-shot episodes."""


class SupportNorm2d(nn.Module):
    """Per-channel normalisation with the statistics of the first ``n_stats`` images of the batch (the support).

    Learnable affine ``weight`` / ``bias``.  With ``n_stats=None`` the whole batch is the support.  After
    :meth:`freeze` (called with the support's own statistics recorded) the stored statistics are used for
    any input.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("frozen_mean", torch.zeros(channels))
        self.register_buffer("frozen_var", torch.ones(channels))
        self.frozen = False
        self.record = False

    def forward(self, x: torch.Tensor, n_stats: int | None = None) -> torch.Tensor:
        if self.frozen:
            mean, var = self.frozen_mean, self.frozen_var
        else:
            ref = x if n_stats is None else x[:n_stats]
            mean, var = ref.mean((0, 2, 3)), ref.var((0, 2, 3), unbiased=False)
            if self.record:
                self.frozen_mean.copy_(mean.detach())
                self.frozen_var.copy_(var.detach())
        x = (x - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class Conv4(nn.Module):
    """Four Conv3x3 -> :class:`SupportNorm2d` -> ReLU -> MaxPool2 blocks, flattened, then a linear head.

    ``forward(x, n_stats)`` gives class scores; the head has ``num_classes`` outputs (its shape may be
    replaced through ``functional_call``, e.g. an N-way head in an episode).
    """

    def __init__(self, width: int = 32, input_size: int = 64, num_classes: int = 5) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3 if i == 0 else width, width, 3, padding=1) for i in range(4)])
        self.norms = nn.ModuleList([SupportNorm2d(width) for _ in range(4)])
        side = input_size
        for _ in range(4):
            side //= 2
        if side < 1:
            raise ValueError(f"input_size {input_size} is too small for four 2x2 max-pools")
        self.feature_dim = width * side * side
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor, n_stats: int | None = None) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = F.max_pool2d(F.relu(norm(conv(x), n_stats)), 2)
        return x.flatten(1)

    def forward(self, x: torch.Tensor, n_stats: int | None = None) -> torch.Tensor:
        return self.head(self.features(x, n_stats))

    @torch.no_grad()
    def freeze_support_stats(self, support: torch.Tensor) -> "Conv4":
        """Record the norm statistics of ``support`` (preprocessed) and use them for every later input."""
        for norm in self.norms:
            norm.frozen, norm.record = False, True
        self.features(support)
        for norm in self.norms:
            norm.frozen, norm.record = True, False
        return self


class MAMLLearner:
    """The inner loop: adapt a :class:`Conv4`'s weights (body + zero-initialised head) on a support set."""

    def __init__(self, net: Conv4, inner_lr: float, first_order: bool) -> None:
        self.net, self.inner_lr, self.first_order = net, float(inner_lr), bool(first_order)

    def body_params(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.net.named_parameters() if not k.startswith("head.")}

    def initial(self, n_way: int, params: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        p = dict(self.body_params() if params is None else params)
        ref = next(iter(p.values()))
        p[HEAD_W] = torch.zeros(n_way, self.net.feature_dim, device=ref.device, dtype=ref.dtype)
        p[HEAD_B] = torch.zeros(n_way, device=ref.device, dtype=ref.dtype)
        return p

    def logits(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, n_stats: int | None = None) -> torch.Tensor:
        return functional_call(self.net, dict(params), (x,), {"n_stats": n_stats})

    def loss(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(params, x), y)

    def adapt(self, params: Mapping[str, torch.Tensor], xs: torch.Tensor, ys: torch.Tensor, steps: int,
              first_order: bool | None = None) -> dict[str, torch.Tensor]:
        """``steps`` SGD steps on the support loss; differentiable w.r.t. ``params`` unless first-order."""
        first_order = self.first_order if first_order is None else first_order
        p = dict(params)
        for _ in range(int(steps)):
            g = grad(self.loss)(p, xs, ys)
            p = {k: p[k] - self.inner_lr * (g[k].detach() if first_order else g[k]) for k in p}
        return p

    def query_logits(self, params: Mapping[str, torch.Tensor], xs: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
        """Query scores with the norm statistics of the support only."""
        return self.logits(params, torch.cat([xs, xq]), n_stats=len(xs))[len(xs):]


def check_episodes(counts: np.ndarray, n_way: int, k_shot: int, q_query: int) -> np.ndarray:
    """The classes usable for episodes (at least ``k_shot + q_query`` train images); refuse too small a set."""
    if n_way < 2 or k_shot < 1 or q_query < 1:
        raise EpisodeError(f"episodes need n_way >= 2, k_shot >= 1 and q_query >= 1; got {n_way}, {k_shot}, {q_query}")
    eligible = np.flatnonzero(counts >= k_shot + q_query)
    if len(eligible) < n_way:
        raise EpisodeError(
            f"the train split is too small for {n_way}-way {k_shot}-shot episodes with {q_query} query image(s) per "
            f"class: that needs {n_way} identities with at least {k_shot + q_query} train images each, but only "
            f"{len(eligible)} of {len(counts)} identities have that many (train images per identity: "
            f"{int(counts.min()) if len(counts) else 0}-{int(counts.max()) if len(counts) else 0}). "
            f"Lower n_way / k_shot / q_query, or raise data.per_class.")
    return eligible


class EpisodeSampler:
    """An iterable of ``length`` meta-batches of episodes (uint8), reproducible per epoch.

    Each item is ``(xs, ys, xq, yq)`` with shapes ``M x NK x 3 x S x S``, ``M x NK``, ``M x NQ x ...``,
    ``M x NQ``; labels are episode-local (0..N-1).
    """

    def __init__(self, dataset: LabeledFaces, n_way: int, k_shot: int, q_query: int, meta_batch: int,
                 length: int, seed: int) -> None:
        self.ds, self.n_way, self.k, self.q, self.m = dataset, n_way, k_shot, q_query, meta_batch
        self.length, self.seed, self.epoch = int(length), int(seed), 0
        labels = dataset.labels.numpy()
        counts = np.bincount(labels, minlength=int(labels.max()) + 1 if len(labels) else 0)
        self.classes = check_episodes(counts, n_way, k_shot, q_query)
        self.index = {int(c): np.flatnonzero(labels == c) for c in self.classes}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def episode(self, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        classes = rng.choice(self.classes, size=self.n_way, replace=False)
        xs, ys, xq, yq = [], [], [], []
        for j, c in enumerate(classes):
            picks = rng.choice(self.index[int(c)], size=self.k + self.q, replace=False)
            imgs = [self.ds[int(i)][0] for i in picks]
            xs += imgs[:self.k]
            xq += imgs[self.k:]
            ys += [j] * self.k
            yq += [j] * self.q
        return torch.stack(xs), torch.tensor(ys), torch.stack(xq), torch.tensor(yq)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        for _ in range(self.length):
            eps = [self.episode(rng) for _ in range(self.m)]
            yield tuple(torch.stack(parts) for parts in zip(*eps))


class MAMLTask(Task):
    """Meta-training step over a meta-batch of episodes; val = adapt on the whole train split, classify val."""

    def __init__(self, net: Conv4, preprocess: Preprocess, cfg: Mapping[str, Any],
                 support: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                 num_classes: int) -> None:
        super().__init__()
        self.net, self.preprocess, self.num_classes = net, preprocess, num_classes
        self.learner = MAMLLearner(net, float(cfg.get("inner_lr", 0.1)), bool(cfg.get("first_order", False)))
        self.inner_steps = int(cfg.get("inner_steps", 5))
        self.test_inner_steps = int(cfg.get("test_inner_steps", 10))
        self.support, self.val = support, val

    def param_groups(self) -> list[torch.Tensor]:
        return list(self.learner.body_params().values())  # the per-task head is not meta-learned

    def training_step(self, batch: Any) -> Any:
        xs_all, ys_all, xq_all, yq_all = batch
        losses, accs = [], []
        for xs, ys, xq, yq in zip(xs_all, ys_all, xq_all, yq_all):
            xs, xq = self.preprocess(xs), self.preprocess(xq)
            n_way = int(ys.max()) + 1
            p = self.learner.adapt(self.learner.initial(n_way), xs, ys, self.inner_steps)
            logits = self.learner.query_logits(p, xs, xq)
            losses.append(F.cross_entropy(logits, yq))
            accs.append((logits.argmax(1) == yq).float().mean().detach())
        return torch.stack(losses).mean(), {"query_accuracy": torch.stack(accs).mean()}

    def adapt_support(self) -> dict[str, torch.Tensor]:
        """The weights adapted on the whole train split (all identities): the test-time protocol."""
        xs, ys = self.preprocess(self.support[0].to(self.device)), self.support[1].to(self.device)
        params = {k: v.detach() for k, v in self.learner.body_params().items()}
        p = self.learner.adapt(self.learner.initial(self.num_classes, params), xs, ys, self.test_inner_steps,
                               first_order=True)
        return {k: v.detach() for k, v in p.items()}

    def evaluate(self) -> dict[str, float]:
        p = self.adapt_support()
        xs = self.preprocess(self.support[0].to(self.device))
        logits = self.learner.query_logits(p, xs, self.preprocess(self.val[0].to(self.device))).float()
        y = self.val[1].to(logits.device)
        loss = float(F.cross_entropy(logits, y))
        acc = float((logits.argmax(1) == y).float().mean())
        return {"val_loss": loss, "val_accuracy": acc, "val_select": selection_score(acc, loss)}

    def deployable(self) -> Conv4:
        """A copy of the network with the adapted weights and frozen support statistics (for prediction)."""
        import copy

        p = self.adapt_support()
        net = copy.deepcopy(self.net)
        net.head = nn.Linear(net.feature_dim, self.num_classes).to(self.device)
        with torch.no_grad():
            for k, v in net.named_parameters():
                v.copy_(p[k])
        return net.freeze_support_stats(self.preprocess(self.support[0].to(self.device))).eval()


@METHODS.register("maml")
class MAML(Method):
    """MAML / FOMAML on N-way K-shot episodes of the train identities (see the module docstring)."""

    def student_name(self, cfg: Mapping[str, Any]) -> str:
        order = "first-order" if cfg.get("first_order", False) else "second-order"
        return f"conv4-{int(cfg.get('width', 32))}@{int(cfg.get('input_size', 64))} {order}"

    def check(self, data: LabeledData, cfg: Mapping[str, Any]) -> None:
        counts = np.bincount([y for _, y in data.split.train], minlength=data.num_classes)
        check_episodes(counts, int(cfg.get("n_way", 5)), int(cfg.get("k_shot", 1)), int(cfg.get("q_query", 1)))

    def fit(self, data: LabeledData, cfg: Mapping[str, Any], run_dir: Path, seed: int) -> Fitted:
        self.check(data, cfg)
        size = int(cfg.get("input_size", 64))
        net = Conv4(int(cfg.get("width", 32)), size, data.num_classes)
        pre = Preprocess(size=size, scale=1.0 / 255.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        sets = split_datasets(data, ("train", "val"), augment_train=bool(cfg.get("augment", True)))
        seed_augmentation(sets["train"], seed)
        support = split_datasets(data, ("train",), augment_train=False)["train"].tensors()
        tc, per_epoch = step_train_config(cfg, seed, amp=False, channels_last=False)
        episodes = EpisodeSampler(sets["train"], int(cfg.get("n_way", 5)), int(cfg.get("k_shot", 1)),
                                  int(cfg.get("q_query", 1)), int(cfg.get("meta_batch", 4)),
                                  per_epoch // tc.batch_size, seed)
        task = MAMLTask(net, pre, cfg, support, sets["val"].tensors(), data.num_classes)
        Trainer(tc, run_dir, config={"method": plain(cfg), "split": data.split.id}).fit(task, episodes)
        load_best(task, run_dir)
        deployed = task.deployable()
        return Fitted(Predictor(deployed, pre, output="scores").eval(), self.student_name(cfg),
                      extra={"first_order": bool(cfg.get("first_order", False)),
                             "episodes": f"{cfg.get('n_way', 5)}-way {cfg.get('k_shot', 1)}-shot"})
