"""What the benchmarks share: a generate run of real DCGAN faces, and a timed, CUDA-synchronised step loop."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch


def steps_per_second(step: Callable[[], None], steps: int, device: torch.device, warmup: int = 5) -> float:
    """Calls of ``step`` per second over ``steps`` calls, after ``min(warmup, steps)`` untimed ones."""
    cuda = device.type == "cuda"
    for _ in range(min(warmup, steps)):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def real_generate_run(root: Path, faces: int) -> Path:
    """A generate run of ``faces`` real DCGAN faces under ``root`` (made once, then reused)."""
    from hydra import compose, initialize_config_dir

    from facekd.generators import generate

    configs = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose("generate", overrides=[f"paths.root={root}", f"generate.num_images={faces}"])
    run = root / "generate" / "dcgan"
    if not (run / "manifest.json").exists():
        generate(cfg)
    return run


def requested_devices(spec: str) -> list[str]:
    """The devices of a comma list such as ``"cpu,cuda"``; cuda is dropped when no GPU is present."""
    return [d for d in spec.split(",") if d and (d != "cuda" or torch.cuda.is_available())]


def device_label(device: torch.device) -> str:
    """The GPU's name, or the CPU with its thread count."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
