"""The embedded DCGAN generator wrapped as a diffusers pipeline."""
import pytest
import torch
from torch import nn

from facekd.assets import EMBEDDED_ASSETS
from facekd.generators import GENERATORS, GeneratorError, build_generator
from facekd.generators.dcgan import DCGANGenerator, DCGANPipeline, load_embedded_dcgan


@pytest.fixture(scope="module")
def sampler():
    return build_generator({"name": "dcgan"}, device="cpu")


def test_architecture_matches_the_design():
    gan = DCGANGenerator()
    convs = [m for m in gan.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0], c.padding[0]) for c in convs] == [
        (100, 512, 1, 0), (512, 256, 2, 1), (256, 128, 2, 1), (128, 64, 2, 1), (64, 3, 2, 1)]
    assert all(c.bias is None and c.kernel_size == (4, 4) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in gan.modules()) == 4
    assert isinstance(gan.main[-1], nn.Tanh)
    assert gan(torch.zeros(2, 100)).shape == (2, 3, 64, 64)


def test_embedded_weights_load_strictly_in_eval_mode():
    pipe, sha = load_embedded_dcgan()
    assert sha == EMBEDDED_ASSETS["dcgan"].sha256
    assert not pipe.gan.training
    assert float(pipe.gan.main[1].running_var.mean()) != 1.0  # real BatchNorm statistics, not a fresh init


def test_samples_are_uint8_and_seed_determined(sampler):
    x = sampler.sample(range(12))
    assert x.dtype == torch.uint8 and x.shape == (12, 64, 64, 3)
    assert torch.equal(sampler.sample([3, 4, 5]), x[3:6])  # batch composition does not matter
    assert torch.equal(sampler.sample([7]), x[7:8])
    assert not torch.equal(x[0], x[1])
    assert 40 < x.float().mean() < 215 and x.float().std() > 20  # images, not blank or saturated
    small = sampler.sample(range(2), size=32)
    assert small.shape == (2, 32, 32, 3)


def test_samples_are_faces(sampler):
    """MTCNN finds a confident face in nearly every sample (a real check that the weights make faces)."""
    from facekd.generators.face_filter import FaceFilter

    probs = FaceFilter(0.9).probabilities(sampler.sample(range(24)))
    assert (probs >= 0.9).mean() >= 0.8


def test_save_and_load_pretrained_roundtrip(sampler, tmp_path):
    sampler.pipe.save_pretrained(tmp_path / "dcgan")
    assert (tmp_path / "dcgan" / "model_index.json").is_file()
    loaded = DCGANPipeline.from_pretrained(tmp_path / "dcgan")
    assert isinstance(loaded.gan, DCGANGenerator)
    again = build_generator({"name": "dcgan", "path": str(tmp_path / "dcgan")}, device="cpu")
    assert torch.equal(again.sample(range(4)), sampler.sample(range(4)))
    out = loaded(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (2, 64, 64, 3) and 0 <= out.min() and out.max() <= 1


def test_registry_and_unknown_generator():
    assert {"dcgan", "diffusers"} <= set(GENERATORS.names())
    with pytest.raises(GeneratorError, match="unknown generator 'nope'.*dcgan.*diffusers"):
        build_generator({"name": "nope"})


def test_latents_match_per_sample_generators(sampler):
    """The fast latent path draws exactly what one seeded generator per sample gives the pipeline."""
    gens = [torch.Generator().manual_seed(s) for s in (5, 9, 2)]
    via_gens = sampler.pipe(batch_size=3, generator=gens, output_type="pt").images
    x = (via_gens * 255).round().permute(0, 2, 3, 1).to(torch.uint8)
    assert torch.equal(x, sampler.sample([5, 9, 2]))
