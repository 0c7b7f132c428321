"""The multi-tap distillation loop (Eq. 6 rows: CE + lambda/2 * tap KD) against the bare student train step.

    python benchmarks/bench_distill.py --taps stages,top,embedding --sizes ''     # run from bench_distill
    python benchmarks/bench_taps.py --tap-sets stages,top,embedding                # or alone

For each tap set (the student's and the teacher's sets of that name, paired in order) the real SFace
teacher's targets of --faces real DCGAN faces are cached (fp16 memory maps, pooled onto the student's grids),
then the real loop runs: TapTargets -> FeatureRegularizedTask -> facekd.engine.Trainer, two epochs of --steps
steps, second epoch's img/s.  In the same process the bare student train step (cross-entropy only, one batch
already on the device) runs the same number of steps.  Printed: img/s of both, the ratio loop / bare, and the
cache bytes per image of each tap set.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from facekd.baselines.common import RepeatedDataset  # noqa: E402
from common import real_generate_run, steps_per_second  # noqa: E402
from facekd.baselines.ce_taps import FeatureRegularizedTask, TapTargets  # noqa: E402
from facekd.distill.tap_cache import teacher_tap_targets  # noqa: E402
from facekd.distill.tap_loss import TapLoss, parse_pairs  # noqa: E402
from facekd.engine import TrainConfig, Trainer, autocast, build_optimizer, resolve_device, seed_everything  # noqa: E402
from facekd.models import build_student, build_teacher  # noqa: E402
from facekd.models.taps import tap_set, tap_shapes  # noqa: E402

CLASSES = 40


def real_faces(root: Path, faces: int) -> torch.Tensor:
    """``faces`` real DCGAN faces (uint8 N x 3 x 64 x 64), generated once under ``root``."""
    from facekd.data.synthetic import SyntheticFaces

    run = real_generate_run(root, faces)
    return torch.from_numpy(SyntheticFaces(run).batch(np.arange(faces))).permute(0, 3, 1, 2).contiguous()


def build(tap_name: str, images: torch.Tensor, args, device: torch.device, root: Path):
    seed_everything(0)
    net = build_student({"name": args.student, "input_size": args.input_size}, CLASSES)
    teacher = build_teacher({"name": "sface"}).to(device)
    pairs = parse_pairs(None, tap_set(args.student, tap_name), tap_set("sface", tap_name), args.loss)
    s_shapes = tap_shapes(net, [p.student for p in pairs], args.input_size)
    t_shapes = tap_shapes(teacher, [p.teacher for p in pairs], 112)
    loss = TapLoss(pairs, s_shapes, t_shapes, beta=2.0 if args.loss == "skd" else None,
                   spectral_iters=getattr(args, "spectral_iters", 8))
    targets = teacher_tap_targets(teacher, images, [p.teacher for p in pairs], loss.grids, root / "tap_cache",
                                  progress=False)
    loss.fit_targets([torch.from_numpy(np.asarray(t, dtype=np.float32)) for t in targets])
    labels = torch.arange(len(images)) % CLASSES
    val = (images[:8], labels[:8])
    task = FeatureRegularizedTask(net, net.preprocess, val, loss, [p.student for p in pairs], 1.0)
    per_image = sum(t[0].nbytes for t in targets)
    return task, TapTargets(images, labels, targets), per_image


def loop_speed(task, data, args, device, run_dir: Path) -> float:
    cfg = TrainConfig(epochs=2, batch_size=args.batch_size, monitor="train_loss", progress=False,
                      device=str(device), optim={"name": "adamw", "lr": 1e-3})
    shutil.rmtree(run_dir, ignore_errors=True)
    result = Trainer(cfg, run_dir).fit(task, RepeatedDataset(data, args.steps * args.batch_size))
    return float(result.history[-1]["img_per_s"])


def bare_speed(args, images: torch.Tensor, device: torch.device) -> float:
    """The bare student classifier train step (cross-entropy) on one batch already on the device."""
    seed_everything(0)
    net = build_student({"name": args.student, "input_size": args.input_size}, CLASSES).to(device).train()
    cl = device.type == "cuda"
    if cl:
        net.to(memory_format=torch.channels_last)
    x = net.preprocess(images[: args.batch_size].to(device))
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.arange(args.batch_size) % CLASSES).to(device)
    opt = build_optimizer(net.parameters(), {"name": "adamw", "lr": 1e-3})

    def step() -> None:
        with autocast(device):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return steps_per_second(step, args.steps, device) * args.batch_size


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tap-sets", default="stages,top,embedding", help="tap set names, paired student/teacher")
    p.add_argument("--tap-loss", dest="loss", default="skd")
    p.add_argument("--spectral-iters", type=int, default=8, help="power iterations per spectral norm (0 = exact SVD)")


def run(args) -> None:
    device = resolve_device(args.device)
    root = Path(args.root)
    images = real_faces(root, args.faces)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"multi-tap loop, device: {name}; {args.student} at {args.input_size} px, batch {args.batch_size}, "
          f"{args.steps} steps, term {args.loss}, teacher sface")
    print(f"{'tap set':<10} {'loop img/s':>11} {'bare img/s':>11} {'ratio':>6} {'cache KB/img':>13}")
    for tap_name in [t for t in args.tap_sets.split(",") if t]:
        task, data, per_image = build(tap_name, images, args, device, root)
        loop = loop_speed(task, data, args, device, root / f"taps_run_{tap_name}")
        bare = bare_speed(args, images, device)
        print(f"{tap_name:<10} {loop:>11.1f} {bare:>11.1f} {loop / bare:>6.2f} {per_image / 1024:>13.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "facekd_bench_taps"))
    p.add_argument("--faces", type=int, default=256)
    p.add_argument("--student", default="resnet18")
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=80)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="auto")
    add_arguments(p)
    run(p.parse_args())


if __name__ == "__main__":
    main()
