"""Any unconditional diffusers pipeline saved in a local folder (DDPM, DDIM, LDM, score-based, ...).

``generator=diffusers generator.path=DIR`` loads it offline; ``generator.scheduler`` swaps in another
diffusers scheduler built ``from_config`` of the saved one, and ``generator.num_inference_steps`` sets the
steps.  The pipeline is called once per batch with one ``torch.Generator`` per sample (seeded by the
sample's seed), which the diffusers pipelines built on ``randn_tensor`` honour sample by sample.
"""
from __future__ import annotations

import inspect
from typing import Any

import diffusers
import torch

from facekd.assets import sha256_tree

from .base import FaceSampler, GeneratorError, check_pipeline_folder, load_pipeline
from .registry import GENERATORS

__all__ = ["SCHEDULERS", "scheduler_class", "DiffusersSampler"]

SCHEDULERS: dict[str, str] = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "lms": "LMSDiscreteScheduler",
    "sde_ve": "ScoreSdeVeScheduler",
}


def scheduler_class(name: str) -> type:
    """A diffusers scheduler class from a short name (``ddim``) or its class name (``DDIMScheduler``)."""
    cls_name = SCHEDULERS.get(name.lower(), name)
    cls = getattr(diffusers, cls_name, None)
    if cls is None or not cls_name.endswith("Scheduler"):
        raise GeneratorError(f"unknown scheduler '{name}'; known: {', '.join(SCHEDULERS)} "
                             f"(or any diffusers scheduler class name)")
    return cls


class DiffusersSampler(FaceSampler):
    """Samples from an unconditional diffusers pipeline in a local folder."""

    def __init__(self, path: str, num_inference_steps: int | None = None, scheduler: str | None = None,
                 device: torch.device | str = "cpu", precision: str = "fp32") -> None:
        folder = check_pipeline_folder(path)
        super().__init__(device=device, precision=precision)
        dtype = torch.bfloat16 if self.precision == "bf16" else None
        pipe = load_pipeline(diffusers.DiffusionPipeline, folder, **({"torch_dtype": dtype} if dtype else {}))
        params = inspect.signature(pipe.__call__).parameters
        if "generator" not in params or "batch_size" not in params:
            raise GeneratorError(f"{folder} holds a {type(pipe).__name__}, which is not an unconditional image "
                                 f"pipeline (its __call__ takes no batch_size/generator)")
        if scheduler:
            if getattr(pipe, "scheduler", None) is None:
                raise GeneratorError(f"{type(pipe).__name__} has no scheduler to replace with '{scheduler}'")
            pipe.scheduler = scheduler_class(scheduler).from_config(pipe.scheduler.config)
        if num_inference_steps is not None and "num_inference_steps" not in params:
            raise GeneratorError(f"{type(pipe).__name__} takes no num_inference_steps")
        if num_inference_steps is not None and num_inference_steps <= 0:
            raise GeneratorError(f"generator.num_inference_steps must be > 0, got {num_inference_steps}")
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)
        self.kwargs: dict[str, Any] = {"output_type": "pt" if "output_type" in params else None}
        if num_inference_steps is not None:
            self.kwargs["num_inference_steps"] = int(num_inference_steps)
        self.kwargs = {k: v for k, v in self.kwargs.items() if v is not None}
        self.native_size = self._native_size()
        self.info = {"kind": "diffusers", "source": str(folder.resolve()), "weights_sha256": sha256_tree(folder),
                     "pipeline": type(pipe).__name__,
                     "scheduler": type(pipe.scheduler).__name__ if getattr(pipe, "scheduler", None) else None,
                     "num_inference_steps": num_inference_steps, "native_size": self.native_size}

    def _native_size(self) -> int | None:
        for name in ("unet", "transformer"):
            model = getattr(self.pipe, name, None)
            size = getattr(getattr(model, "config", None), "sample_size", None)
            if size is not None:
                scale = 2 ** (len(self.pipe.vqvae.config.block_out_channels) - 1) if hasattr(self.pipe, "vqvae") else 1
                return int(size if isinstance(size, int) else size[0]) * scale
        return None

    def generate(self, generators: list[torch.Generator]) -> Any:
        """One pipeline call for the batch, with one seeded generator per sample."""
        out = self.pipe(batch_size=len(generators), generator=generators, **self.kwargs)
        return out.images if hasattr(out, "images") else out[0]


@GENERATORS.register("diffusers")
def build_diffusers(path: str | None = None, num_inference_steps: int | None = None, scheduler: str | None = None,
                    device: torch.device | str = "cpu", precision: str = "fp32", **unused: object) -> DiffusersSampler:
    """Any unconditional diffusers pipeline saved in ``path`` (``model_index.json`` plus its components)."""
    return DiffusersSampler(path=path, num_inference_steps=num_inference_steps, scheduler=scheduler,
                            device=device, precision=precision)
