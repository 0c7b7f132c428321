"""Training batches for distillation: a weighted mixture of sources, a pure function of (seed, epoch, rank).

Each epoch draws ``samples_per_epoch`` items from the sources in proportion to their weights (exact
counts, largest remainders), each source's items without replacement until it runs out (then a new
permutation), shuffles them together and gives rank ``r`` of ``w`` every ``w``-th full batch slot.
Nothing depends on the batch history, so a resumed run sees exactly the batches it would have seen.

* :class:`CachedBatches` reads the views and their cached teacher features from memory-mapped caches,
  a whole batch at a time: ``(uint8 B x 3 x S x S, float16 B x D)``.
* :class:`OnlineBatches` makes a fresh augmented view of each drawn image (seeded by seed, epoch and
  position) at one common size: ``uint8 B x 3 x S x S``; the teacher then runs in the training step.

(:class:`facekd.distill.stream.StreamBatches` extends the online batches with rows left for faces made
on the device in the training step, stream mode.)

Both are iterables with ``len`` and ``set_epoch`` (what :class:`facekd.engine.Trainer` expects); the
loading runs in a ``DataLoader`` with ``num_workers`` workers, one batch per item.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from facekd.distill.cache import FeatureCache
from facekd.distill.views import ViewSource, fresh_views
from facekd.errors import ConfigError

__all__ = ["mixture_counts", "epoch_plan", "CachedBatches", "OnlineBatches"]


def mixture_counts(total: int, weights: Sequence[float]) -> np.ndarray:
    """Split ``total`` draws over sources in proportion to ``weights`` (largest-remainder rounding)."""
    w = np.asarray(weights, dtype=np.float64)
    if total < 0 or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need total >= 0 and non-negative weights with a positive sum, got {total}, {list(w)}")
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    rest = total - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
    return counts


def epoch_plan(sizes: Sequence[int], weights: Sequence[float], total: int, seed: int, epoch: int) -> np.ndarray:
    """``total`` x 2 int64 rows ``(source, item)`` for one epoch, shuffled (deterministic in seed and epoch)."""
    counts = mixture_counts(total, weights)
    parts = []
    for s, (n, c) in enumerate(zip(sizes, counts)):
        if c == 0:
            continue
        if n < 1:
            raise ValueError(f"source {s} has weight but no items")
        rng = np.random.default_rng([seed, epoch, s, 17])
        reps = -(-int(c) // int(n))
        items = np.concatenate([rng.permutation(n) for _ in range(reps)])[:c]
        parts.append(np.stack([np.full(c, s), items], axis=1))
    plan = np.concatenate(parts)
    return plan[np.random.default_rng([seed, epoch, 23]).permutation(len(plan))]


class _PlanBatches(Dataset):
    """Batch ``b`` of the current plan (one DataLoader item per batch)."""

    def __init__(self, owner: "_MixtureBatches", plan: np.ndarray, epoch: int) -> None:
        self.owner, self.plan, self.epoch = owner, plan, epoch

    def __len__(self) -> int:
        return len(self.plan) // self.owner.batch_size

    def __getitem__(self, b: int):
        bs = self.owner.batch_size
        return self.owner.load(self.plan[b * bs : (b + 1) * bs], self.epoch, b)


class _MixtureBatches:
    def __init__(self, sizes: Sequence[int], weights: Sequence[float], batch_size: int, samples_per_epoch: int,
                 seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 pin_memory: bool = False) -> None:
        if samples_per_epoch < batch_size * world_size:
            raise ConfigError(f"{samples_per_epoch} samples per epoch make no full batch of {batch_size} on each of "
                              f"{world_size} processes; lower train.batch_size or raise distill.samples_per_epoch")
        self.sizes, self.weights = [int(n) for n in sizes], [float(w) for w in weights]
        self.batch_size, self.total, self.seed = int(batch_size), int(samples_per_epoch), int(seed)
        self.rank, self.world_size = rank, world_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.total // (self.batch_size * self.world_size)

    def plan(self, epoch: int) -> np.ndarray:
        """This rank's ``(source, item)`` rows for ``epoch``, a whole number of batches."""
        full = epoch_plan(self.sizes, self.weights, self.total, self.seed, epoch)
        keep = len(self) * self.batch_size * self.world_size
        return full[:keep].reshape(len(self), self.world_size, self.batch_size, 2)[:, self.rank].reshape(-1, 2)

    def load(self, rows: np.ndarray, epoch: int, b: int):
        raise NotImplementedError

    def __iter__(self):
        data = _PlanBatches(self, self.plan(self.epoch), self.epoch)
        loader = DataLoader(data, batch_size=None, shuffle=False, num_workers=self.num_workers,
                            pin_memory=self.pin_memory, prefetch_factor=4 if self.num_workers else None)
        return iter(loader)


class CachedBatches(_MixtureBatches):
    """Views and teacher features from feature caches (the teacher never runs)."""

    def __init__(self, caches: Sequence[FeatureCache], weights: Sequence[float], batch_size: int,
                 samples_per_epoch: int | None = None, taps: Sequence[Sequence[np.ndarray]] | None = None,
                 **kwargs) -> None:
        self.caches = list(caches)
        self.taps = [list(t) for t in taps] if taps else None  # per cache: one target array per tap pair
        sizes = [len(c) for c in self.caches]
        total = samples_per_epoch or sum(n for n, w in zip(sizes, weights) if w > 0)
        super().__init__(sizes, weights, batch_size, total, **kwargs)

    def load(self, rows: np.ndarray, epoch: int, b: int) -> tuple[torch.Tensor, ...]:
        """``(images, features)``, plus one tensor per tap pair when the caches have tap targets."""
        first = self.caches[0]
        images = np.empty((len(rows), *first.images.shape[1:]), dtype=np.uint8)
        feats = np.empty((len(rows), first.dim), dtype=np.float16)
        taps = [np.empty((len(rows), *t.shape[1:]), dtype=np.float16) for t in self.taps[0]] if self.taps else []
        for s in np.unique(rows[:, 0]):
            sel = np.flatnonzero(rows[:, 0] == s)
            idx = rows[sel, 1]
            order = np.argsort(idx)  # sorted reads are kinder to the page cache
            images[sel[order]] = self.caches[s].images[idx[order]]
            feats[sel[order]] = self.caches[s].features[idx[order]]
            for out, src in zip(taps, self.taps[s] if self.taps else []):
                out[sel[order]] = src[idx[order]]
        return (torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(feats),
                *(torch.from_numpy(t) for t in taps))


class OnlineBatches(_MixtureBatches):
    """Freshly augmented views of the sources' images, ``view_size`` square (the teacher runs per step)."""

    def __init__(self, sources: Sequence[ViewSource], weights: Sequence[float], batch_size: int, view_size: int,
                 samples_per_epoch: int | None = None, **kwargs) -> None:
        self.sources, self.view_size = list(sources), int(view_size)
        sizes = [s.size for s in self.sources]
        total = samples_per_epoch or sum(s.size * s.views for s, w in zip(self.sources, weights) if w > 0)
        super().__init__(sizes, weights, batch_size, total, **kwargs)

    def load(self, rows: np.ndarray, epoch: int, b: int) -> torch.Tensor:
        out = np.empty((len(rows), self.view_size, self.view_size, 3), dtype=np.uint8)
        seeds = np.random.default_rng([self.seed, epoch, b, self.rank, 29]).integers(0, 2**32, len(rows))
        for s in np.unique(rows[:, 0]):
            sel = np.flatnonzero(rows[:, 0] == s)
            out[sel] = fresh_views(self.sources[s], rows[sel, 1], seeds[sel], self.view_size)
        return torch.from_numpy(out).permute(0, 3, 1, 2)
