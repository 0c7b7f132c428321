import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from facekd.metrics import (RegressionMeter, RunningMoments, classification_metrics, nearest_class_mean_predict,
                            regression_metrics, sample_triplets, triplet_accuracy)


def test_classification_metrics_by_hand():
    # classes 0,1,2; y_true = [0,0,1,1,2,2], y_pred = [0,1,1,1,2,0]
    # class 0: tp=1 fp=1 fn=1 -> p=1/2 r=1/2 f=1/2
    # class 1: tp=2 fp=1 fn=0 -> p=2/3 r=1   f=4/5
    # class 2: tp=1 fp=0 fn=1 -> p=1   r=1/2 f=2/3
    m = classification_metrics([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision_macro"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall_macro"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["f1_macro"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    # single-label micro averages all equal accuracy
    for k in ("precision_micro", "recall_micro", "f1_micro"):
        assert m[k] == pytest.approx(4 / 6)
    # balanced support (2 each): weighted F1 = macro F1
    assert m["f1_weighted"] == pytest.approx(m["f1_macro"])


def test_weighted_f1_weighs_classes_by_support():
    # y_true supports 3, 1, 1; y_pred = [0,0,1,1,2]
    # class 0: tp=2 fp=0 fn=1 -> f=4/5; class 1: tp=1 fp=1 fn=0 -> f=2/3; class 2: tp=1 -> f=1
    m = classification_metrics([0, 0, 0, 1, 2], [0, 0, 1, 1, 2])
    assert m["f1_weighted"] == pytest.approx((3 * 4 / 5 + 2 / 3 + 1) / 5)
    assert m["f1_macro"] == pytest.approx((4 / 5 + 2 / 3 + 1) / 3)


def test_classification_metrics_never_predicted_class_and_bad_input():
    m = classification_metrics(torch.tensor([0, 1]), torch.tensor([0, 0]))
    # class 0: p=1/2 r=1 f=2/3; class 1: p=0 (never predicted) r=0 f=0
    assert m["precision_macro"] == pytest.approx(0.25)
    assert m["f1_macro"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="labels"):
        classification_metrics([0, 1], [0])


def test_regression_metrics_by_hand():
    # dim 0: target [1,3] mean 2 sst 2; pred [1,2] sse 1 -> r2 1/2
    # dim 1: target [0,4] mean 2 sst 8; pred [2,4] sse 4 -> r2 1/2
    target = np.array([[1.0, 0.0], [3.0, 4.0]])
    pred = np.array([[1.0, 2.0], [2.0, 4.0]])
    m = regression_metrics(pred, target)
    assert m["mse"] == pytest.approx((0 + 4 + 1 + 0) / 4)
    assert m["mae"] == pytest.approx((0 + 2 + 1 + 0) / 4)
    assert m["r2"] == pytest.approx(0.5)


def test_regression_meter_streams_equal_to_sklearn():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(103, 7, generator=g) * torch.arange(1, 8) + 5
    pred = target + torch.randn(103, 7, generator=g)
    meter = RegressionMeter()
    for i in range(0, 103, 10):  # uneven last batch
        meter.update(pred[i : i + 10], target[i : i + 10])
    m = meter.compute()
    t, p = target.double().numpy(), pred.double().numpy()
    assert m["mse"] == pytest.approx(mean_squared_error(t, p), rel=1e-10)
    assert m["mae"] == pytest.approx(mean_absolute_error(t, p), rel=1e-10)
    assert m["r2"] == pytest.approx(r2_score(t, p, multioutput="uniform_average"), rel=1e-10)


def test_regression_constant_target_dimension_follows_sklearn():
    target = np.array([[1.0, 2.0], [1.0, 4.0]])
    exact = np.array([[1.0, 2.0], [1.0, 4.0]])
    off = np.array([[1.5, 2.0], [1.0, 4.0]])
    assert regression_metrics(exact, target)["r2"] == pytest.approx(r2_score(target, exact))  # 1
    assert regression_metrics(off, target)["r2"] == pytest.approx(r2_score(target, off))  # (0 + 1) / 2


def test_regression_shape_mismatch_and_empty():
    with pytest.raises(ValueError, match="shape"):
        regression_metrics(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="no samples"):
        RegressionMeter().compute()


def test_running_moments_matches_numpy_on_large_offset():
    x = np.random.default_rng(0).normal(1e6, 2.0, size=(50, 3))
    mom = RunningMoments()
    for i in range(0, 50, 7):
        mom.update(x[i : i + 7])
    np.testing.assert_allclose(mom.mean.numpy(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(mom.var.numpy(), x.var(0), rtol=1e-8)


def test_nearest_class_mean_by_hand():
    train = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    labels = np.array(["a", "a", "b", "b"])  # means: a=(2,0), b=(0,2)
    test = np.array([[1.9, 0.1], [0.2, 5.0], [10.0, 9.0]])
    # euclidean: (10,9) is nearer (2,0)? d²=64+81=145 vs 100+49=149 -> a
    assert list(nearest_class_mean_predict(train, labels, test, "euclidean")) == ["a", "b", "a"]
    # cosine uses directions only: (10,9) has a larger x component -> a; (1, 1.1) -> b
    test2 = np.array([[10.0, 9.0], [1.0, 1.1]])
    assert list(nearest_class_mean_predict(train, labels, test2, "cosine")) == ["a", "b"]
    # a class mean far out: euclidean picks the near small mean, cosine the same direction
    train3 = np.array([[1.0, 0.0], [0.0, 10.0]])
    p = np.array([[1.0, 2.0]])  # d² to (1,0): 4, to (0,10): 65; cos to (1,0): .447, to (0,1): .894
    assert nearest_class_mean_predict(train3, [0, 1], p, "euclidean")[0] == 0
    assert nearest_class_mean_predict(train3, [0, 1], p, "cosine")[0] == 1
    with pytest.raises(ValueError, match="metric"):
        nearest_class_mean_predict(train, labels, test, "manhattan")


def test_triplet_accuracy_by_hand():
    emb = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 0.5]])
    # (0,1,2): d(a,p)=1 < d(a,n)=3 -> hit; (0,1,3): 1 < 0.5 false -> miss; (1,0,2): 1 < 2 hit
    assert triplet_accuracy(emb, triplets=[[0, 1, 2], [0, 1, 3], [1, 0, 2]]) == pytest.approx(2 / 3)
    # ties count as misses
    assert triplet_accuracy(emb, triplets=[[0, 1, 1]]) == 0.0
    # cosine: (1,0) vs (3,0) same direction -> distance 0, not < 0
    assert triplet_accuracy(emb, triplets=[[1, 3, 2]], metric="cosine") == 0.0


def test_sampled_triplets_are_valid_and_reproducible():
    labels = np.array([0, 0, 0, 1, 1, 2])  # class 2 cannot anchor
    t = sample_triplets(labels, 200, seed=3)
    assert (labels[t[:, 0]] == labels[t[:, 1]]).all() and (t[:, 0] != t[:, 1]).all()
    assert (labels[t[:, 0]] != labels[t[:, 2]]).all() and (labels[t[:, 0]] != 2).all()
    np.testing.assert_array_equal(t, sample_triplets(labels, 200, seed=3))
    # perfectly separated clusters score 1
    emb = labels[:, None] * 10.0 + np.random.default_rng(0).normal(0, 0.1, (6, 2))
    assert triplet_accuracy(emb, labels, n_triplets=100) == 1.0
    with pytest.raises(ValueError, match="two"):
        sample_triplets([0, 1, 2], 5)


def test_selection_score_breaks_ties_by_the_lower_loss_only():
    from facekd.metrics import selection_score

    assert selection_score(0.9, 0.5) == pytest.approx(0.9 - 5e-5)
    assert selection_score(0.9, 0.2) > selection_score(0.9, 0.5)          # a tie: the lower loss wins
    assert selection_score(0.925, 50.0) > selection_score(0.9, 0.0)        # one val image more always wins
    assert selection_score(0.9, float("inf")) == pytest.approx(0.9 - 0.1)  # the loss term is capped
