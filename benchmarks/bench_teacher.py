"""Teacher throughput: the SFace torch port against onnxruntime on the shipped ONNX file, per batch size.

    python benchmarks/bench_teacher.py                        # CPU, batches 1 8 32 64
    python benchmarks/bench_teacher.py --device cuda --batch-sizes 64 512 2048   # adds bf16 autocast

Images are uint8 112 x 112 RGB noise (speed does not depend on content).  The torch port is timed through
``Teacher.features`` (preprocessing included); onnxruntime runs the file on the CPU one image at a time
(its graph input has a fixed batch of 1), with 0-255 floats since the graph normalises them itself.
Each figure is the median of ``--repeats`` timed calls after a warm-up call.  The column "glibc default
allocator" times the torch port again in a child process with ``FACEKD_MALLOC_TUNING=0`` (see
``facekd/allocator.py``): large activations then come from fresh, page-faulting mmaps.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from facekd.assets import resolve  # noqa: E402
from facekd.models import build_teacher  # noqa: E402
from facekd.models.teachers.sface import sface_onnxruntime_session  # noqa: E402


def _median_s(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--torch-only", action="store_true", help="print only the torch fp32 rates, as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    teacher = build_teacher({"name": "sface"}).to(device)
    if args.torch_only:
        rates = {}
        for b in args.batch_sizes:
            images = torch.randint(0, 256, (b, 3, 112, 112), dtype=torch.uint8, device=device)
            rates[b] = b / _median_s(lambda: teacher.features(images), args.repeats)
        print(json.dumps(rates))
        return
    default_alloc: dict[str, float] = {}
    if device.type == "cpu":
        child = [sys.executable, __file__, "--torch-only", "--repeats", str(args.repeats), "--threads",
                 str(args.threads), "--batch-sizes", *map(str, args.batch_sizes)]
        out = subprocess.run(child, env={**os.environ, "FACEKD_MALLOC_TUNING": "0"}, capture_output=True, text=True,
                             check=True).stdout
        default_alloc = json.loads(out.strip().splitlines()[-1])
    session = sface_onnxruntime_session(resolve("sface"), threads=args.threads)
    print(f"SFace teacher, {device}, {args.threads} CPU threads; img/s (median of {args.repeats})")
    print("| batch | torch port fp32 | torch port fp32, glibc default allocator | torch port bf16 autocast | onnxruntime CPU |")
    print("|---|---|---|---|---|")
    for b in args.batch_sizes:
        images = torch.randint(0, 256, (b, 3, 112, 112), dtype=torch.uint8, device=device)

        def run_torch() -> None:
            teacher.features(images)
            if device.type == "cuda":
                torch.cuda.synchronize()

        def run_bf16() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                teacher.features(images)
            if device.type == "cuda":
                torch.cuda.synchronize()

        raw = images.float().cpu().numpy()

        def run_ort() -> None:
            for i in range(b):
                session.run(["fc1"], {"data": raw[i:i + 1]})

        fp32 = f"{b / _median_s(run_torch, args.repeats):,.1f}"
        bf16 = f"{b / _median_s(run_bf16, args.repeats):,.1f}" if device.type == "cuda" else "n/a (CPU)"
        ort = f"{b / _median_s(run_ort, args.repeats):,.1f}" if b <= 64 else "skipped (b > 64)"
        dflt = f"{default_alloc[str(b)]:,.1f}" if str(b) in default_alloc else "n/a"
        print(f"| {b} | {fp32} | {dflt} | {bf16} | {ort} |")


if __name__ == "__main__":
    main()
