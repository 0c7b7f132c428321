"""Subclass distillation by hand: class pooling, the auxiliary term, the KL term, the collapse check and bad input."""
import math

import numpy as np
import pytest
import torch

from facekd.baselines.hinton_kd import UNLABELED
from facekd.baselines.subclass_kd import (SubclassPool, class_logits, subclass_aux_loss, subclass_kd_loss,
                                          subclass_settings, subclass_usage)
from facekd.errors import ConfigError


def test_class_probability_is_the_sum_of_its_subclass_probabilities():
    z = torch.tensor([[1.0, 2.0, 0.0, -1.0, 0.5, 3.0]])  # 3 classes x K = 2, class-major
    p = torch.softmax(z, 1)[0]
    by_hand = torch.stack([p[0] + p[1], p[2] + p[3], p[4] + p[5]])
    assert torch.allclose(torch.softmax(class_logits(z, 3), 1)[0], by_hand, atol=1e-6)
    assert torch.allclose(SubclassPool(3)(z), class_logits(z, 3))
    assert class_logits(z, 3)[0, 0].item() == pytest.approx(math.log(math.exp(1.0) + math.exp(2.0)), rel=1e-6)
    with pytest.raises(ValueError):
        class_logits(z, 4)


def _aux_by_hand(z: np.ndarray, t: float, axis: int) -> float:
    mu, var = z.mean(axis, keepdims=True), z.var(axis, keepdims=True)
    zn = (z - mu) / np.sqrt(var + 1e-6) / math.sqrt(z.shape[1])
    total = 0.0
    for i in range(len(z)):
        s = [float(zn[i] @ zn[j]) / t for j in range(len(z))]
        total += -math.log(math.exp(s[i]) / sum(math.exp(v) for v in s))
    return total / len(z)


@pytest.mark.parametrize("normalize,axis", [("batch", 0), ("example", 1)])
def test_aux_loss_by_hand(normalize, axis):
    z = np.array([[1.0, 0.0, 2.0, -1.0], [0.5, 1.5, -0.5, 0.0], [2.0, 2.0, 0.0, 1.0]])
    got = subclass_aux_loss(torch.tensor(z, dtype=torch.float32), temperature=0.5, normalize=normalize)
    assert got.item() == pytest.approx(_aux_by_hand(z, 0.5, axis), rel=1e-5)


def test_aux_loss_prefers_spread_subclasses():
    spread = torch.eye(4) * 5.0                       # each item on its own subclass
    same = torch.tensor([[5.0, 0, 0, 0]] * 3 + [[0, 0, 0, 5.0]])  # three items share one
    assert subclass_aux_loss(spread).item() < subclass_aux_loss(same).item()
    assert subclass_aux_loss(torch.ones(1, 4)).item() == 0.0  # one item: nothing to contrast


def test_subclass_kd_loss_against_a_hand_computed_kl():
    s = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.5, 0.5, 0.0, 1.0]])
    t = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 3.0, 0.0, -2.0]])
    y = torch.tensor([0, 1])
    temp, alpha = 2.0, 0.25
    kl = 0.0
    for i in range(2):
        pt = torch.softmax(t[i] / temp, 0)
        ps = torch.softmax(s[i] / temp, 0)
        kl += float((pt * (pt.log() - ps.log())).sum())
    kl /= 2
    ce = float(torch.nn.functional.cross_entropy(class_logits(s, 2), y))
    loss, terms = subclass_kd_loss(s, t, y, 2, alpha, temp)
    assert loss.item() == pytest.approx(alpha * ce + (1 - alpha) * temp ** 2 * kl, rel=1e-5)
    assert terms["kl"].item() == pytest.approx(kl, rel=1e-5) and terms["ce"].item() == pytest.approx(ce, rel=1e-5)
    # an unlabeled item counts in the KL term only
    y_u = torch.tensor([0, UNLABELED])
    loss_u, terms_u = subclass_kd_loss(s, t, y_u, 2, alpha, temp)
    ce0 = float(torch.nn.functional.cross_entropy(class_logits(s[:1], 2), y[:1]))
    assert terms_u["ce"].item() == pytest.approx(ce0, rel=1e-5) and terms_u["kl"].item() == pytest.approx(kl, rel=1e-5)


def test_usage_counts_dead_subclasses_per_class():
    # 2 classes x K = 3; class 0 puts all its mass on one subclass, class 1 spreads it (one at 0.5%)
    probs = torch.tensor([[0.50, 0.0, 0.0, 0.2, 0.2, 0.1 - 0.0025],
                          [0.49, 0.0, 0.0, 0.2, 0.3, 0.0025 + 0.0025]])
    u = subclass_usage(probs / probs.sum(1, keepdim=True), 2)
    assert u["total"] == 6 and u["per_class"] == [1, 3] and u["used"] == 4
    assert u["collapsed"] == [0]


@pytest.mark.parametrize("kd,aux,needle", [
    ({"subclasses": 1}, {}, "hinton_kd"),
    ({"subclasses": 0}, {}, "kd.subclasses"),
    ({"alpha": 1.5}, {}, "kd.alpha"),
    ({"alpha": -0.1}, {}, "kd.alpha"),
    ({"temperature": 0.0}, {}, "kd.temperature"),
    ({"temperature": "hot"}, {}, "kd.temperature"),
    ({}, {"temperature": -1.0}, "aux.temperature"),
    ({}, {"normalize": "layer"}, "aux.normalize"),
    ({"unlabeled_views": -1}, {}, "kd.unlabeled_views"),
])
def test_bad_settings_name_the_key(kd, aux, needle):
    with pytest.raises(ConfigError, match=needle):
        subclass_settings({"kd": kd, "aux": aux})


def test_default_settings():
    s = subclass_settings({})
    assert s["kd"]["subclasses"] == 4 and s["kd"]["alpha"] == 0.1 and s["kd"]["temperature"] == 1.0
    assert s["aux"] == {"weight": 1.0, "temperature": 1.0, "normalize": "batch"}


def test_unlabeled_images_join_the_kd_term_only(smoke_cfg, smoke_data):
    """Cached mode: labeled views, then unlabeled augmented views of the same photos (label -1), all scored by
    the teacher once; online mode without unlabeled images keeps the plain augmented split."""
    from torch import nn

    from facekd.baselines.base import Predictor
    from facekd.baselines.hinton_kd import logit_kd_train_set
    from facekd.data.preprocess import Preprocess

    teacher = Predictor(nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(1), nn.Linear(12, 6)),
                        Preprocess(size=16, scale=1 / 255.0), output="scores")
    n = len(smoke_data.split.part("train"))
    cfg = {"kd": {"views": 2, "unlabeled_views": 3}}
    ds, extra = logit_kd_train_set(smoke_data, cfg, teacher, seed=0)
    x, y, scores = ds.tensors
    assert len(x) == n * (2 + 3) and scores.shape == (len(x), 6)
    assert (y[: 2 * n] >= 0).all() and (y[2 * n:] == UNLABELED).all()
    assert extra == {"teacher_mode": "cached", "views": 2, "unlabeled_views": 3, "synthetic": 0}
    again, _ = logit_kd_train_set(smoke_data, cfg, teacher, seed=0)
    assert torch.equal(again.tensors[0], x), "the views are reproducible from the seed"
    assert logit_kd_train_set(smoke_data, {"kd": {"teacher_mode": "online"}}, teacher, seed=0)[0] is None
    online, _ = logit_kd_train_set(smoke_data, {"kd": {"teacher_mode": "online", "unlabeled_views": 1}}, teacher, 0)
    assert len(online) == 2 * n and online[len(online) - 1][1] == UNLABELED


def test_subclass_row_with_synthetic_faces(smoke_cfg, smoke_data, smoke_row):
    from facekd.baselines import run_method

    base = smoke_row("subclass_kd")
    mcfg = {**base, "kd": {**base["kd"], "subclasses": 2, "synthetic": {"count": 6}}}
    res = run_method("subclass_kd", mcfg, smoke_cfg.data, smoke_cfg.paths.root, 0, data=smoke_data)
    assert res.extra["synthetic"] == 6 and res.extra["subclasses_total"] == 2 * smoke_data.num_classes
    assert 0.0 <= res.accuracy <= 1.0 and "f1_weighted" in res.test


def test_comparison_notes_how_many_subclasses_the_teacher_uses():
    from facekd.baselines.base import MethodResult
    from facekd.baselines.compare import summarize

    def res(seed, used):
        return MethodResult(method="subclass_kd", student="s", seed=seed,
                            test={"accuracy": 0.9, "f1_macro": 0.9, "f1_weighted": 0.9, "precision_macro": 0.9,
                                  "recall_macro": 0.9, "precision_micro": 0.9, "recall_micro": 0.9, "f1_micro": 0.9},
                            val={}, params=1, mflops=0.0, cpu_ms_per_img=1.0, train_seconds=1.0,
                            extra={"subclasses_used": used, "subclasses_total": 160})

    row = summarize("subclass_kd", "subclass_kd", {}, [res(0, 150), res(1, 152)])
    assert "teacher uses 151/160 subclasses" in row["notes"] and row["f1_weighted_mean"] == 0.9
