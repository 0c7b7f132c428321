"""Per-tap losses by hand (Eq. 5 with its spectral-norm term), the alignment rule, adapters saved and reloaded."""
import math

import pytest
import torch
import torch.nn.functional as F

from facekd.distill.tap_loss import (TAP_TERMS, TapAdapter, TapLoss, TapPair, TapPairError, attention_map,
                                     common_grid, parse_pairs, pool_to, skd_weights, spectral_norms)
from facekd.errors import UnknownNameError


def _identity_loss(pairs, s_shapes, t_shapes, **kw):
    """A TapLoss whose adapters and target norms are the identity, so terms can be checked by hand."""
    loss = TapLoss(pairs, s_shapes, t_shapes, **kw)
    with torch.no_grad():
        for a in loss.adapters:
            conv = a.map[0]
            conv.weight.copy_(torch.eye(conv.weight.shape[0]).view_as(conv.weight))
        loss.eval()  # BatchNorm with fresh running stats (mean 0, var 1) is the identity up to eps
    return loss


def test_skd_eq5_by_hand_with_spectral_norms():
    torch.manual_seed(0)
    pairs = [TapPair("s1", "t1", loss="skd"), TapPair("s2", "t2", loss="skd")]
    s_shapes = {"s1": (3, 4, 4), "s2": (5, 2, 2)}
    t_shapes = {"t1": (3, 8, 8), "t2": (5, 2, 2)}
    beta, lip = 3.0, 0.5
    loss = _identity_loss(pairs, s_shapes, t_shapes, beta=beta, lipschitz=lip)
    s = {"s1": torch.randn(2, 3, 4, 4), "s2": torch.randn(2, 5, 2, 2)}
    t_full = [torch.randn(2, 3, 8, 8), torch.randn(2, 5, 2, 2)]
    t = [pool_to(t_full[0], loss.grids[0]), t_full[1]]
    total, terms = loss(s, t)

    eps_scale = 1 / math.sqrt(1 + 1e-5)  # the identity BatchNorm divides by sqrt(1 + eps)
    expected = 0.0
    for i, (sk, tk) in enumerate(zip(["s1", "s2"], t)):
        sa = s[sk] * eps_scale
        fm = ((tk - sa) ** 2).mean()
        n = sa[0].numel()
        sn_t = torch.stack([torch.linalg.matrix_norm(m.reshape(m.shape[0], -1), ord=2) for m in tk])
        sn_s = torch.stack([torch.linalg.matrix_norm(m.reshape(m.shape[0], -1), ord=2) for m in sa])
        term = fm + lip * (sn_t - sn_s).abs().mean() / math.sqrt(n)
        assert terms[f"kd/skd/{i}"].item() == pytest.approx(term.item(), rel=1e-5)
        expected += term / beta ** (2 - 1 - (i + 1))  # Eq. 5: layer i (1-based) of L=2 divided by beta^(L-1-i)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_skd_weights_favour_the_top_and_refuse_small_beta():
    assert skd_weights(4, 2.0) == [0.25, 0.5, 1.0, 2.0]
    with pytest.raises(TapPairError, match="kd.beta must be > 1"):
        skd_weights(3, 1.0)


def test_spectral_norms_match_linalg():
    x = torch.randn(3, 4, 5, 6)
    expected = torch.linalg.matrix_norm(x.reshape(3, 4, 30), ord=2)
    assert torch.allclose(spectral_norms(x), expected)
    v = torch.randn(3, 7)
    assert torch.allclose(spectral_norms(v), v.norm(dim=1))
    assert torch.allclose(spectral_norms(x, iters=200), expected, rtol=1e-4)
    relu_maps = torch.relu(torch.randn(4, 64, 8, 8))  # nonnegative maps: a well separated top singular value
    exact = spectral_norms(relu_maps)
    assert torch.allclose(spectral_norms(relu_maps, iters=8), exact, rtol=1e-4)
    # the gradient of the power-iteration estimate equals the SVD's
    a, b = relu_maps.clone().requires_grad_(), relu_maps.clone().requires_grad_()
    spectral_norms(a).sum().backward()
    spectral_norms(b, iters=8).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-3)


def test_attention_transfer_by_hand():
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 6, 4, 4)
    loss = TapLoss([TapPair("s", "t", loss="at", adapter="none")], {"s": (3, 4, 4)}, {"t": (6, 4, 4)})
    total, _ = loss({"s": s}, [t])
    a_s = F.normalize(s.pow(2).mean(1).flatten(1), dim=1)
    a_t = F.normalize(t.pow(2).mean(1).flatten(1), dim=1)
    assert total.item() == pytest.approx((a_s - a_t).pow(2).sum(1).mean().item(), rel=1e-5)
    assert torch.allclose(attention_map(t), a_t)


def test_alignment_rule():
    assert common_grid((64, 16, 16), (128, 56, 56)) == (16, 16)
    assert common_grid((64, 28, 28), (128, 7, 7)) == (7, 7)
    assert common_grid((40,), (128,)) is None
    with pytest.raises(TapPairError, match="pair maps .* with maps"):
        common_grid((512, 2, 2), (128,), "kd.pairs[0]")
    with pytest.raises(TapPairError, match="not ordered"):
        common_grid((8, 4, 16), (8, 8, 8))
    a = TapAdapter((64, 28, 28), (128, 7, 7))
    assert a(torch.randn(2, 64, 28, 28)).shape == (2, 128, 7, 7)


def test_targets_are_standardised_per_channel():
    loss = TapLoss([TapPair("s", "t", loss="mse")], {"s": (4, 2, 2)}, {"t": (3, 2, 2)})
    t = torch.randn(50, 3, 2, 2) * torch.tensor([1.0, 10.0, 100.0]).view(1, 3, 1, 1) + 5
    loss.fit_targets([t])
    z = loss.norms[0](t)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std((0, 2, 3)), torch.ones(3), atol=1e-3)


def test_adapters_and_norms_save_and_reload(tmp_path):
    from safetensors.torch import load_file, save_file

    pairs = parse_pairs(None, ["s1", "s2"], ["t1", "t2"], "skd")
    shapes_s, shapes_t = {"s1": (4, 8, 8), "s2": (6,)}, {"t1": (5, 16, 16), "t2": (9,)}
    a = TapLoss(pairs, shapes_s, shapes_t, beta=2.0)
    a.fit_targets([torch.randn(10, 5, 8, 8), torch.randn(10, 9)])
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, str(tmp_path / "kd.safetensors"))
    b = TapLoss(pairs, shapes_s, shapes_t, beta=2.0)
    b.load_state_dict(load_file(str(tmp_path / "kd.safetensors")))
    a.eval(), b.eval()
    s = {"s1": torch.randn(2, 4, 8, 8), "s2": torch.randn(2, 6)}
    t = [torch.randn(2, 5, 8, 8), torch.randn(2, 9)]
    assert torch.equal(a(s, t)[0], b(s, t)[0])


def test_bad_pairs_are_named():
    with pytest.raises(TapPairError, match="kd.pairs: the student tap set has 2 taps and the teacher's 1"):
        parse_pairs(None, ["a", "b"], ["c"], "skd")
    with pytest.raises(TapPairError, match=r"kd.pairs\[0\] needs 'student' and 'teacher'"):
        parse_pairs([{"student": "a"}], [], [], "skd")
    with pytest.raises(TapPairError, match="kd.pairs: unknown loss term.*nope; choose from at, bce, .*skd"):
        TapLoss([TapPair("s", "t", loss="nope")], {"s": (2,)}, {"t": (2,)})
    with pytest.raises(TapPairError, match="kd.lipschitz"):
        TapLoss([TapPair("s", "t")], {"s": (2,)}, {"t": (2,)}, lipschitz=-1)


def test_tap_terms_registry_lists_the_known_names():
    assert TAP_TERMS.names() == ["at", "bce", "cosine", "fitnet", "mse", "skd"]
    assert "skd" in TAP_TERMS and TAP_TERMS.get("fitnet") is TAP_TERMS.get("mse")
    with pytest.raises(UnknownNameError,
                       match="unknown loss term 'nope'; known loss terms: at, bce, cosine, fitnet, mse, skd"):
        TAP_TERMS.get("nope")
