"""MAML: the inner loop adapts, second-order meta-gradients are exact, no test statistics leak, set-size errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facekd.baselines import run_method
from facekd.baselines.maml import Conv4, EpisodeError, MAMLLearner, check_episodes


def _toy_task(n_way=3, k=2, q=2, seed=0):
    """Each class is a fixed random pattern plus noise."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(n_way, 3, 16, 16, generator=g)

    def draw(n):
        x = protos.repeat_interleave(n, 0) + 0.3 * torch.randn(n_way * n, 3, 16, 16, generator=g)
        return x, torch.arange(n_way).repeat_interleave(n)

    return (*draw(k), *draw(q))


def test_inner_loop_adapts():
    torch.manual_seed(0)
    net = Conv4(width=8, input_size=16, num_classes=3)
    learner = MAMLLearner(net, inner_lr=0.5, first_order=False)
    xs, ys, xq, yq = _toy_task()
    p0 = learner.initial(3)
    before = F.cross_entropy(learner.query_logits(p0, xs, xq), yq)
    assert before.item() == pytest.approx(np.log(3), abs=1e-5)  # zero-initialised head: uniform scores
    p = learner.adapt(p0, xs, ys, steps=5)
    after = F.cross_entropy(learner.query_logits(p, xs, xq), yq)
    assert after.item() < before.item() - 0.1


def test_second_order_gradient_matches_autograd_and_differs_from_first_order():
    torch.manual_seed(1)
    net = Conv4(width=4, input_size=16, num_classes=3).double()
    xs, ys, xq, yq = (t.double() if t.is_floating_point() else t for t in _toy_task())
    grads = {}
    for first_order in (False, True):
        learner = MAMLLearner(net, inner_lr=0.3, first_order=first_order)
        p0 = learner.initial(3)
        loss = F.cross_entropy(learner.query_logits(learner.adapt(p0, xs, ys, 2), xs, xq), yq)
        grads[first_order] = torch.autograd.grad(loss, net.convs[0].weight)[0]
    # reference: plain autograd with create_graph
    body = dict(net.named_parameters())
    body = {k: v for k, v in body.items() if not k.startswith("head.")}
    ref_learner = MAMLLearner(net, inner_lr=0.3, first_order=False)
    p = ref_learner.initial(3, body)
    p["head.weight"].requires_grad_(True)
    p["head.bias"].requires_grad_(True)
    for _ in range(2):
        g = torch.autograd.grad(ref_learner.loss(p, xs, ys), list(p.values()), create_graph=True)
        p = {k: v - 0.3 * gk for (k, v), gk in zip(p.items(), g)}
    ref = torch.autograd.grad(F.cross_entropy(ref_learner.query_logits(p, xs, xq), yq), net.convs[0].weight)[0]
    torch.testing.assert_close(grads[False], ref)
    assert not torch.allclose(grads[False], grads[True])


def test_no_test_statistics_leak():
    torch.manual_seed(2)
    net = Conv4(width=4, input_size=16, num_classes=3)
    learner = MAMLLearner(net, 0.1, False)
    xs, ys, xq, yq = _toy_task()
    p = learner.initial(3)
    p[HEAD := "head.weight"] = torch.randn(3, net.feature_dim)
    full = learner.query_logits(p, xs, xq)
    # a query's scores do not depend on the other queries (only the support sets the statistics)
    one = learner.query_logits(p, xs, xq[:1])
    torch.testing.assert_close(full[:1], one)
    shifted = learner.query_logits(p, xs, torch.cat([xq[:1], 100 + xq[1:]]))
    torch.testing.assert_close(full[:1], shifted[:1])
    # the deployed network with frozen support statistics classifies images one at a time identically
    net.freeze_support_stats(xs)
    with torch.no_grad():
        batch = net.features(xq)
        single = torch.cat([net.features(xq[i:i + 1]) for i in range(len(xq))])
    torch.testing.assert_close(batch, single)
    assert HEAD == "head.weight"


def test_too_small_set_errors(smoke_cfg, smoke_data, smoke_row):
    with pytest.raises(EpisodeError, match="too small for 5-way 1-shot"):
        check_episodes(np.array([2, 2, 2, 1]), n_way=5, k_shot=1, q_query=1)
    assert list(check_episodes(np.array([2, 1, 2]), n_way=2, k_shot=1, q_query=1)) == [0, 2]
    mcfg = {**smoke_row("maml"), "k_shot": 2}  # 2-shot + 1 query needs 3 train images; ORL split has 2
    with pytest.raises(EpisodeError, match="at least 3 train images"):
        run_method("maml", mcfg, smoke_cfg.data, smoke_cfg.paths.root, 0, data=smoke_data)
    with pytest.raises(EpisodeError, match="50-way"):
        run_method("maml", {**smoke_row("maml"), "n_way": 50}, smoke_cfg.data, smoke_cfg.paths.root, 0,
                   data=smoke_data)
