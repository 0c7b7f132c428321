"""The on-device ``target_like`` augmentation of stream mode, three ways, at one batch size, on each device.

    python benchmarks/bench_augment.py                                  # CPU, and CUDA too when a GPU is present
    python benchmarks/bench_augment.py --batch 256 --steps 20 --devices cuda

The same steps with per-sample random parameters, as near as each library allows: zoom-out framing with a
shift, rotation, horizontal flip, greyscale, Gaussian blur, brightness and contrast, from generator-size
faces (64 px) to the teacher's view size (112 px):
- ``facekd 112``: :class:`facekd.distill.device_augment.DeviceAugment` (plain torch ops: one ``affine_grid`` /
  ``grid_sample`` for the framing, grouped convolutions for the blur), parameters drawn on the CPU from a
  seeded generator, as stream mode runs it: the warp goes straight to the view size, and the blur runs there;
- ``facekd 64``: the same at the generator's size, then a bilinear resize to the view size;
- ``kornia 112``: ``kornia.augmentation.AugmentationSequential``: a resize to the view size, then
  ``RandomAffine``, ``RandomHorizontalFlip``, ``RandomGrayscale``, ``RandomGaussianBlur`` and ``ColorJitter``
  (per-sample parameters): the work facekd does, whose warp and blur run at the view size;
- ``kornia 64``: the same steps at the generator's size, then the resize (a quarter of the pixels through the
  warp and blur; a second resampling of every face);
- ``tv2 loop``: ``torchvision.transforms.v2`` with the same steps, called once per image (a v2 transform draws
  one set of parameters per call, so per-sample randomness on a batch means one call per sample);
- ``tv2 batch``: the same v2 pipeline called once on the whole batch. Every image then shares one set of
  parameters, which stream mode cannot use; it is printed as that library's lower bound.
The ceiling is the fastest of them; every row prints its ratio to it. kornia is optional: the row says so
when it is not installed.
"""
from __future__ import annotations

import argparse
import math
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import device_label, requested_devices, steps_per_second  # noqa: E402
from facekd.distill.device_augment import DeviceAugment  # noqa: E402
from facekd.engine import resolve_device  # noqa: E402

AUG = DeviceAugment()  # the target_like preset's defaults: the settings every variant copies


def facekd_pipeline(size: int, resize_last: bool = False):
    """facekd's steps: warp straight to ``size`` (one resampling), or at the input's size, then resize."""
    gen = torch.Generator().manual_seed(0)

    def run(x: torch.Tensor) -> torch.Tensor:
        p = AUG.params(x.shape[0], gen)
        if resize_last:
            return F.interpolate(AUG.apply(x, p), size=(size, size), mode="bilinear", align_corners=False)
        return AUG.apply(x, p, size)
    return run


def kornia_pipeline(size: int, in_size: int, device: torch.device, resize_first: bool):
    """kornia's steps; ``resize_first``: resize, then warp and blur at ``size`` (the work facekd does), else warp
    and blur at ``in_size`` and resize last (cheaper: fewer pixels through ``grid_sample``)."""
    import kornia.augmentation as K

    at = size if resize_first else in_size
    sigma = tuple(s * at / in_size for s in AUG.blur_sigma)  # the preset's sigma is in generator pixels
    k = 2 * math.ceil(3 * sigma[1]) + 1
    steps = [
        K.RandomAffine(degrees=AUG.rotate, translate=(0.2, 0.2), scale=AUG.scale, padding_mode="border",
                       p=AUG.p_zoom),
        K.RandomHorizontalFlip(p=AUG.p_flip),
        K.RandomGrayscale(p=AUG.p_grey),
        K.RandomGaussianBlur(kernel_size=(k, k), sigma=sigma, p=AUG.p_blur),
        K.ColorJitter(brightness=AUG.brightness, contrast=AUG.contrast, p=AUG.p_brightness_contrast),
    ]
    resize = K.Resize(size)
    return K.AugmentationSequential(*([resize] + steps if resize_first else steps + [resize])).to(device)


def tv2_pipeline(size: int):
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomApply([v2.RandomAffine(degrees=AUG.rotate, translate=(0.2, 0.2), scale=AUG.scale)], p=AUG.p_zoom),
        v2.RandomHorizontalFlip(p=AUG.p_flip),
        v2.RandomGrayscale(p=AUG.p_grey),
        v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=AUG.blur_sigma)], p=AUG.p_blur),
        v2.RandomApply([v2.ColorJitter(brightness=AUG.brightness, contrast=AUG.contrast)],
                       p=AUG.p_brightness_contrast),
        v2.Resize(size, antialias=False),
    ])


def measure(device: torch.device, args) -> dict[str, float | None]:
    """img/s of each variant on ``device`` (None: not installed)."""
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.in_size, args.in_size, device=device)
    variants = {"facekd 112": facekd_pipeline(args.view_size), "facekd 64": facekd_pipeline(args.view_size, True)}
    for label, first in (("kornia 112", True), ("kornia 64", False)):
        try:
            variants[label] = kornia_pipeline(args.view_size, args.in_size, device, resize_first=first)
        except ImportError:
            variants[label] = None
    tv2 = tv2_pipeline(args.view_size)
    variants["tv2 loop"] = lambda b: torch.stack([tv2(img) for img in b])
    variants["tv2 batch"] = tv2
    out: dict[str, float | None] = {}
    for name, fn in variants.items():
        if fn is None:
            out[name] = None
            continue
        with torch.no_grad():
            y = fn(x)
            assert y.shape == (args.batch, 3, args.view_size, args.view_size), (name, tuple(y.shape))
            out[name] = args.batch * steps_per_second(lambda: fn(x), args.steps, device, args.warmup)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed calls per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before each measurement")
    p.add_argument("--in-size", type=int, default=64, help="the generator's face size")
    p.add_argument("--view-size", type=int, default=112, help="the augmented view's size (the teacher's input)")
    p.add_argument("--devices", default="cpu,cuda", help="comma list; cuda is skipped when no GPU is present")
    args = p.parse_args()
    devices = requested_devices(args.devices)
    print(f"target_like augmentation, {args.in_size} -> {args.view_size} px, batch {args.batch}, "
          f"{args.steps} calls (img/s; ratio to the fastest per-sample variant)")
    for name in devices:
        device = resolve_device(name)
        r = measure(device, args)
        per_sample = [v for k, v in r.items() if v is not None and k != "tv2 batch"]
        ceiling = max(per_sample)
        label = device_label(device)
        print(label)
        for k, v in r.items():
            note = " (one parameter set per batch: not usable by stream mode)" if k == "tv2 batch" else ""
            print(f"  {k:<11} " + ("not installed" if v is None else f"{v:>10.1f}  {v / ceiling:>5.2f}{note}"))


if __name__ == "__main__":
    main()
