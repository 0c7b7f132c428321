"""The distill stage's inputs, prepared once before training (rank 0 first under DDP): the training sources
(synthetic shards or the stream, labeled train views, mixup, a folder), their teacher-feature caches, the eval
caches (synthetic holdout, real val / test), the feature statistics of the source mixture and, in paper mode,
the connector (``connector.safetensors``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from facekd.data.labeled import LabeledData, prepare_labeled
from facekd.data.synthetic import SyntheticFaces
from facekd.distill.cache import FeatureCache, ImageMeanTargets, build_feature_cache
from facekd.distill.connector import Connector, train_connector
from facekd.distill.losses import FeatureStats
from facekd.distill.sources import (active_source_weights, check_no_leak, folder_source, labeled_mixup_source,
                                    labeled_train_items, labeled_train_source, real_eval_sources,
                                    synthetic_mixup_source, synthetic_sources)
from facekd.distill.stream import STREAM_SOURCE, StreamFaces, stream_source, stream_stats
from facekd.distill.views import ViewSource
from facekd.engine import save_safetensors
from facekd.hashing import read_safetensors
from facekd.models import Teacher
from facekd.runs import read_json, write_json

__all__ = ["CONNECTOR_FILE", "DistillInputs", "mixture_stats", "prepare_inputs"]

CONNECTOR_FILE = "connector.safetensors"


def mixture_stats(stats: list[tuple[np.ndarray, np.ndarray]], weights: list[float]) -> FeatureStats:
    """Mean and std of a mixture of sources sampled with ``weights`` (each source's mean and std given)."""
    p = np.asarray(weights, dtype=np.float64)
    p = p / p.sum()
    mean = sum(pi * m.astype(np.float64) for pi, (m, _) in zip(p, stats))
    second = sum(pi * (s.astype(np.float64) ** 2 + m.astype(np.float64) ** 2) for pi, (m, s) in zip(p, stats))
    std = np.sqrt(np.maximum(second - mean**2, 0.0))
    return FeatureStats(torch.from_numpy(mean).float(), torch.from_numpy(std).float())


@dataclass
class DistillInputs:
    """Everything the training needs, prepared once (rank 0 first under DDP)."""

    train_sources: list[ViewSource]
    weights: list[float]
    train_caches: list[FeatureCache | ImageMeanTargets]  # cached mode: one per source; online mode: empty
    stats: FeatureStats
    evals: dict[str, FeatureCache]
    labeled: LabeledData | None
    connector: Connector | None = None
    connector_info: dict = field(default_factory=dict)
    stats_caches: list[FeatureCache] = field(default_factory=list)


def prepare_inputs(cfg: dict, teacher: Teacher, store_size: int, device: torch.device, paper: bool,
                   connector_cfg: dict, run_dir: Path, reuse_connector: bool,
                   stream: StreamFaces | None = None) -> DistillInputs:
    """The sources, their teacher-feature caches, the eval caches, the feature statistics and (paper mode) the
    connector of the distill config ``cfg``; ``reuse_connector`` reads a connector this run saved before."""
    d, seed = cfg["distill"], int(cfg.get("seed", 0))
    presets = d.get("augment_presets") or {}
    root, bs = Path(d["cache_dir"]), int(d.get("cache_batch_size", 64))
    src_cfg = d["sources"]

    def cache(source: ViewSource) -> FeatureCache:
        return build_feature_cache(source, teacher, teacher.signature, root, store_size, device, batch_size=bs,
                                   progress=bool(d["train"].get("progress", True)))

    faces = SyntheticFaces(d["generate_run"])
    synth, holdout = synthetic_sources(faces, src_cfg["synthetic"], presets, seed)
    shard_faces = synth  # the generate run's training range (what synthetic_mixup blends), also in stream mode
    if stream is not None:  # the generate run keeps only the holdout; training faces are made per step
        synth = stream_source(stream.settings, stream.sampler, src_cfg["synthetic"], seed)
    sources: list[ViewSource] = [synth]
    labeled = None
    active = active_source_weights(src_cfg)
    lt_cfg = src_cfg.get("labeled_train") or {}
    want_labeled_train = "labeled_train" in active or paper  # paper mode trains its connector on these views
    if d.get("eval_real", True) or want_labeled_train or {"labeled_mixup", "synthetic_mixup"} & set(active):
        labeled = prepare_labeled(cfg["data"], cfg["paths"]["root"])
    lt_source = labeled_train_source(labeled, lt_cfg, presets, seed) if want_labeled_train else None
    if "labeled_train" in active:
        sources.append(lt_source)
    if "labeled_mixup" in active:
        sources.append(labeled_mixup_source(labeled, src_cfg["labeled_mixup"], presets, seed))
    if "synthetic_mixup" in active:
        sources.append(synthetic_mixup_source(labeled, shard_faces, src_cfg["synthetic_mixup"], presets, seed))
    if "folder" in active:
        sources.append(folder_source(src_cfg["folder"], presets, seed))
    sources = [s for s in sources if s.weight > 0]
    if not sources:
        raise ValueError("every distillation source has weight 0: give distill.sources.<name>.weight > 0")
    check_no_leak(sources, labeled)
    weights = [s.weight for s in sources]

    evals = {"holdout": cache(holdout)}
    if labeled is not None and d.get("eval_real", True):
        for part, src in real_eval_sources(labeled, d.get("eval_max_images")).items():
            evals[f"real_{part}"] = cache(src)

    if d["teacher_mode"] == "cached":
        train_caches = [ImageMeanTargets(cache(s), s.views) if s.targets == "image_mean" else cache(s)
                        for s in sources]
        stats_caches = train_caches
    else:  # online: statistics from one seeded augmented view of every image (the cached views when views=1)
        if any(s.targets != "view" for s in sources):
            raise ValueError("targets: image_mean needs the cached teacher features of every view "
                             "(distill.teacher_mode=cached); online mode trains on each fresh view's own features")
        train_caches = []
        stats_caches = [stream_stats(stream, teacher, bs) if s.name == STREAM_SOURCE
                        else cache(ViewSource(**{**s.__dict__, "views": 1})) for s in sources]
    stats = mixture_stats([c.stats() for c in stats_caches], weights)

    connector, info = None, {}
    if paper:
        connector, info = _paper_connector(cache(lt_source), lt_source, labeled, lt_cfg, stats, connector_cfg, seed,
                                           run_dir, reuse_connector)
    return DistillInputs(sources, weights, train_caches, stats, evals, labeled, connector, info, stats_caches)


def _paper_connector(lt_cache: FeatureCache, lt_source: ViewSource, labeled: LabeledData, lt_cfg: Mapping[str, Any],
                     stats: FeatureStats, connector_cfg: dict, seed: int, run_dir: Path,
                     reuse_connector: bool) -> tuple[Connector, dict]:
    """The paper connector, trained on the labeled train views' teacher features (or read back when this run
    saved one before an interruption), with what ``connector.json`` records."""
    labels = np.asarray([y for _, y in labeled_train_items(labeled, lt_cfg.get("max_images"))], dtype=np.int64)
    view_labels = labels[np.arange(len(lt_cache)) // lt_source.views]
    path = run_dir / CONNECTOR_FILE
    if reuse_connector and path.exists():
        connector = Connector(stats)
        connector.load_state_dict(read_safetensors(
            path, writer="this distill run (the paper connector, saved before an interruption)",
            fix="delete it and resume the run (resume=true), which trains the connector again"))
        connector.requires_grad_(False).eval()
        return connector, read_json(run_dir / "connector.json")
    connector, info = train_connector(lt_cache.features, view_labels, stats, connector_cfg, seed)
    save_safetensors(connector.state_dict(), path)
    write_json(run_dir / "connector.json", info)
    return connector, info
