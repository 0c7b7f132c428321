"""Stream-mode distillation against its ceiling: generator, teacher and student step, each bare, then together.

    python benchmarks/bench_stream.py                          # CPU, and CUDA too when a GPU is present
    python benchmarks/bench_stream.py --batch 256 --steps 50 --devices cuda

At one batch size, on each device, in one process:
- (a) the bare generator forward (embedded DCGAN, latents already on the device);
- (b) the bare teacher forward (SFace, uint8 faces at --view-size already on the device);
- (c) the bare student train step (forward, backward, Adam step; fixed targets);
- the summed ceiling 1 / (1/a + 1/b + 1/c): what the three cost run one after another;
- the streaming loop: :class:`facekd.distill.stream.StreamFaces` (latents from the step's seed, generator,
  on-device target_like augmentation) + :meth:`DistillTask.training_step` (teacher, student) + the
  optimizer step, with --hard of each batch from the hard-face pool; and its ratio to the ceiling.
The on-device augmentation alone is printed too; it is part of the loop but not of the ceiling.
For comparison, the cached-mode loop: the same task's training step on a batch of stored views and their
cached teacher features (what shards mode runs every epoch once the feature cache exists; building that cache
costs one teacher forward per stored view, paid once), and the stream loop's speed as a share of it.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from common import device_label, requested_devices, steps_per_second  # noqa: E402
from facekd.distill.device_augment import DeviceAugment  # noqa: E402
from facekd.distill.losses import FeatureStats, build_loss  # noqa: E402
from facekd.distill.stage import DistillTask  # noqa: E402
from facekd.distill.stream import StreamFaces, StreamSettings, build_stream_generator  # noqa: E402
from facekd.engine import autocast, build_optimizer, resolve_device, seed_everything  # noqa: E402
from facekd.models import build_student, build_teacher  # noqa: E402


def measure(device: torch.device, args) -> dict[str, float]:
    """img/s of each part and of the loop on ``device``."""
    seed_everything(0)
    bs, size = args.batch, args.view_size
    settings = StreamSettings(generator={"name": "dcgan"}, faces_per_epoch=bs, stats_faces=bs,
                              augment=DeviceAugment(), augment_spec={}, hard_fraction=args.hard, hard_noise=0.2,
                              pool_size=4 * bs)
    stream = StreamFaces(build_stream_generator(settings, device), settings, seed=0, view_size=size)
    teacher = build_teacher({"name": "sface"}).to(device)
    student = build_student({"name": args.student, "input_size": args.input_size}, teacher.feature_dim).to(device)
    stats = FeatureStats(torch.zeros(teacher.feature_dim), torch.ones(teacher.feature_dim))
    loss = build_loss({"name": "bce"}, stats).to(device)
    task = DistillTask(student, loss, {}, teacher=teacher, stream=stream).to(device).train()
    opt = build_optimizer(task.param_groups(), {"name": "adam", "lr": 1e-3})
    per_s = {}

    z = torch.randn(bs, stream.sampler.latent_dim, device=device)
    per_s["generator"] = steps_per_second(lambda: stream.sampler.from_latents(z), args.steps, device, args.warmup)

    raw = stream.sampler.from_latents(z).float()
    params = settings.augment.params(bs, torch.Generator().manual_seed(0))
    per_s["augment"] = steps_per_second(lambda: settings.augment.apply(raw, params, size), args.steps, device,
                                        args.warmup)

    faces, _, _ = stream.make(bs, (1, 0, 0))

    def teacher_step() -> None:
        with torch.no_grad(), autocast(device):
            teacher.features(faces)

    per_s["teacher"] = steps_per_second(teacher_step, args.steps, device, args.warmup)
    with torch.no_grad(), autocast(device):
        target = teacher.features(faces)

    def student_step() -> None:
        with autocast(device):
            out = loss(student(task._input(faces)), target)
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()

    per_s["student"] = steps_per_second(student_step, args.steps, device, args.warmup)

    counter = iter(range(10**9))

    def loop_step() -> None:
        b = next(counter)
        batch = {"views": torch.zeros(bs, 3, size, size, dtype=torch.uint8, device=device),
                 "stream": torch.ones(bs, dtype=torch.bool, device=device), "key": (1, b, 0, bs)}
        with autocast(device):
            out = task.training_step(batch)
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()

    per_s["loop"] = steps_per_second(loop_step, args.steps, device, args.warmup)

    cached_task = DistillTask(student, loss, {}).to(device).train()
    views = faces.cpu()  # stored uint8 views, as the cache holds them, moved to the device per batch
    feats = target.half().cpu()

    def cached_step() -> None:
        with autocast(device):
            out = cached_task.training_step((views.to(device, non_blocking=True), feats.to(device, non_blocking=True)))
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()

    per_s["cached"] = steps_per_second(cached_step, args.steps, device, args.warmup)
    return {k: v * bs for k, v in per_s.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement")
    p.add_argument("--view-size", type=int, default=112, help="stream faces are made at this size (online_view_size)")
    p.add_argument("--student", default="resnet18")
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--hard", type=float, default=0.25, help="share of each loop batch from the hard-face pool")
    p.add_argument("--devices", default="cpu,cuda", help="comma list; cuda is skipped when no GPU is present")
    args = p.parse_args()
    devices = requested_devices(args.devices)
    print(f"stream loop: DCGAN -> target_like on device -> SFace -> {args.student}@{args.input_size}; "
          f"batch {args.batch}, {args.steps} steps, faces at {args.view_size} px, hard {args.hard}")
    print(f"{'device':<28} {'gen':>9} {'teacher':>9} {'student':>9} {'ceiling':>9} {'augment':>9} {'loop':>9} "
          f"{'loop/ceil':>9} {'cached':>9} {'loop/cach':>9}   (img/s)")
    for name in devices:
        device = resolve_device(name)
        r = measure(device, args)
        ceiling = 1 / (1 / r["generator"] + 1 / r["teacher"] + 1 / r["student"])
        label = device_label(device)
        print(f"{label[:28]:<28} {r['generator']:>9.1f} {r['teacher']:>9.1f} {r['student']:>9.1f} {ceiling:>9.1f} "
              f"{r['augment']:>9.1f} {r['loop']:>9.1f} {r['loop'] / ceiling:>9.2f} {r['cached']:>9.1f} "
              f"{r['loop'] / r['cached']:>9.2f}")


if __name__ == "__main__":
    main()
