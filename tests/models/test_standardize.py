"""The one standardiser: per-dimension and per-channel statistics, inverse, eps floor, single sample."""
import torch

from facekd.models.standardize import Standardize


def test_per_dimension_by_hand():
    x = torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]])
    s = Standardize.fitted(x)
    assert torch.allclose(s.mean, torch.tensor([3.0, 10.0]))
    assert torch.allclose(s.std, torch.tensor([2.0, 1e-6]))  # unbiased std; a constant dimension floored at eps
    assert torch.allclose(s(x)[:, 0], torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(s.inverse(s(x)), x)
    assert torch.allclose(Standardize.fitted(x, unbiased=False).std[0], torch.tensor(8 / 3) ** 0.5)


def test_per_channel_on_maps():
    t = torch.randn(50, 3, 2, 2) * torch.tensor([1.0, 10.0, 100.0]).view(1, 3, 1, 1) + 5
    s = Standardize.fitted(t, eps=1e-4, channelwise=True)
    z = s(t)
    assert s.mean.shape == (3,)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std((0, 2, 3)), torch.ones(3), atol=1e-4)
    assert torch.allclose(s(t[:, :, :1, :1]), z[:, :, :1, :1])  # the same statistics on any grid


def test_single_sample_and_from_stats():
    s = Standardize.fitted(torch.tensor([[2.0, 4.0]]))
    assert torch.equal(s.std, torch.ones(2))
    t = Standardize.from_stats(torch.tensor([1.0]), torch.tensor([0.0]), eps=0.5)
    assert t(torch.tensor([[2.0]])).item() == 2.0
