"""What every face generator offers the generate stage: seeds in, uint8 RGB faces out.

Face ``i`` depends only on its seed: each sample gets its own ``torch.Generator`` on the CPU, seeded with
its seed, so its noise is the same whatever batch it falls in, and the noise is moved to the device
afterwards.  BatchNorm layers run in eval mode, so samples in a batch do not interact.
"""
from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from facekd.engine import resolve_device
from facekd.errors import FacekdError

__all__ = ["GeneratorError", "FaceSampler", "resolve_precision", "images_to_uint8",
           "check_pipeline_folder", "load_pipeline", "seeded_normal"]


class GeneratorError(FacekdError, ValueError):
    """A generator that cannot be built from the given configuration, with the reason."""


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA, ``fp32`` elsewhere; ``fp32`` and ``bf16`` are kept as given."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in ("fp32", "bf16"):
        raise GeneratorError(f"unknown precision '{precision}'; use auto, fp32 or bf16")
    return precision


def check_pipeline_folder(path: str | os.PathLike | None) -> Path:
    """Refuse a missing folder, or one that is not a saved diffusers pipeline (no ``model_index.json``)."""
    if not path:
        raise GeneratorError("this generator needs a local pipeline folder: set generator.path=DIR")
    folder = Path(path).expanduser()
    if not folder.exists():
        raise GeneratorError(f"pipeline folder {folder} does not exist; pass the folder a diffusers "
                             f"pipeline was saved to (save_pretrained) as generator.path=DIR")
    if not folder.is_dir():
        raise GeneratorError(f"generator.path={folder} is a file, not a pipeline folder")
    if not (folder / "model_index.json").is_file():
        raise GeneratorError(f"{folder} is not a diffusers pipeline folder: it has no model_index.json "
                             f"(save one with pipeline.save_pretrained(DIR))")
    return folder


def load_pipeline(cls: type, folder: Path, **kwargs: Any) -> Any:
    """``cls.from_pretrained(folder)`` from the local folder only, without diffusers' loading chatter."""
    from diffusers.utils import logging as dlog

    bar, verbosity = dlog.is_progress_bar_enabled(), dlog.get_verbosity()
    dlog.disable_progress_bar()
    dlog.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            return cls.from_pretrained(folder, local_files_only=True, low_cpu_mem_usage=False, **kwargs)
    except (OSError, ValueError, KeyError, AttributeError, ImportError) as e:
        raise GeneratorError(f"cannot load the diffusers pipeline in {folder}: {e}") from e
    finally:
        dlog.set_verbosity(verbosity)
        if bar:
            dlog.enable_progress_bar()


def images_to_uint8(images: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Float images B x 3 x h x w in [0, 1] -> uint8 B x size x size x 3 (resized with antialiasing if needed)."""
    x = images.float()
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = (x * 255).round_().clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1)


def _as_tensor(images: Any) -> torch.Tensor:
    """A pipeline's ``images`` output (tensor B3HW, numpy BHW3 or list of PIL) -> float tensor B x 3 x H x W."""
    if isinstance(images, torch.Tensor):
        return images
    if isinstance(images, np.ndarray):
        arr = images
    else:  # list of PIL images
        arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim == 3:
        t = t[..., None]
    if t.shape[-1] == 1:
        t = t.expand(*t.shape[:-1], 3)
    return t.permute(0, 3, 1, 2)


def seeded_normal(seeds: Sequence[int], dim: int) -> torch.Tensor:
    """Row ``k`` = ``torch.randn(dim, generator=torch.Generator("cpu").manual_seed(seeds[k]))``, drawn on the CPU."""
    g = torch.Generator("cpu")
    out = torch.empty(len(seeds), dim)
    for k, s in enumerate(seeds):
        g.manual_seed(int(s))
        torch.randn(dim, generator=g, out=out[k])
    return out


class FaceSampler(ABC):
    """A built generator: seeds in, uint8 faces out.

    :meth:`prepare` makes the per-sample randomness on the CPU (it may run in a background thread ahead of
    the device); :meth:`run` turns it into faces.  Subclasses implement :meth:`generate`, and may override
    :meth:`prepare` when the noise can be drawn directly.
    """

    native_size: int | None
    info: dict[str, Any]
    latent_dim: int | None = None  # set by generators that map latents to faces in one forward (stream mode)

    def __init__(self, device: torch.device | str = "cpu", precision: str = "fp32") -> None:
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None

    def prepare(self, seeds: Sequence[int]) -> Any:
        """The per-sample randomness for ``seeds``: by default one seeded CPU ``torch.Generator`` each."""
        return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]

    @abstractmethod
    def generate(self, prepared: Any) -> Any:
        """Images for the prepared randomness, floats in [0, 1] (tensor B3HW, numpy BHW3 or a PIL list)."""

    @torch.inference_mode()
    def run(self, prepared: Any, size: int | None = None) -> torch.Tensor:
        """Faces for prepared randomness as a uint8 CPU tensor B x size x size x 3."""
        return images_to_uint8(_as_tensor(self.generate(prepared)), size).cpu()

    def sample(self, seeds: Sequence[int], size: int | None = None) -> torch.Tensor:
        """Faces for ``seeds`` as a uint8 CPU tensor B x size x size x 3; face ``k`` depends only on ``seeds[k]``."""
        return self.run(self.prepare(seeds), size)

    def from_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Float faces B x 3 x H x W in [0, 1] on the device for latents ``z`` (B x latent_dim), without grad.

        Only generators with a ``latent_dim`` offer it (the distill stage's stream mode needs it).
        """
        raise GeneratorError(f"the {self.info.get('kind', type(self).__name__)} generator does not map latents "
                             "to faces in one forward pass")

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this generator (kind, source, weights hash, settings)."""
        return {**self.info, "precision": self.precision}
