"""The embedded DCGAN face generator, wrapped as a diffusers model inside a diffusers pipeline.

The weights are the ``netG_state_dict`` of the pinned ``gan-face-generate`` package (64x64 RGB faces,
latent size 100, trained on DigiFace-1M, which is licensed for non-commercial research only).
Wrapping the network as a :class:`diffusers.ModelMixin` / :class:`diffusers.ConfigMixin` inside a
:class:`diffusers.DiffusionPipeline` gives it ``save_pretrained`` / ``from_pretrained`` on a local folder,
like any other diffusers generator.
"""
from __future__ import annotations

from typing import Sequence

import torch
from diffusers import DiffusionPipeline, ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from torch import nn

from facekd.assets import EMBEDDED_ASSETS, resolve, sha256_tree

from .base import FaceSampler, check_pipeline_folder, load_pipeline, seeded_normal
from .registry import GENERATORS

__all__ = ["DCGANGenerator", "DCGANPipeline", "load_embedded_dcgan", "DCGANSampler"]


class DCGANGenerator(ModelMixin, ConfigMixin):
    """DCGAN generator: latent ``z`` (B x latent_dim) -> image in [-1, 1] (B x 3 x 64 x 64).

    Four stride-2 transposed convolutions after a 4x4 projection, BatchNorm + ReLU between them, Tanh at
    the end, no biases.  Layer indices inside ``main`` match the published ``netG_state_dict``.
    """

    @register_to_config
    def __init__(self, latent_dim: int = 100, base_channels: int = 64, out_channels: int = 3) -> None:
        super().__init__()
        c = base_channels
        widths = [c * 8, c * 4, c * 2, c]
        layers: list[nn.Module] = []
        in_ch = latent_dim
        for i, out_ch in enumerate(widths):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [nn.ConvTranspose2d(in_ch, out_ch, 4, stride, pad, bias=False), nn.BatchNorm2d(out_ch),
                       nn.ReLU(inplace=True)]
            in_ch = out_ch
        layers += [nn.ConvTranspose2d(in_ch, out_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    @property
    def sample_size(self) -> int:
        return 64

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.reshape(z.shape[0], self.config.latent_dim, 1, 1))


class DCGANPipeline(DiffusionPipeline):
    """Unconditional sampling from a :class:`DCGANGenerator`, with the diffusers pipeline interface.

    ``generator`` may be a list with one ``torch.Generator`` per sample, so sample ``i`` depends only on
    its own generator: the latents are drawn on the generators' device (CPU) and then moved.
    """

    model_cpu_offload_seq = "gan"

    def __init__(self, gan: DCGANGenerator) -> None:
        super().__init__()
        self.register_modules(gan=gan)

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, generator: torch.Generator | Sequence[torch.Generator] | None = None,
                 output_type: str = "pil", return_dict: bool = True, latents: torch.Tensor | None = None,
                 dtype: torch.dtype | None = None) -> ImagePipelineOutput | tuple:
        """Sample ``batch_size`` faces (or one per row of ``latents``); ``dtype`` = autocast dtype (bf16)."""
        dim = self.gan.config.latent_dim
        gen = list(generator) if isinstance(generator, (list, tuple)) else None
        if latents is not None:
            z = latents
        elif gen is not None:
            if len(gen) != batch_size:
                raise ValueError(f"got {len(gen)} generators for a batch of {batch_size}")
            z = torch.stack([torch.randn(dim, generator=g, device=g.device) for g in gen])
        else:
            z = torch.randn(batch_size, dim, generator=generator,
                            device=generator.device if generator is not None else "cpu")
        device = self._execution_device
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            x = self.gan(z.to(device, self.gan.dtype, non_blocking=True))
        image = (x.float() / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)


def load_embedded_dcgan() -> tuple[DCGANPipeline, str]:
    """Build the pipeline from the embedded weights; returns it (in eval mode) with the weights' sha256."""
    path = resolve("dcgan")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "netG_state_dict" not in state:
        raise KeyError(f"{path} has no 'netG_state_dict' (keys: {sorted(state)})")
    gan = DCGANGenerator()
    gan.load_state_dict(state["netG_state_dict"], strict=True)
    gan.eval()
    return DCGANPipeline(gan=gan), EMBEDDED_ASSETS["dcgan"].sha256


CPU_CHUNK = 32  # faces per network call on the CPU, whatever the batch size asked for


class DCGANSampler(FaceSampler):
    """Faces from a :class:`DCGANPipeline`: the embedded weights, or a pipeline folder saved earlier."""

    def __init__(self, path: str | None = None, device: torch.device | str = "cpu",
                 precision: str = "fp32") -> None:
        if path:
            folder = check_pipeline_folder(path)
            pipe = load_pipeline(DCGANPipeline, folder)
            weights, source = sha256_tree(folder), str(folder)
        else:
            pipe, weights = load_embedded_dcgan()
            source = "embedded:" + EMBEDDED_ASSETS["dcgan"].requirement
        super().__init__(device=device, precision=precision)
        pipe.gan.eval()
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)
        if self.device.type == "cuda":
            self.pipe.gan.to(memory_format=torch.channels_last)
        self.native_size = 64
        self.latent_dim = int(self.pipe.gan.config.latent_dim)
        self.info = {"kind": "dcgan", "source": source, "weights_sha256": weights,
                     "pipeline": type(pipe).__name__, "native_size": 64}

    def prepare(self, seeds: Sequence[int]) -> torch.Tensor:
        """The latents of ``seeds`` (each from its own seeded CPU generator), pinned for a fast copy to CUDA."""
        z = seeded_normal(seeds, self.pipe.gan.config.latent_dim)
        return z.pin_memory() if self.device.type == "cuda" else z

    def generate(self, prepared: torch.Tensor) -> torch.Tensor:
        """Faces for latents; on the CPU in fixed chunks of :data:`CPU_CHUNK` (the last one padded with zeros), so
        that a face's bytes never depend on how many faces are asked for at once: oneDNN picks its kernels by the
        batch's shape, and a 5-face batch rounded two pixels of 16 faces differently from an 8-face one."""
        if self.device.type != "cpu":
            return self._forward(prepared)
        out = []
        for i in range(0, len(prepared), CPU_CHUNK):
            part = prepared[i:i + CPU_CHUNK]
            pad = CPU_CHUNK - len(part)
            full = torch.cat([part, part.new_zeros(pad, part.shape[1])]) if pad else part
            out.append(self._forward(full)[:len(part)])
        return torch.cat(out)

    def _forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.pipe(batch_size=len(z), latents=z, output_type="pt", dtype=self.autocast_dtype).images

    def from_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Faces in [0, 1] (B x 3 x 64 x 64) on the device for latents already there (stream mode)."""
        return self.generate(z)


@GENERATORS.register("dcgan")
def build_dcgan(path: str | None = None, device: torch.device | str = "cpu", precision: str = "fp32",
                **unused: object) -> DCGANSampler:
    """The embedded DCGAN face generator (or a saved :class:`DCGANPipeline` folder given by ``path``)."""
    return DCGANSampler(path=path, device=device, precision=precision)
