"""The files a run keeps: ``best.safetensors`` (save / load) and the random states a checkpoint restores."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from facekd.engine.task import Task
from facekd.hashing import read_safetensors
from facekd.runs import atomic_path

__all__ = ["save_safetensors", "load_best", "CHECKPOINT", "BEST"]

CHECKPOINT = "checkpoint.pt"
BEST = "best.safetensors"


def save_safetensors(state: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Save a state dict as safetensors atomically (copies to CPU, contiguous, unshared)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_best(task: nn.Module, run_dir: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load a run's ``best.safetensors`` into ``task`` (in place) and return it."""
    path = Path(run_dir) / BEST
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the run has not finished an epoch")
    state = read_safetensors(path, writer="this run's training (its best epoch)",
                             fix=f"delete {Path(run_dir)} and run the same command again",
                             device=str(task.device) if isinstance(task, Task) else "cpu")
    task.load_state_dict(state, strict=strict)
    return task


def _rng_state() -> dict:
    """This process's Python, NumPy, torch (and CUDA) random states, as plain tensors and lists."""
    np_state = np.random.get_state(legacy=False)
    state = {"python": list(random.getstate()[1]), "python_pos": random.getstate()[2],
             "numpy_key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
             "numpy_pos": int(np_state["state"]["pos"]), "numpy_gauss": [np_state["has_gauss"], np_state["gauss"]],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    """Restore what :func:`_rng_state` took (CUDA states only onto the same number of GPUs)."""
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": state["numpy_key"].numpy().astype(np.uint32), "pos": state["numpy_pos"]},
                         "has_gauss": state["numpy_gauss"][0], "gauss": state["numpy_gauss"][1]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
