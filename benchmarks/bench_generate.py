"""Generate-stage throughput and memory: the bare generator against the whole stage writing to disk.

    python benchmarks/bench_generate.py                       # CPU: 2000 faces, shards of 256
    python benchmarks/bench_generate.py --num-images 200000   # CUDA: bf16 by default there

Each measurement runs in a fresh process, so its peak RSS is its own:
- bare:  the generator sampling N faces to uint8 in host memory (batches thrown away), after a warm-up batch;
- e2e:   ``facekd.generators.generate`` writing N faces to a temporary run folder (shards, records, seeds,
         preview, manifest), timed over the whole call including loading the generator;
- e2e at a larger N (``--memory-scale``), to show that peak memory does not grow with N.
The bare rate is measured before and after the end-to-end run and averaged, so a change of machine load
during the run shows up as a gap between the two.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """CPU seconds of this process, all threads (less sensitive than wall time to other load on the machine)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _overrides(args: argparse.Namespace, num_images: int, root: str) -> list[str]:
    return [f"paths.root={root}", f"device={args.device}", f"generator={args.generator}",
            f"generator.precision={args.precision}", f"generate.num_images={num_images}",
            f"generate.batch_size={args.batch_size}", f"generate.shard_size={args.shard_size}",
            f"generate.image_size={args.image_size}", *args.override]


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("generate", overrides=overrides)


def bare(args: argparse.Namespace) -> dict:
    import torch

    from facekd.generators import build_generator

    cfg = _compose(_overrides(args, args.num_images, "unused"))
    sampler = build_generator(cfg.generator, cfg.device)
    bs, n = args.batch_size, args.num_images
    sampler.sample(range(bs), args.image_size)  # warm-up
    if sampler.device.type == "cuda":
        torch.cuda.synchronize()
    t, c = time.perf_counter(), _cpu_s()
    for start in range(0, n, bs):
        faces = sampler.sample(range(start, min(start + bs, n)), args.image_size)
    assert faces.dtype == torch.uint8
    dt = time.perf_counter() - t
    return {"rate": n / dt, "cpu_rate": n / (_cpu_s() - c), "seconds": dt, "rss_mb": _peak_rss_mb(), "device": str(sampler.device),
            "precision": sampler.precision}


def end_to_end(args: argparse.Namespace, num_images: int) -> dict:
    from facekd.generators import generate
    from facekd.runs import read_json

    with tempfile.TemporaryDirectory(prefix="bench_generate_") as root:
        cfg = _compose(_overrides(args, num_images, root))
        t, c = time.perf_counter(), _cpu_s()
        run = generate(cfg)
        dt = time.perf_counter() - t
        cpu = _cpu_s() - c
        m = read_json(run / "manifest.json")
    return {"rate": num_images / dt, "cpu_rate": num_images / cpu, "loop_rate": m["faces_per_s"], "seconds": dt, "rss_mb": _peak_rss_mb()}


def _in_child(fn, *a):
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *a).result()


def main() -> None:
    import torch

    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-images", type=int, default=200_000 if cuda else 2000)
    p.add_argument("--batch-size", type=int, default=8192 if cuda else 256)
    p.add_argument("--shard-size", type=int, default=32768 if cuda else 256)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--generator", default="dcgan")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", help="auto = bf16 on CUDA, fp32 on CPU")
    p.add_argument("--memory-scale", type=int, default=4, help="also run end to end at this many times N (0 = skip)")
    p.add_argument("override", nargs="*", help="extra Hydra overrides, e.g. generator.path=DIR")
    args = p.parse_args()

    print(f"generate benchmark: {args.generator}, N={args.num_images}, batch {args.batch_size}, "
          f"shard {args.shard_size}, {args.image_size}px, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    b1 = _in_child(bare, args)
    e = _in_child(end_to_end, args, args.num_images)
    b2 = _in_child(bare, args)
    rate = (b1["rate"] + b2["rate"]) / 2
    shard_mb = args.shard_size * args.image_size ** 2 * 3 / 2 ** 20
    print(f"device {b1['device']}, precision {b1['precision']}")
    print(f"bare generator, to uint8 in host memory : {rate:9.1f} img/s  (before {b1['rate']:.1f}, "
          f"after {b2['rate']:.1f}; peak RSS {max(b1['rss_mb'], b2['rss_mb']):.0f} MB)")
    print(f"end to end to disk, whole call         : {e['rate']:9.1f} img/s  ({e['seconds']:.1f} s; "
          f"in the shard loop {e['loop_rate']:.1f} img/s)")
    print(f"ratio end-to-end / bare                : {e['rate'] / rate:9.1%}  (shard loop only: "
          f"{e['loop_rate'] / rate:.1%})")
    cpu_bare = (b1["cpu_rate"] + b2["cpu_rate"]) / 2
    print(f"per CPU-second (bare / end to end)     : {cpu_bare:9.1f} / {e['cpu_rate']:.1f} img per CPU-s, "
          f"ratio {e['cpu_rate'] / cpu_bare:.1%}")
    print(f"peak RSS end to end, N={args.num_images:<7}       : {e['rss_mb']:9.0f} MB  (one shard = {shard_mb:.1f} MB; "
          f"all N faces = {args.num_images * shard_mb / args.shard_size:.1f} MB)")
    if args.memory_scale:
        n_big = args.num_images * args.memory_scale
        big = _in_child(end_to_end, args, n_big)
        print(f"peak RSS end to end, N={n_big:<7}       : {big['rss_mb']:9.0f} MB  "
              f"(all N faces = {n_big * shard_mb / args.shard_size:.1f} MB; {big['rate']:.1f} img/s)")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
