"""Any unconditional diffusers pipeline in a local folder, on a tiny random-weight DDPM saved by the test."""

import numpy as np
import pytest
import torch

from facekd.data.synthetic import SyntheticFaces
from facekd.generators import GeneratorError, build_generator, generate
from facekd.generators.diffusers_local import scheduler_class


def _build(path, **kw):
    return build_generator({"name": "diffusers", "path": str(path), "num_inference_steps": 2, **kw}, device="cpu")


def test_tiny_pipeline_samples_are_seed_determined_and_resized(tiny_ddpm):
    s = _build(tiny_ddpm)
    assert s.info["pipeline"] == "DDPMPipeline" and s.info["native_size"] == 16
    x = s.sample(range(6), size=24)
    assert x.shape == (6, 24, 24, 3) and x.dtype == torch.uint8
    assert torch.equal(s.sample([2, 3], size=24), x[2:4])
    assert x.float().std() > 1


def test_bf16_precision(tiny_ddpm):
    s = _build(tiny_ddpm, precision="bf16")
    assert s.pipe.unet.dtype == torch.bfloat16 and s.describe()["precision"] == "bf16"
    assert s.sample(range(2)).dtype == torch.uint8


def test_scheduler_swap(tiny_ddpm):
    s = _build(tiny_ddpm, scheduler="ddim")
    assert s.info["scheduler"] == "DDIMScheduler"
    assert torch.equal(s.sample([0, 1, 2]), s.sample([0, 1, 2]))
    with pytest.raises(GeneratorError, match="unknown scheduler 'nope'.*ddim"):
        scheduler_class("nope")


def test_bad_folders(tmp_path):
    with pytest.raises(GeneratorError, match="does not exist"):
        _build(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(GeneratorError, match="not a diffusers pipeline folder.*model_index.json"):
        _build(tmp_path / "plain")
    with pytest.raises(GeneratorError, match="generator.path"):
        build_generator({"name": "diffusers", "path": None})


def test_generate_stage_with_tiny_pipeline(make_cfg, tiny_ddpm):
    base = ["generator=diffusers", f"generator.path={tiny_ddpm}", "generator.num_inference_steps=2",
            "generate.num_images=24", "generate.shard_size=16", "generate.image_size=20"]
    a = SyntheticFaces(generate(make_cfg(*base, "generate.batch_size=8", "generate.name=a")))
    b = SyntheticFaces(generate(make_cfg(*base, "generate.batch_size=5", "generate.name=b")))
    assert len(a) == 24 and a.image_size == 20 and a.batch(range(24)).shape == (24, 20, 20, 3)
    assert np.array_equal(a.batch(range(24)), b.batch(range(24)))
    direct = _build(tiny_ddpm).sample(range(24), size=20).numpy()
    assert np.array_equal(a.batch(range(24)), direct)
    gen = a.manifest["config"]["generator"]
    assert gen["pipeline"] == "DDPMPipeline" and gen["num_inference_steps"] == 2 and len(gen["weights_sha256"]) == 64
    assert (a.run_dir / "preview.png").is_file()
