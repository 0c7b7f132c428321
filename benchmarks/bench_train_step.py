"""The main job's speed levers on a CPU, each measured in one run: the student's train step and the teacher's pass.

    python benchmarks/bench_train_step.py                      # ResNet-18 at 64 px, batch 80 (the main job's)
    python benchmarks/bench_train_step.py --student mobilefacenet --batch-size 64

1. The student's train step (preprocess, forward, sigmoid-BCE-like loss, backward, AdamW step) on one batch,
   in fp32 and under bf16 autocast (:func:`facekd.engine.autocast`, which the engine uses only where the CPU
   has native bf16), each with and without channels_last, and with 1 thread against all of them.
2. The teacher's pass over a batch of uint8 faces under ``torch.no_grad`` against ``torch.inference_mode``.

Each figure is img/s, the best of ``--rounds`` interleaved rounds; the ratio column divides it by the fastest
setting of its group, measured in the same run (the ceiling), so a lever's worth reads as a ratio on any machine.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from facekd.engine import cpu_bf16_native, seed_everything  # noqa: E402
from facekd.models import build_student, build_teacher  # noqa: E402
from common import steps_per_second  # noqa: E402


def student_step_rate(name: str, size: int, batch: int, bf16: bool, channels_last: bool, steps: int) -> float:
    """Train-step images per second of a fresh student on a fixed random batch."""
    seed_everything(0)
    student = build_student({"name": name, "input_size": size}, 128).train()
    opt = torch.optim.AdamW(student.parameters(), 1e-3)
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    target = torch.rand(batch, 128)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    student = student.to(memory_format=fmt)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = student(student.preprocess(x).contiguous(memory_format=fmt))
        loss = F.binary_cross_entropy_with_logits(out.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return batch * steps_per_second(step, steps, torch.device("cpu"), warmup=2)


def teacher_rate(batch: int, inference: bool, steps: int) -> float:
    teacher = build_teacher({"name": "sface"}).eval()
    x = torch.randint(0, 256, (batch, 3, 112, 112), dtype=torch.uint8)
    ctx = torch.inference_mode if inference else torch.no_grad

    def step() -> None:
        with ctx():
            teacher.features(x)

    return batch * steps_per_second(step, steps, torch.device("cpu"), warmup=1)


def report(title: str, rows: list[tuple[str, float]]) -> None:
    best = max(v for _, v in rows)
    print(f"\n{title}\n| setting | img/s | ratio to the fastest |\n|---|---|---|")
    for label, v in rows:
        print(f"| {label} | {v:.0f} | {v / best:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="resnet18")
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=80)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--teacher-batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    print(f"CPU threads: {threads}; native bf16 (so the engine trains in bf16 here): {cpu_bf16_native()}")
    settings = [(bf16, cl) for bf16 in (False, True) for cl in (False, True)]
    best: dict = {}
    for _ in range(args.rounds):  # interleaved rounds, best of each: no setting gains from running later
        for bf16, cl in settings:
            rate = student_step_rate(args.student, args.input_size, args.batch_size, bf16, cl, args.steps)
            best[(bf16, cl)] = max(best.get((bf16, cl), 0.0), rate)
        torch.set_num_threads(1)
        rate = student_step_rate(args.student, args.input_size, args.batch_size, False, False, args.steps)
        best["one"] = max(best.get("one", 0.0), rate)
        torch.set_num_threads(threads)
        for inference in (False, True):
            best[inference] = max(best.get(inference, 0.0), teacher_rate(args.teacher_batch, inference, 4))
    rows = [(f"{'bf16 autocast' if bf16 else 'fp32'}{', channels_last' if cl else ''}, {threads} threads",
             best[(bf16, cl)]) for bf16, cl in settings]
    report(f"{args.student} at {args.input_size} px, train step, batch {args.batch_size} (best of {args.rounds})",
           rows + [("fp32, 1 thread", best["one"])])
    report(f"teacher (sface) pass, batch {args.teacher_batch} (best of {args.rounds})",
           [("no_grad", best[False]), ("inference_mode", best[True])])


if __name__ == "__main__":
    main()
