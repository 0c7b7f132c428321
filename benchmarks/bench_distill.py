"""Distillation speed and memory: the distill loop against the bare student train step, in one run.

    python benchmarks/bench_distill.py                       # CPU or GPU, whatever is present
    python benchmarks/bench_distill.py --input-size 112 --batch-size 512 --steps 200    # GPU

1. Speed.  A real teacher-feature cache (real DCGAN faces, real SFace features; built once under
   --root) feeds the real distill loop: CachedBatches -> DistillTask -> facekd.engine.Trainer, for two
   epochs of --steps steps; the second epoch's img/s is reported.  In the same process the bare student
   train step (preprocess, forward, loss, backward, optimizer step on one batch already on the device,
   bf16 + channels_last on CUDA) runs the same number of steps.  The ratio is loop / bare.
2. Memory.  The cache is tiled (its real rows repeated) to N = --sizes views; for each N a fresh process
   reads one whole epoch of batches through CachedBatches and then trains --mem-steps steps, and reports
   its peak resident memory (VmHWM) and, at the end, the anonymous (RssAnon) and file-backed (RssFile,
   evictable page cache of the memory map) parts.  RssAnon staying flat in N is the claim.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from facekd.distill.batches import CachedBatches  # noqa: E402
from facekd.distill.cache import FeatureCache, build_feature_cache  # noqa: E402
from facekd.distill.losses import FeatureStats, build_loss  # noqa: E402
from facekd.distill.stage import DistillTask  # noqa: E402
from facekd.distill.views import ViewSource  # noqa: E402
from facekd.engine import TrainConfig, Trainer, autocast, build_optimizer, resolve_device, seed_everything  # noqa: E402
from facekd.models import build_student, build_teacher  # noqa: E402
from facekd.runs import write_json  # noqa: E402
from common import real_generate_run, steps_per_second  # noqa: E402


def real_cache(root: Path, faces: int, input_size: int, device: torch.device) -> FeatureCache:
    """A cache of ``faces`` real DCGAN faces with real SFace features (generated and built once)."""
    from facekd.data.synthetic import SyntheticFaces

    syn = SyntheticFaces(real_generate_run(root, faces))
    source = ViewSource(name="bench", size=len(syn), read=syn.batch, fingerprint=syn.config_hash)
    teacher = build_teacher({"name": "sface"}).to(device)
    return build_feature_cache(source, teacher, teacher.signature, root / "cache", input_size, device)


def tiled_cache(cache: FeatureCache, n: int, folder: Path) -> FeatureCache:
    """The cache's real rows repeated to ``n`` rows, written as a cache folder (memory-mapped, chunked)."""
    if (folder / "manifest.json").exists():
        return FeatureCache(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(folder / "images.npy", "w+", np.uint8, (n, *cache.images.shape[1:]))
    feats = np.lib.format.open_memmap(folder / "features.npy", "w+", np.float16, (n, cache.dim))
    m = len(cache)
    for lo in range(0, n, 4096):
        idx = np.arange(lo, min(n, lo + 4096)) % m
        images[lo : lo + len(idx)] = cache.images[idx]
        feats[lo : lo + len(idx)] = cache.features[idx]
    images.flush()
    feats.flush()
    del images, feats
    mean, std = cache.stats()
    np.savez(folder / "stats.npz", mean=mean, std=std)
    write_json(folder / "manifest.json", {"key": {"tiled_from": str(cache.folder), "n": n}, "complete": True})
    return FeatureCache(folder)


def make_task(cache: FeatureCache, args, device: torch.device) -> DistillTask:
    seed_everything(0)
    mean, std = cache.stats()
    student = build_student({"name": args.student, "input_size": args.input_size}, cache.dim)
    loss = build_loss({"name": args.loss}, FeatureStats(torch.from_numpy(mean), torch.from_numpy(std)))
    return DistillTask(student, loss, {}).to(device)


def loop_speed(cache: FeatureCache, args, device: torch.device, run_dir: Path) -> float:
    """img/s of the real distill loop (engine + cached batches), second epoch."""
    task = make_task(cache, args, device)
    data = CachedBatches([cache], [1.0], args.batch_size, args.steps * args.batch_size, seed=0,
                         num_workers=args.workers, pin_memory=device.type == "cuda")
    cfg = TrainConfig(epochs=2, batch_size=args.batch_size, monitor="train_loss", progress=False,
                      device=str(device), optim={"name": "adam", "lr": 1e-3})
    shutil.rmtree(run_dir, ignore_errors=True)
    result = Trainer(cfg, run_dir).fit(task, data)
    return float(result.history[-1]["img_per_s"])


def bare_speed(cache: FeatureCache, args, device: torch.device) -> float:
    """img/s of the bare student train step on one batch already on the device."""
    task = make_task(cache, args, device)
    cl = device.type == "cuda"
    if cl:
        task.to(memory_format=torch.channels_last)
    images = torch.from_numpy(np.array(cache.images[: args.batch_size])).permute(0, 3, 1, 2).to(device)
    if cl:
        images = images.contiguous(memory_format=torch.channels_last)
    feats = torch.from_numpy(np.array(cache.features[: args.batch_size])).to(device)
    opt = build_optimizer(task.param_groups(), {"name": "adam", "lr": 1e-3})
    task.train()

    def step() -> None:
        with autocast(device):
            loss = task.training_step((images, feats))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return steps_per_second(step, args.steps, device) * args.batch_size


def memory_child(folder: Path, args) -> None:
    """One full epoch of cached batches, then a few train steps; prints the process's memory as JSON."""
    device = resolve_device(args.device)
    cache = FeatureCache(folder)
    data = CachedBatches([cache], [1.0], args.batch_size, seed=0, num_workers=0)
    t0, seen = time.perf_counter(), 0
    for images, feats in data:
        seen += len(images)
    read_s = time.perf_counter() - t0
    task = make_task(cache, args, device)
    opt = build_optimizer(task.param_groups(), {"name": "adam", "lr": 1e-3})
    for b, batch in enumerate(data):
        if b == args.mem_steps:
            break
        loss = task.training_step(tuple(t.to(device) for t in batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    mb = {k: int(status[k].split()[0]) / 1024 for k in ("VmHWM", "RssAnon", "RssFile")}
    print(json.dumps({"n": len(cache), "read_img_s": seen / read_s, **mb}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "facekd_bench_distill"))
    p.add_argument("--faces", type=int, default=256, help="real faces in the cache (teacher runs on each once)")
    p.add_argument("--student", default="resnet18")
    p.add_argument("--loss", default="bce")
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--sizes", default="2000,20000,100000", help="cache sizes N for the memory part ('' = skip)")
    p.add_argument("--mem-steps", type=int, default=5)
    p.add_argument("--mem-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--taps", default="", help="also bench the multi-tap loop for these tap sets, e.g. stages,top,embedding "
                   "(see benchmarks/bench_taps.py)")
    p.add_argument("--tap-loss", dest="tap_loss", default="skd")
    args = p.parse_args()
    if args.mem_child:
        memory_child(Path(args.mem_child), args)
        return

    device = resolve_device(args.device)
    root = Path(args.root)
    cache = real_cache(root, args.faces, args.input_size, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; {args.student} at {args.input_size} px, batch {args.batch_size}, loss {args.loss}, "
          f"{args.steps} steps")
    loop = loop_speed(cache, args, device, root / "loop_run")
    bare = bare_speed(cache, args, device)
    print(f"distill loop (cached features, engine): {loop:10.1f} img/s")
    print(f"bare student train step:                {bare:10.1f} img/s")
    print(f"ratio loop / bare:                      {loop / bare:10.2f}")
    if args.taps:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_taps

        print()
        bench_taps.run(argparse.Namespace(**{**vars(args), "tap_sets": args.taps, "loss": args.tap_loss,
                                             "batch_size": args.batch_size}))

    sizes = [int(s) for s in args.sizes.split(",") if s]
    if sizes:
        print(f"\nmemory over one full epoch of reads + {args.mem_steps} train steps (MB; cache rows tiled from "
              f"{len(cache)} real ones)")
        print(f"{'N':>8} {'cache MB':>9} {'peak RSS':>9} {'RssAnon':>8} {'RssFile':>8} {'read img/s':>11}")
    for n in sizes:
        folder = tiled_cache(cache, n, root / f"tiled_{args.input_size}_{n}").folder
        disk = sum(f.stat().st_size for f in folder.glob("*.npy")) / 2**20
        out = subprocess.run([sys.executable, __file__, "--mem-child", str(folder), "--student", args.student,
                              "--loss", args.loss, "--input-size", str(args.input_size), "--batch-size",
                              str(args.batch_size), "--device", args.device, "--mem-steps", str(args.mem_steps)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{n:>8} {disk:>9.0f} {r['VmHWM']:>9.0f} {r['RssAnon']:>8.0f} {r['RssFile']:>8.0f} {r['read_img_s']:>11.0f}")


if __name__ == "__main__":
    main()
