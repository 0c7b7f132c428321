"""Stream mode of the synthetic source: faces made on the training device at every step, never stored.

``distill.sources.synthetic.mode=stream`` (with ``distill.teacher_mode=online``) replaces the generate
run's shards as a training source by a generator that runs in the training step: each step draws fresh
latents, the generator (``distill.sources.synthetic.stream.generator``, a generator config as in
``configs/generator/``) makes the faces on the device, :class:`facekd.distill.device_augment.DeviceAugment`
augments them there, the teacher runs on them and the student trains.  The generate run still provides
the synthetic holdout the per-epoch metrics and the best epoch are measured on.

Reproducibility: the randomness of a step (latents, augmentation parameters, hard-pool draws) comes from
one CPU ``torch.Generator`` seeded by ``(seed, epoch, batch, rank)``, so face ``j`` of a step is the same
in every run with the same seed (with hard-face resampling, given the same pool, which checkpoints keep).

Hard-face resampling (``stream.hard``, after SynthDistill): :class:`HardPool` keeps the ``pool_size``
latents on which the student's output was least like the teacher's feature (lowest cosine, measured as
they were trained on); a ``fraction`` of each step's stream faces are pool latents plus Gaussian noise of
std ``noise``.  The pool's mean cosine is the epoch metric ``hard_pool_cosine``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facekd.distill.batches import OnlineBatches
from facekd.distill.device_augment import DeviceAugment
from facekd.distill.views import ViewSource, fresh_views
from facekd.engine import ResumeError
from facekd.errors import ConfigError
from facekd.generators.base import FaceSampler
from facekd.generators import stage as generate_stage
from facekd.runs import config_hash
from facekd.validate import check_choice, check_float, check_int

__all__ = ["STREAM_SOURCE", "MODES", "StreamSettings", "HardPool", "StreamFaces", "StreamBatches",
           "build_stream_generator", "stream_source", "stats_faces", "stream_stats", "check_same_generator"]

STREAM_SOURCE = "synthetic-stream"
MODES = ("shards", "stream")
_KEY = "distill.sources.synthetic"


@dataclass(frozen=True)
class StreamSettings:
    """The checked ``distill.sources.synthetic.stream`` section."""

    generator: dict
    faces_per_epoch: int
    stats_faces: int
    augment: DeviceAugment | None
    augment_spec: dict | None
    hard_fraction: float
    hard_noise: float
    pool_size: int

    @classmethod
    def from_config(cls, d: Mapping[str, Any]) -> "StreamSettings | None":
        """None in ``shards`` mode; in ``stream`` mode the settings, refusing what stream mode cannot do."""
        synth = d["sources"]["synthetic"]
        mode = check_choice(synth.get("mode", "shards"), f"{_KEY}.mode", MODES)
        if mode == "shards":
            return None
        if d.get("teacher_mode") != "online":
            raise ConfigError(f"{_KEY}.mode=stream makes new faces every step, so the teacher must run every step: "
                              f"set distill.teacher_mode=online or auto (got {d.get('teacher_mode')!r}), or use "
                              f"{_KEY}.mode=shards for cached teacher features")
        if synth.get("targets", "view") != "view":
            raise ConfigError(f"{_KEY}.targets={synth.get('targets')} needs cached views; a streamed face is "
                              f"seen once, so stream mode trains on each face's own feature ({_KEY}.targets=view)")
        s = synth.get("stream") or {}
        gen = dict(s.get("generator") or {})
        if not gen.get("name"):
            raise ConfigError(f"{_KEY}.stream.generator.name is missing: name the generator to stream from "
                              "(e.g. dcgan, the embedded one)")
        hard = s.get("hard") or {}
        fraction = check_float(hard.get("fraction", 0.0), f"{_KEY}.stream.hard.fraction", minimum=0.0)
        if fraction >= 1:
            raise ConfigError(f"{_KEY}.stream.hard.fraction must be in [0, 1) (the share of each batch drawn from "
                              f"the hard-face pool; the rest are fresh faces, which refill the pool), got {fraction}; "
                              f"set it like {_KEY}.stream.hard.fraction=0.25")
        augment_spec = s.get("augment")
        return cls(generator=gen,
                   faces_per_epoch=check_int(s.get("faces_per_epoch", 2000), f"{_KEY}.stream.faces_per_epoch",
                                             minimum=1),
                   stats_faces=check_int(s.get("stats_faces", 256), f"{_KEY}.stream.stats_faces", minimum=2),
                   augment=DeviceAugment.from_config(augment_spec),
                   augment_spec=dict(augment_spec) if augment_spec is not None else None,
                   hard_fraction=fraction,
                   hard_noise=check_float(hard.get("noise", 0.2), f"{_KEY}.stream.hard.noise", minimum=0.0),
                   pool_size=check_int(hard.get("pool_size", 1024), f"{_KEY}.stream.hard.pool_size", minimum=1))

    def describe(self) -> dict:
        """What the manifest records (besides the generator's own description)."""
        return {"generator_config": self.generator, "faces_per_epoch": self.faces_per_epoch,
                "stats_faces": self.stats_faces, "augment": self.augment_spec,
                "hard": {"fraction": self.hard_fraction, "noise": self.hard_noise, "pool_size": self.pool_size}}


def build_stream_generator(settings: StreamSettings, device: torch.device) -> FaceSampler:
    """The stream's generator on the training ``device``; refuses one that cannot stream there."""
    spec = dict(settings.generator)
    name = spec.get("name")
    asked = spec.pop("device", None)
    if asked not in (None, "auto") and torch.device(str(asked)).type != device.type:
        raise ConfigError(f"{_KEY}.stream.generator.device={asked} but training runs on {device}: the stream's "
                          f"generator runs in the training step, on the training device; drop the key or set "
                          f"device={device.type}")
    sampler = generate_stage.build_generator(spec, device)  # looked up at call time (tests patch it)
    if sampler.latent_dim is None:
        raise ConfigError(f"{_KEY}.stream.generator.name={name} cannot stream on {device}: stream mode needs a "
                          "generator that maps latents to faces in one forward pass on the training device "
                          f"(dcgan); make faces with the generate stage and use {_KEY}.mode=shards instead")
    return sampler


def stream_source(settings: StreamSettings, sampler: FaceSampler, synth_cfg: Mapping[str, Any],
                  seed: int) -> ViewSource:
    """The stream's entry in the source mixture (its ``size`` = faces per epoch; it is never ``read``)."""
    def never(idx: np.ndarray) -> np.ndarray:
        raise RuntimeError("stream faces are made in the training step, not read")

    gen = {k: v for k, v in sampler.describe().items() if k != "source"}
    return ViewSource(name=STREAM_SOURCE, size=settings.faces_per_epoch, read=never, seed=seed,
                      fingerprint=config_hash({"generator": gen, "augment": settings.augment_spec, "seed": seed}),
                      weight=float(synth_cfg.get("weight", 1.0)), targets="view", augment_spec=settings.augment_spec)


def check_same_generator(old: Mapping[str, Any], settings: StreamSettings, sampler: FaceSampler) -> None:
    """Refuse to resume a stream run (manifest ``old``) with another generator, naming what changed."""
    before = ((old.get("config") or {}).get("distill", {}).get("sources", {}).get("synthetic") or {})
    if before.get("mode") != "stream":
        return
    was = dict((before.get("stream") or {}).get("generator") or {})
    changed = [f"{_KEY}.stream.generator.{k} was {was.get(k)!r}, now {settings.generator.get(k)!r}"
               for k in sorted(set(was) | set(settings.generator)) if was.get(k) != settings.generator.get(k)]
    old_sha = ((old.get("stream") or {}).get("generator") or {}).get("weights_sha256")
    new_sha = sampler.describe().get("weights_sha256")
    if not changed and old_sha and new_sha and old_sha != new_sha:
        changed = [f"the stream generator's weights (sha256 {old_sha[:12]}..., now {new_sha[:12]}...)"]
    if changed:
        raise ResumeError("cannot resume this stream run with another generator: " + "; ".join(changed)
                          + ". Resume with the run's own generator settings, or start a fresh run (resume=false, "
                          "or another distill.name)")


class HardPool(nn.Module):
    """The ``size`` latents of lowest student-teacher cosine seen so far (buffers: checkpointed, resumed)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("latents", torch.zeros(size, dim))
        self.register_buffer("cosine", torch.full((size,), float("inf")))  # inf = empty slot

    @property
    def filled(self) -> int:
        return int(torch.isfinite(self.cosine).sum())

    @torch.no_grad()
    def update(self, z: torch.Tensor, cos: torch.Tensor) -> None:
        """Offer latents ``z`` with their cosines; the pool keeps the lowest ``size`` of old and new."""
        all_z = torch.cat([self.latents, z.to(self.latents)])
        all_c = torch.cat([self.cosine, cos.to(self.cosine)])
        keep = torch.argsort(all_c, stable=True)[: len(self.cosine)]
        self.latents.copy_(all_z[keep])
        self.cosine.copy_(all_c[keep])

    def mean_cosine(self) -> float:
        c = self.cosine[torch.isfinite(self.cosine)]
        return float(c.mean()) if len(c) else float("nan")


def _step_seed(seed: int, key: Sequence[int]) -> int:
    text = "/".join(str(int(k)) for k in (seed, *key))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & (2**63 - 1)


class StreamFaces:
    """Makes a step's stream faces on the generator's device: uint8 ``n x 3 x S x S``, ``S = view_size``."""

    def __init__(self, sampler: FaceSampler, settings: StreamSettings, seed: int, view_size: int) -> None:
        self.sampler, self.settings, self.seed, self.view_size = sampler, settings, int(seed), int(view_size)
        dim = int(sampler.latent_dim)
        self.pool = HardPool(settings.pool_size, dim).to(sampler.device) if settings.hard_fraction > 0 else None

    def make(self, n: int, key: Sequence[int], hard: bool = True) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(faces, latents, hard count)`` for ``n`` faces of step ``key`` (epoch, batch, rank).

        The first ``hard count`` faces come from the hard pool (when ``hard`` and the pool holds latents).
        """
        s, device = self.settings, self.sampler.device
        gen = torch.Generator("cpu").manual_seed(_step_seed(self.seed, key))
        z = torch.randn(n, int(self.sampler.latent_dim), generator=gen)
        params = s.augment.params(n, gen) if s.augment is not None else None
        z = z.to(device, non_blocking=True)
        n_hard = 0
        if hard and self.pool is not None and (filled := self.pool.filled) > 0:
            n_hard = min(n, int(round(s.hard_fraction * n)))
            idx = torch.randint(filled, (n_hard,), generator=gen).to(device)
            eps = torch.randn(n_hard, z.shape[1], generator=gen).to(device)
            z[:n_hard] = self.pool.latents[idx].to(z) + s.hard_noise * eps
        # fp32 augmentation even inside the training step's bf16 autocast (the generator sets its own precision)
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            x = self.sampler.from_latents(z).float()
            size = self.view_size
            if s.augment is not None:
                x = s.augment.apply(x, params, size)
            elif tuple(x.shape[-2:]) != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            faces = (x * 255).round_().clamp_(0, 255).to(torch.uint8)
        return faces, z, n_hard

    def fill(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """A stream batch's images with its stream rows filled in: ``(images, latents or None, stream mask)``."""
        images, mask = batch["views"], batch["stream"]
        epoch, b, rank, n = (int(k) for k in batch["key"])
        if n == 0:
            return images, None, mask
        faces, z, _ = self.make(n, (epoch, b, rank))
        images = images.clone()
        images[mask] = faces.to(images.device)
        return images, z, mask


class StreamBatches(OnlineBatches):
    """Online batches in which the stream source's rows are left for :meth:`StreamFaces.fill`.

    A batch is ``{"views": uint8 B x 3 x S x S (zeros in stream rows), "stream": bool B,
    "key": (epoch, batch, rank, stream rows)}``; the other sources' rows are fresh augmented views, as in
    :class:`OnlineBatches`.
    """

    def __init__(self, sources: Sequence[ViewSource], weights: Sequence[float], batch_size: int, view_size: int,
                 samples_per_epoch: int | None = None, **kwargs) -> None:
        super().__init__(sources, weights, batch_size, view_size, samples_per_epoch, **kwargs)
        self.stream_index = next((i for i, s in enumerate(self.sources) if s.name == STREAM_SOURCE), -1)

    def load(self, rows: np.ndarray, epoch: int, b: int) -> dict[str, Any]:
        out = np.zeros((len(rows), self.view_size, self.view_size, 3), dtype=np.uint8)
        seeds = np.random.default_rng([self.seed, epoch, b, self.rank, 29]).integers(0, 2**32, len(rows))
        stream = rows[:, 0] == self.stream_index
        for s in np.unique(rows[~stream, 0]):
            sel = np.flatnonzero(rows[:, 0] == s)
            out[sel] = fresh_views(self.sources[s], rows[sel, 1], seeds[sel], self.view_size)
        return {"views": torch.from_numpy(out).permute(0, 3, 1, 2), "stream": torch.from_numpy(stream),
                "key": (int(epoch), int(b), int(self.rank), int(stream.sum()))}


@dataclass
class _Stats:
    mean: np.ndarray
    std: np.ndarray

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        return self.mean, self.std


def stats_faces(stream: StreamFaces, batch_size: int = 64) -> torch.Tensor:
    """The ``stats_faces`` seeded stream faces (epoch 0, no pool) that set the target statistics (uint8, CPU)."""
    n = stream.settings.stats_faces
    return torch.cat([stream.make(min(batch_size, n - lo), (0, b, 0), hard=False)[0].cpu()
                      for b, lo in enumerate(range(0, n, batch_size))])


def stream_stats(stream: StreamFaces, teacher: Any, batch_size: int = 64) -> _Stats:
    """Mean and std of the teacher's features over :func:`stats_faces`."""
    faces, feats = stats_faces(stream, batch_size), []
    for lo in range(0, len(faces), batch_size):
        with torch.no_grad():
            feats.append(teacher.features(faces[lo:lo + batch_size].to(stream.sampler.device)).double().cpu())
    f = torch.cat(feats)
    return _Stats(f.mean(0).numpy().astype(np.float32), f.std(0).numpy().astype(np.float32))
