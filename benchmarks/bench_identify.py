"""Faces per second of ``scripts/identify.py`` on the CPU: model.onnx on onnxruntime against the torch model.

    python benchmarks/bench_identify.py [--photos 100] [--faces-per-photo 2] [--run RUN] [--repeats 3]

The photos are ORL faces pasted on 480 x 360 grey canvases (``--faces-per-photo`` each). MTCNN detection
and the framing of the crops are timed once and shown apart, since both backends share them; the model is
timed per backend (best of ``--repeats`` passes over every face, ``identify.batch_size`` faces per call).
Without ``--run``, a finetune run on the embedded ORL defaults (112 px, ResNet-18 at 64 px) is made in a
temporary folder from a randomly initialised student: the weights do not change the speed.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from facekd.data.faces import load_orl  # noqa: E402
from facekd.identify import (OnnxBackend, TorchBackend, detect_faces, frame_faces, load_run,  # noqa: E402
                             make_detector)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _compose(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(name, overrides=overrides)


def make_run(root: Path) -> Path:
    """A finished finetune run (smoke epochs, ORL defaults) on a randomly initialised ResNet-18 student."""
    from facekd.distill.student_run import STUDENT_FILE
    from facekd.engine import save_safetensors
    from facekd.finetune import finetune
    from facekd.models import build_student
    from facekd.runs import write_manifest

    student_cfg = {"name": "resnet18", "input_size": 64}
    student_run = root / "distill" / "random"
    torch.manual_seed(0)
    save_safetensors(build_student(student_cfg, 128).state_dict(), student_run / STUDENT_FILE)
    write_manifest(student_run, "distill", {"student": student_cfg, "note": "random init, for speed only"},
                   student=student_cfg, teacher={"name": "sface", "feature": "embedding"}, out_dim=128,
                   input_size=64, uses_labels=False, complete=True)
    metrics = finetune(_compose("finetune", [f"paths.root={root}", f"finetune.student_run={student_run}",
                                             "profile=smoke", "finetune.plots=false", "finetune.card_repeats=1"]))
    return Path(metrics["run_dir"])


def make_photos(n: int, per_photo: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` canvases with ``per_photo`` ORL faces each, side by side at random heights."""
    orl = load_orl()
    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(n):
        canvas = np.full((360, 480, 3), int(rng.integers(120, 220)), np.uint8)
        slot = 480 // per_photo
        for j in range(per_photo):
            face = orl.image(int(rng.integers(len(orl))))
            x = j * slot + int(rng.integers(0, max(1, slot - 92)))
            y = int(rng.integers(0, 360 - 112))
            canvas[y:y + 112, x:x + 92] = face
        photos.append(canvas)
    return photos


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=100)
    ap.add_argument("--faces-per-photo", type=int, default=2)
    ap.add_argument("--run", type=Path, default=None, help="a finished finetune run (default: a temporary one)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = load_run(args.run or make_run(Path(tmp)), "onnx")
        photos = make_photos(args.photos, args.faces_per_photo)
        detector = make_detector()
        detect_faces(photos[0], detector)  # warm up
        t0 = time.perf_counter()
        found = [detect_faces(p, detector) for p in photos]
        t_detect = time.perf_counter() - t0
        t0 = time.perf_counter()
        crops = np.concatenate([frame_faces(p, [b for b, _ in f], run, 0.15) for p, f in zip(photos, found) if f])
        t_frame = time.perf_counter() - t0
        chw = np.ascontiguousarray(crops.transpose(0, 3, 1, 2))
        n = len(chw)
        bs = args.batch_size
        rates = {}
        for backend in (OnnxBackend(run), TorchBackend(run)):
            backend.scores(chw[:bs])  # warm up
            t = best_time(lambda: [backend.scores(chw[i:i + bs]) for i in range(0, n, bs)], args.repeats)
            rates[backend.name] = (n / t, t)
    print(f"{args.photos} photos of {photos[0].shape[1]}x{photos[0].shape[0]}, {n} faces found "
          f"(of {args.photos * args.faces_per_photo} pasted), {run.image_size} px crops, batch {bs}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"MTCNN detection: {t_detect:.2f} s ({args.photos / t_detect:.1f} photos/s, {n / t_detect:.1f} faces/s); "
          f"framing: {t_frame:.3f} s ({n / t_frame:.0f} faces/s); both shared by the backends")
    print()
    print("| backend | model faces/s | x ONNX | with detection and framing, faces/s | x ONNX |")
    print("|---|---|---|---|---|")
    onnx_model, onnx_t = rates["onnx"]
    onnx_total = n / (onnx_t + t_detect + t_frame)
    for name, (rate, t) in rates.items():
        total = n / (t + t_detect + t_frame)
        print(f"| {name} | {rate:.1f} | {rate / onnx_model:.2f} | {total:.1f} | {total / onnx_total:.2f} |")


if __name__ == "__main__":
    main()
