"""The generate stage: N reproducible synthetic faces written as uint8 shards into a run folder.

Face ``j`` is the ``j``-th accepted seed ``s >= first_seed`` in increasing order, drawn from
``torch.Generator("cpu").manual_seed(s)``; without the face filter every seed is accepted, so face ``j``
is seed ``first_seed + j`` and shard ``i`` covers seeds ``[i*S, (i+1)*S)`` after ``first_seed``.  With the
filter, a rejected seed is replaced by the next seeds beyond, in order.  The bytes therefore do not depend
on the batch size, on where a run starts or on a resume in between.

The run is resumable: finished shards are skipped, the others are (re)written; a folder made with a
different configuration is refused unless ``overwrite=true``.  Every bad input is refused before anything
in the folder is touched.

The manifest's ``artifacts`` records the sha256 and size of every file written (shards, ``seeds.npy``,
preview); later stages check the shards against it.  Rerunning the stage on a complete run remakes any
shard whose file no longer matches (the faces are deterministic, so the bytes come back the same), and
remakes a complete run that records no checksums.
"""
from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from facekd.config import plain as _container
from facekd.data import synthetic
from facekd.data.synthetic import PREVIEW_FILE, SEEDS_FILE, SHARD_DIR, STAGE, SyntheticFaces
from facekd.engine import resolve_device
from facekd.hashing import artifact_checksums, content_hashes
from facekd.runs import MANIFEST, RunError, atomic_path, config_hash, read_json, write_manifest

from .base import FaceSampler, GeneratorError
from .face_filter import FaceFilter
from .registry import GENERATORS

__all__ = ["GenerateSettings", "generate", "build_generator", "run_dir_for"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateSettings:
    """The ``generate`` section of the config, checked."""

    name: str
    num_images: int
    batch_size: int = 256
    shard_size: int = 4096
    image_size: int = 64
    first_seed: int = 0
    overwrite: bool = False
    preview: int = 64
    progress: bool = True
    filter_enabled: bool = False
    filter_threshold: float = 0.95

    def __post_init__(self) -> None:
        for key in ("num_images", "batch_size", "shard_size", "image_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise GeneratorError(f"generate.{key} must be a positive integer, got {value!r}")
        if self.first_seed < 0:
            raise GeneratorError(f"generate.first_seed must be >= 0, got {self.first_seed}")
        if self.preview < 0:
            raise GeneratorError(f"generate.preview must be >= 0, got {self.preview}")
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise GeneratorError(f"generate.name must be a plain folder name, got {self.name!r}")
        if self.filter_enabled and not 0.0 < self.filter_threshold <= 1.0:
            raise GeneratorError(f"generate.filter.threshold must be in (0, 1], got {self.filter_threshold}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> GenerateSettings:
        sec = dict(section)
        flt = dict(sec.pop("filter", None) or {})
        known = {f for f in cls.__dataclass_fields__ if not f.startswith("filter_")}
        unknown = set(sec) - known
        if unknown:
            raise GeneratorError(f"unknown generate keys {sorted(unknown)}; known: {sorted(known | {'filter'})}")
        return cls(**sec, filter_enabled=bool(flt.get("enabled", False)),
                   filter_threshold=float(flt.get("threshold", 0.95)))


def build_generator(gen_cfg: Mapping[str, Any], device: torch.device | str = "auto") -> FaceSampler:
    """Build the generator named ``gen_cfg["name"]`` from the registry, with the rest of ``gen_cfg``."""
    spec = dict(gen_cfg)
    name = spec.pop("name", None)
    try:
        builder = GENERATORS.get(str(name))
    except KeyError as e:
        raise GeneratorError(e.args[0]) from None
    return builder(device=resolve_device(device), **spec)


def run_dir_for(root: str | Path, name: str) -> Path:
    """Where a generate run named ``name`` lives: ``<paths.root>/generate/<name>``."""
    return Path(root) / STAGE / name


def _identity(settings: GenerateSettings, gen_cfg: Mapping[str, Any], sampler: FaceSampler,
              flt: FaceFilter | None) -> dict:
    """Everything that determines the faces' bytes (not the batch size, the device or the folder)."""
    described = sampler.describe()
    return {"generator": {"name": gen_cfg.get("name"), **{k: v for k, v in described.items() if k != "source"}},
            "num_images": settings.num_images, "shard_size": settings.shard_size,
            "image_size": settings.image_size, "first_seed": settings.first_seed,
            "filter": flt.describe() if flt else None}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _prepare_folder(run_dir: Path, identity: dict, overwrite: bool) -> bool:
    """Check that ``run_dir`` is empty or holds this same run; clear it when ``overwrite``.

    Returns True when the folder already holds a complete run of this configuration.
    """
    manifest_path = run_dir / MANIFEST
    ours = [run_dir / SHARD_DIR, manifest_path, run_dir / SEEDS_FILE, run_dir / PREVIEW_FILE]
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return False
    reason = None
    old: dict | None = None
    if manifest_path.exists():
        try:
            old = read_json(manifest_path)
        except ValueError:
            reason = "its manifest.json is unreadable"
    if old is not None:
        if old.get("stage") != STAGE:
            reason = f"it is a '{old.get('stage')}' run, not a generate run"
        elif old.get("config_hash") != config_hash(identity):
            new, was = _flatten(identity), _flatten(old.get("config", {}))
            changed = [f"{k} {was.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(new) | set(was))
                       if new.get(k) != was.get(k)]
            reason = f"it holds faces made with another configuration (differs in: {', '.join(changed)})"
    elif reason is None and any(p.exists() for p in ours):
        reason = "it holds shards but no manifest.json"
    elif reason is None:
        reason = "it holds other files"
    if reason is None:
        return bool(old and old.get("complete"))
    if not overwrite:
        raise RunError(f"refusing to write into {run_dir}: {reason}. Pass generate.overwrite=true to clear it, "
                       f"or choose another folder with generate.name=...")
    if old is None and not any(p.exists() for p in ours):
        raise RunError(f"refusing to clear {run_dir}: it is not a generate run folder ({reason})")
    log.warning("overwrite=true: clearing %s (%s)", run_dir, reason)
    for p in ours:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    return False


class _ShardFiller:
    """Fills one shard buffer with accepted faces, seed after seed, in batches.

    Without the filter the batches are known in advance, so the next batch's noise is prepared on the CPU
    (in ``prefetch``, one thread) while the current one runs on the device.
    """

    def __init__(self, sampler: FaceSampler, settings: GenerateSettings, flt: FaceFilter | None, bar: tqdm,
                 prefetch: ThreadPoolExecutor) -> None:
        self.sampler, self.settings, self.flt, self.bar, self.prefetch = sampler, settings, flt, bar, prefetch

    def fill(self, count: int, start_seed: int) -> tuple[np.ndarray, list[int], int]:
        """``count`` faces from seeds ``start_seed, start_seed+1, ...``; returns (faces, their seeds, next seed)."""
        size = self.settings.image_size
        out = np.empty((count, size, size, 3), dtype=np.uint8)
        if self.flt is None:
            return self._fill_all(out, start_seed)
        seeds: list[int] = []
        seed = start_seed
        while len(seeds) < count:
            cand = list(range(seed, seed + min(self.settings.batch_size, count - len(seeds))))
            seed += len(cand)
            faces = self.sampler.sample(cand, size)
            keep = self.flt(faces)
            faces = faces[torch.from_numpy(keep)]
            cand = [s for s, k in zip(cand, keep) if k]
            out[len(seeds):len(seeds) + len(cand)] = faces.numpy()
            seeds.extend(cand)
            self.bar.update(len(cand))
            tried = seed - start_seed
            if tried >= 20 * count + 256 and len(seeds) < tried / 20:
                raise RunError(f"the face filter rejected {tried - len(seeds)} of {tried} samples; "
                               f"lower generate.filter.threshold ({self.flt.threshold}) or turn the filter off")
        return out, seeds, seed

    def _fill_all(self, out: np.ndarray, start_seed: int) -> tuple[np.ndarray, list[int], int]:
        count, bs = len(out), self.settings.batch_size
        batches = [range(start_seed + k, start_seed + min(k + bs, count)) for k in range(0, count, bs)]
        nxt = self.prefetch.submit(self.sampler.prepare, batches[0])
        for k, seeds in enumerate(batches):
            prepared = nxt.result()
            if k + 1 < len(batches):
                nxt = self.prefetch.submit(self.sampler.prepare, batches[k + 1])
            pos = seeds.start - start_seed
            out[pos:pos + len(seeds)] = self.sampler.run(prepared, self.settings.image_size).numpy()
            self.bar.update(len(seeds))
        return out, list(range(start_seed, start_seed + count)), start_seed + count


def _shard_file(run_dir: Path, index: int) -> str:
    return synthetic.shard_paths(run_dir, index)[0].relative_to(run_dir).as_posix()


def _changed_shards(run_dir: Path, recorded: Any, records: list[dict | None]) -> list[int]:
    """The finished shards (``records[i]`` not None) whose file changed since it was written: it differs from
    the checksum in ``recorded`` (the manifest's ``artifacts``) or, when none was recorded, its array differs
    from the sha256 in the shard's own record."""
    done = [i for i, r in enumerate(records) if r is not None]
    if not isinstance(recorded, Mapping):
        return [i for i in done if synthetic.array_sha256(np.load(synthetic.shard_paths(run_dir, i)[0], mmap_mode="r",
                                                                  allow_pickle=False)) != records[i].get("sha256")]
    known = [(i, _shard_file(run_dir, i)) for i in done if _shard_file(run_dir, i) in recorded]
    digests = content_hashes([run_dir / n for _, n in known])
    return [i for (i, n), d in zip(known, digests) if d != recorded[n].get("sha256")]


def _artifacts(run_dir: Path, num_shards: int) -> dict:
    names = [_shard_file(run_dir, i) for i in range(num_shards)] + [SEEDS_FILE]
    return artifact_checksums(run_dir, names + ([PREVIEW_FILE] if (run_dir / PREVIEW_FILE).is_file() else []))


def _complete_and_intact(run_dir: Path) -> bool:
    """Whether the complete run in ``run_dir`` needs no work: its shards match the recorded checksums.
    Anything damaged or unrecorded is logged, and left to the caller to repair."""
    try:
        faces = SyntheticFaces(run_dir)
    except RunError as e:
        log.warning("%s; repairing it", e)
        return False
    if "artifacts" not in faces.manifest:
        log.warning("%s records no checksums; remaking it", run_dir)
        return False
    records = [synthetic.read_shard_record(run_dir, i) for i in range(len(faces.lengths))]
    changed = _changed_shards(run_dir, faces.manifest["artifacts"], records)
    if changed:
        log.warning("%s: shard file(s) %s no longer match the sha256 recorded when they were written; remaking "
                    "them", run_dir, ", ".join(_shard_file(run_dir, i) for i in changed))
        return False
    return True


def _write_preview(run_dir: Path, lengths: list[int], count: int) -> None:
    """A grid of the first ``count`` faces (read memory-mapped from the first shards)."""
    from torchvision.utils import make_grid, save_image

    parts, need = [], min(count, sum(lengths))
    for i in range(len(lengths)):
        if need <= 0:
            break
        part = np.load(synthetic.shard_paths(run_dir, i)[0], mmap_mode="r")[:need]
        parts.append(torch.from_numpy(np.array(part)))
        need -= len(part)
    if not parts:
        return
    images = torch.cat(parts).permute(0, 3, 1, 2).float() / 255
    grid = make_grid(images, nrow=max(1, int(np.ceil(np.sqrt(len(images))))), padding=2)
    with atomic_path(run_dir / PREVIEW_FILE) as tmp:
        save_image(grid, tmp, format="png")


@dataclass
class _Job:
    """A generate run as set up: the checked settings, the generator (and filter) and the run folder."""

    settings: GenerateSettings
    device: torch.device
    sampler: FaceSampler
    flt: FaceFilter | None
    identity: dict
    run_dir: Path


def generate(cfg: Any) -> Path:
    """Run the generate stage for a Hydra config (``paths.root``, ``device``, ``generator``, ``generate``).

    Returns the run folder ``<paths.root>/generate/<generate.name>``, complete with shards, ``seeds.npy``,
    a preview grid and ``manifest.json``; read it with :class:`facekd.data.synthetic.SyntheticFaces`.
    """
    t0 = time.perf_counter()
    job = _setup(cfg)
    settings, run_dir = job.settings, job.run_dir
    if _prepare_folder(run_dir, job.identity, settings.overwrite) and _complete_and_intact(run_dir):
        log.info("generate: %s already holds the %d faces of this configuration; nothing to do", run_dir,
                 settings.num_images)
        return run_dir
    try:  # the checksums of the shards written so far, to tell a damaged finished shard from a good one
        recorded = read_json(run_dir / MANIFEST).get("artifacts")
    except (OSError, ValueError, AttributeError):
        recorded = None

    lengths = synthetic.shard_lengths(settings.num_images, settings.shard_size)
    run_fields = {"run": {"batch_size": settings.batch_size, "device": str(job.device), "preview": settings.preview},
                  "generator": job.sampler.describe()}
    # the checksums recorded when the shards were first written stay true (same configuration, same bytes)
    write_manifest(run_dir, STAGE, job.identity, complete=False, **run_fields,
                   **({"artifacts": recorded} if isinstance(recorded, Mapping) else {}))

    records = [synthetic.finished_shard(run_dir, i, n, settings.image_size) for i, n in enumerate(lengths)]
    for i in _changed_shards(run_dir, recorded, records):
        records[i] = None  # a finished shard whose file changed since it was written: remake it
    made, loop_s = _make_shards(job, lengths, records)
    _finish(job, lengths, run_fields, made, loop_s, t0)
    return run_dir


def _setup(cfg: Any) -> _Job:
    """Check the config and build the generator (and the face filter); nothing in the run folder is touched."""
    c = _container(cfg)
    if "generator" not in c or "generate" not in c:
        raise GeneratorError("the config needs a 'generator' group and a 'generate' section (configs/generate.yaml)")
    settings = GenerateSettings.from_config(c["generate"])
    gen_cfg = dict(c["generator"])
    device = resolve_device(c.get("device", "auto"))
    sampler = build_generator(gen_cfg, device)
    flt = FaceFilter(settings.filter_threshold, device=device) if settings.filter_enabled else None
    identity = _identity(settings, gen_cfg, sampler, flt)
    run_dir = run_dir_for(c.get("paths", {}).get("root", "runs"), settings.name)
    return _Job(settings, device, sampler, flt, identity, run_dir)


def _make_shards(job: _Job, lengths: list[int], records: list[dict | None]) -> tuple[int, float]:
    """Make and write every shard not finished yet (``records[i]`` None, or not following its predecessor);
    returns the number of faces made and the seconds it took."""
    settings, run_dir = job.settings, job.run_dir
    done = sum(n for n, r in zip(lengths, records) if r is not None)
    made = 0
    t_loop = time.perf_counter()
    bar = tqdm(total=settings.num_images, initial=done, unit=" faces", desc=f"generate {settings.name}",
               dynamic_ncols=True, smoothing=0.1, disable=not settings.progress)
    pending: Future | None = None
    next_seed = settings.first_seed
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="shard-writer") as writer, \
                ThreadPoolExecutor(1, thread_name_prefix="noise-prefetch") as prefetch:
            filler = _ShardFiller(job.sampler, settings, job.flt, bar, prefetch)
            for i, n in enumerate(lengths):
                rec = records[i]
                if rec is not None and rec.get("first_candidate") == next_seed:
                    next_seed = int(rec["next_seed"])
                    continue
                if rec is not None:  # a finished shard that does not follow its predecessor: remake it
                    bar.update(-n)
                faces, seeds, end = filler.fill(n, next_seed)
                record = {"first_candidate": next_seed, "next_seed": end, "seeds": seeds}
                if pending is not None:
                    pending.result()  # at most one shard waits for the disk
                pending = writer.submit(synthetic.write_shard, run_dir, i, faces, record)
                next_seed = end
                made += n
            if pending is not None:
                pending.result()
    finally:
        bar.close()
    return made, time.perf_counter() - t_loop


def _finish(job: _Job, lengths: list[int], run_fields: dict, made: int, loop_s: float, t0: float) -> None:
    """Write ``seeds.npy``, the preview and the complete manifest (with every file's checksum); log the run."""
    settings, run_dir, flt = job.settings, job.run_dir, job.flt
    records = [synthetic.read_shard_record(run_dir, i) for i in range(len(lengths))]
    seeds = np.concatenate([np.asarray(r["seeds"], dtype=np.int64) for r in records])
    with atomic_path(run_dir / SEEDS_FILE) as tmp, open(tmp, "wb") as f:
        np.save(f, seeds, allow_pickle=False)
    _write_preview(run_dir, lengths, settings.preview)

    tried = int(records[-1]["next_seed"]) - settings.first_seed
    rejected = tried - settings.num_images
    contiguous = rejected == 0
    elapsed = time.perf_counter() - t0
    artifacts = _artifacts(run_dir, len(lengths))
    write_manifest(
        run_dir, STAGE, job.identity, complete=True, **run_fields, image_size=settings.image_size,
        shard_size=settings.shard_size, num_images=settings.num_images, num_shards=len(lengths),
        shards=[{k: r[k] for k in ("file", "count", "sha256", "first_candidate", "next_seed")} for r in records],
        seeds={"first": int(seeds[0]), "last": int(seeds[-1]), "count": int(seeds.size), "contiguous": contiguous,
               "file": SEEDS_FILE,
               "rule": "face j = j-th accepted seed s >= first_seed, in increasing order; its noise comes from "
                       "torch.Generator('cpu').manual_seed(s)"},
        filter=None if flt is None else {**flt.describe(), "tried": tried, "rejected": rejected,
                                         "rejection_rate": rejected / tried},
        content_sha256=config_hash([r["sha256"] for r in records]), artifacts=artifacts,
        preview=PREVIEW_FILE, made_now=made, elapsed_s=round(elapsed, 3),
        faces_per_s=round(made / loop_s, 2) if made else None,
    )
    msg = (f"generate: {settings.num_images} faces in {run_dir} ({made} made now"
           + (f" at {made / loop_s:.1f} faces/s" if made else "") + f"), {elapsed:.1f} s in all")
    if flt is not None:
        msg += f"; face filter rejected {rejected} of {tried} samples ({100 * rejected / tried:.1f}%)"
    log.info(msg)
