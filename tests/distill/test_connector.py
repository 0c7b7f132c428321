"""The paper's label-trained connector: identity start (= label-free bce targets), learns the classes."""
import numpy as np
import torch

from facekd.distill.connector import Connector, train_connector
from facekd.distill.losses import FeatureStats, build_loss


def test_connector_starts_at_label_free_targets_and_learns_labels():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 20)
    centres = rng.normal(0, 1, (4, 16)) * 3
    x = (centres[y] + rng.normal(0, 1, (80, 16))).astype(np.float32) * 2 + 5
    stats = FeatureStats(torch.from_numpy(x.mean(0)), torch.from_numpy(x.std(0)))
    t = torch.from_numpy(x[:5])
    assert torch.allclose(Connector(stats)(t), build_loss("bce", stats).target(t), atol=1e-6)
    connector, info = train_connector(x, y, stats, {"epochs": 40, "lr": 1e-2}, seed=0)
    assert info["connector_train_accuracy"] > 0.95
    out = connector(t)
    assert out.shape == (5, 16) and (out > 0).all() and (out < 1).all()
    assert not any(p.requires_grad for p in connector.parameters())
    again, _ = train_connector(x, y, stats, {"epochs": 40, "lr": 1e-2}, seed=0)
    assert torch.equal(again.linear.weight, connector.linear.weight)
