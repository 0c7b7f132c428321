import math

import pytest
import torch

from facekd.distill.losses import LOSSES, FeatureStats, WithRelational, build_loss, similarity_loss

STATS = FeatureStats(mean=torch.tensor([1.0, -2.0]), std=torch.tensor([2.0, 0.5]))


def test_registry_names_and_unknown_loss():
    assert {"mse", "bce", "cosine"} <= set(LOSSES.names())
    with pytest.raises(KeyError, match="known losss?: .*bce.*cosine.*mse"):
        build_loss({"name": "huber"})
    with pytest.raises(ValueError, match="no option.*temprature"):
        build_loss({"name": "bce", "temprature": 2.0}, STATS)
    with pytest.raises(ValueError, match="name"):
        build_loss({"temperature": 2.0})


def test_mse_raw_by_hand():
    loss = build_loss("mse")
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 0.0], [0.0, 3.0]])
    assert loss(s, t).item() == pytest.approx((1 + 4 + 0 + 9) / 4)


def test_mse_standardized_by_hand():
    loss = build_loss({"name": "mse", "standardize": True}, STATS)
    t = torch.tensor([[3.0, -1.0]])  # z = ((3-1)/2, (-1+2)/0.5) = (1, 2)
    assert torch.allclose(loss.target(t), torch.tensor([[1.0, 2.0]]))
    assert loss(torch.tensor([[0.0, 0.0]]), t).item() == pytest.approx((1 + 4) / 2)
    assert loss(torch.tensor([[1.0, 2.0]]), t).item() == pytest.approx(0.0)
    # to_teacher inverts target
    assert torch.allclose(loss.to_teacher(loss.target(t)), t)


def test_standardizing_loss_needs_stats():
    for cfg in ({"name": "mse", "standardize": True}, {"name": "bce"}, {"name": "cosine", "standardize": True}):
        with pytest.raises(ValueError, match="statistics"):
            build_loss(cfg)


def test_bce_standardized_by_hand():
    loss = build_loss({"name": "bce", "temperature": 2.0}, STATS)
    t = torch.tensor([[1.0, -2.0]])  # z = (0, 0) -> targets 0.5
    # logits 0 vs target 0.5: each element -0.5 log .5 - 0.5 log .5 = ln 2
    assert loss(torch.zeros(1, 2), t).item() == pytest.approx(math.log(2))
    t2 = torch.tensor([[5.0, -2.0]])  # z = (2, 0) -> /T = (1, 0) -> p = (sigmoid(1), .5)
    p = 1 / (1 + math.exp(-1))
    s = torch.tensor([[0.0, 1.0]])
    e1 = -(p * math.log(0.5) + (1 - p) * math.log(0.5))
    q = 1 / (1 + math.exp(-1))
    e2 = -(0.5 * math.log(q) + 0.5 * math.log(1 - q))
    assert loss(s, t2).item() == pytest.approx((e1 + e2) / 2, rel=1e-6)
    # a student logit of z / T stands for the teacher feature t
    assert torch.allclose(loss.to_teacher(torch.tensor([[1.0, 0.0]])), t2)


def test_bce_raw_and_probability_targets():
    raw = build_loss({"name": "bce", "targets": "raw"})
    assert torch.allclose(raw.target(torch.tensor([[0.0, 2.0]])), torch.sigmoid(torch.tensor([[0.0, 2.0]])))
    probs = build_loss({"name": "bce", "targets": "probabilities"})
    t = torch.tensor([[1.0, 0.0]])  # certain targets: loss = softplus(-s) for 1, softplus(s) for 0
    s = torch.tensor([[0.0, 0.0]])
    assert probs(s, t).item() == pytest.approx(math.log(2))
    assert probs(torch.tensor([[100.0, -100.0]]), t).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="targets"):
        build_loss({"name": "bce", "targets": "logits"})


def test_cosine_by_hand():
    loss = build_loss("cosine")
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    t = torch.tensor([[0.0, 3.0], [2.0, 2.0], [-1.0, 0.0]])
    # cos = 0, 1, -1 -> 1 - cos = 1, 0, 2 -> mean 1
    assert loss(s, t).item() == pytest.approx(1.0)
    # spatial features are flattened per sample
    assert loss(torch.ones(2, 3, 2, 2), 5 * torch.ones(2, 3, 2, 2)).item() == pytest.approx(0.0, abs=1e-6)


def test_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match="projection"):
        build_loss("mse")(torch.zeros(2, 3), torch.zeros(2, 4))


def test_losses_backpropagate_and_minimise_at_target():
    t = torch.tensor([[3.0, -1.0], [0.0, -3.0]])
    for cfg in ({"name": "mse", "standardize": True}, {"name": "bce"}, {"name": "cosine"}):
        loss = build_loss(cfg, STATS)
        s = loss.target(t).clone()
        if cfg["name"] == "bce":
            s = torch.logit(s)
        s.requires_grad_(True)
        loss(s, t).backward()
        assert torch.allclose(s.grad, torch.zeros_like(s), atol=1e-5), cfg


def test_feature_stats_from_batches():
    x = torch.randn(37, 3, 2, generator=torch.Generator().manual_seed(0))
    st = FeatureStats.from_batches(x[i : i + 8] for i in range(0, 37, 8))
    assert st.mean.shape == (3, 2)
    assert torch.allclose(st.mean, x.mean(0), atol=1e-6)
    assert torch.allclose(st.std, x.std(0, unbiased=False), atol=1e-6)
    loss = build_loss({"name": "mse", "standardize": True}, st)
    z = loss.target(x)
    assert torch.allclose(z.mean(0), torch.zeros(3, 2), atol=1e-5)


def test_similarity_loss_by_hand():
    # student: two orthogonal unit vectors (cos 0); teacher: the same direction twice (cos 1)
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[3.0, 0.0], [1.0, 0.0]])
    # similarity matrices [[1, 0], [0, 1]] vs [[1, 1], [1, 1]]: two of four entries differ by 1
    assert float(similarity_loss(s, t)) == pytest.approx(0.5)
    assert float(similarity_loss(t, 5 * t)) == pytest.approx(0.0, abs=1e-7)  # scale-free


def test_relational_term_adds_to_any_loss():
    stats = FeatureStats(torch.zeros(2), torch.ones(2))
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[3.0, 0.0], [1.0, 0.0]])
    plain_mse = build_loss({"name": "mse", "standardize": False})
    with_rel = build_loss({"name": "mse", "standardize": False, "relational": 2.0})
    assert isinstance(with_rel, WithRelational) and with_rel.name == "mse"
    assert float(with_rel(s, t)) == pytest.approx(float(plain_mse(s, t)) + 2.0 * 0.5)
    assert not isinstance(build_loss({"name": "bce", "relational": 0.0}, stats), WithRelational)
    bce = build_loss({"name": "bce", "relational": 1.0}, stats)
    z = torch.randn(3, 2)
    assert torch.allclose(bce.to_teacher(z), z) and torch.allclose(bce.target(z), torch.sigmoid(z))
    with pytest.raises(ValueError, match="relational weight must be >= 0"):
        build_loss({"name": "cosine", "relational": -1.0})
    with pytest.raises(ValueError, match="its options: standardize, eps, relational"):
        build_loss({"name": "mse", "nope": 1})
