"""The gallery: cosine maths by hand, add/remove round trips, the file's checks, threshold calibration."""
import numpy as np
import pytest

from facekd.errors import ArtifactError, ConfigError
from facekd.gallery import (Gallery, best_impostor_scores, calibrate, check_threshold, dir_far, empirical_threshold,
                            identify_scores, leave_one_person_out_scores, normal_threshold, person_scores)

SHA = "a" * 64


def unit(*v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_person_scores_mean_and_all_by_hand():
    # person 0: two photos at 0 and 90 degrees; person 1: one photo at 180 degrees
    e = np.stack([unit(1, 0), unit(0, 1), unit(-1, 0)])
    owners = np.array([0, 0, 1])
    q = np.stack([unit(1, 0), unit(1, 1)])
    mean = person_scores(q, e, owners, 2, "mean")
    # the mean of (1,0) and (0,1), normalised, is (1,1)/sqrt2: cosine to (1,0) is 1/sqrt2, to (1,1)/sqrt2 is 1
    np.testing.assert_allclose(mean[:, 0], [1 / np.sqrt(2), 1.0], atol=1e-6)
    np.testing.assert_allclose(mean[:, 1], [-1.0, -1 / np.sqrt(2)], atol=1e-6)
    best = person_scores(q, e, owners, 2, "all")
    np.testing.assert_allclose(best[:, 0], [1.0, 1 / np.sqrt(2)], atol=1e-6)  # the best of the person's photos
    # queries need not be unit length: they are normalised
    np.testing.assert_allclose(person_scores(5 * q, e, owners, 2, "mean"), mean, atol=1e-6)
    # a person without photos scores -inf
    assert np.isneginf(person_scores(q, e, owners, 3)[:, 2]).all()
    with pytest.raises(ConfigError, match="mean, all"):
        person_scores(q, e, owners, 2, "median")


def test_identify_scores_and_threshold():
    s = np.array([[0.9, 0.1], [0.2, 0.4]])
    best, score, known = identify_scores(s, 0.5)
    assert best.tolist() == [0, 1] and score.tolist() == [0.9, 0.4] and known.tolist() == [True, False]
    assert identify_scores(s, None)[2].all()
    with pytest.raises(ArtifactError, match="empty"):
        identify_scores(np.zeros((2, 0)), 0.5)


def test_add_remove_round_trip_and_name_clashes():
    g = Gallery(embedder_sha256=SHA, dim=2)
    assert g.add("ann", np.stack([unit(1, 0), unit(1, 0.1)]), ["a1.jpg", "a2.jpg"]) == "added"
    assert g.add("bob", np.stack([unit(0, 1)]), ["b1.jpg"]) == "added"
    assert g.people() == [("ann", 2), ("bob", 1)]
    with pytest.raises(ConfigError, match="already enrolled.*merge.*replace"):
        g.add("ann", np.stack([unit(1, 1)]), ["a3.jpg"])
    assert g.add("ann", np.stack([unit(1, 1), unit(1, 0)]), ["a3.jpg", "a1.jpg"], "merge") == "merged"
    assert g.people() == [("ann", 3), ("bob", 1)]  # a1.jpg was not added twice
    assert g.add("bob", np.stack([unit(0, 1), unit(-1, 1)]), ["b2.jpg", "b3.jpg"], "replace") == "replaced"
    assert dict(g.people()) == {"ann": 3, "bob": 2} and "b1.jpg" not in g.sources
    assert g.remove("ann") == 3
    assert g.people() == [("bob", 2)] and g.owners.tolist() == [0, 0]
    assert [n for n, _, _ in g.identify(np.stack([unit(0, 1)]))] == ["bob"]
    with pytest.raises(ConfigError, match="not enrolled"):
        g.remove("ann")
    with pytest.raises(ArtifactError, match="3-d"):
        g.add("cy", np.ones((1, 3)), ["c.jpg"])


def test_file_round_trip_and_its_checks(tmp_path):
    g = Gallery(embedder_sha256=SHA, dim=3, template="all", embedder={"path": "runs/x"})
    g.add("ann", np.eye(3)[:2], ["a1", "a2"])
    g.add("bob", np.eye(3)[2:], ["b1"])
    g.threshold = {"value": 0.5, "far": 0.01, "method": "max"}
    path = g.save(tmp_path / "g.npz")
    back = Gallery.load(path, SHA)
    assert back.people() == g.people() and back.template == "all" and back.threshold == g.threshold
    np.testing.assert_array_equal(back.embeddings, g.embeddings)
    with pytest.raises(ArtifactError, match="another embedder"):
        Gallery.load(path, "b" * 64)
    raw = bytearray(path.read_bytes())
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ArtifactError, match="damaged"):
        Gallery.load(tmp_path / "cut.npz")
    # a changed embedding with an intact zip: caught by the recorded sha256
    g.embeddings[0, 0] = 0.25
    g.save(tmp_path / "changed.npz")
    with np.load(tmp_path / "changed.npz") as z:
        arrays = {k: z[k] for k in z.files}
    with np.load(path) as z:
        arrays["meta"] = z["meta"]  # the old checksum beside new numbers
    with open(tmp_path / "forged.npz", "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ArtifactError, match="sha256"):
        Gallery.load(tmp_path / "forged.npz")
    with pytest.raises(ArtifactError, match="does not exist"):
        Gallery.load(tmp_path / "none.npz")


def test_empirical_threshold_on_a_known_distribution():
    scores = np.arange(100) / 100.0  # 0.00 .. 0.99
    t = empirical_threshold(scores, 0.05)
    assert 0.94 < t <= 0.95 + 1e-12  # just above the 6th highest: 5 of 100 accepted
    assert (scores >= t).sum() == 5
    assert (scores >= empirical_threshold(scores, 0.0)).sum() == 0


def test_normal_threshold_on_a_known_normal_in_fisher_z():
    rng = np.random.default_rng(0)
    scores = np.tanh(rng.normal(0.2, 0.1, 20000))  # normal after arctanh
    assert normal_threshold(scores, 0.01) == pytest.approx(np.tanh(0.2 + 2.3263 * 0.1), abs=0.005)
    high = np.tanh(rng.normal(2.0, 0.3, 200))  # cosines crowded near 1 (a ReLU embedding): still below 1
    t = normal_threshold(high, 0.01)
    assert t < 1.0 and (high >= t).mean() <= 0.03
    few = np.array([0.1, 0.3])  # far * n < 1: never below the highest score
    assert normal_threshold(few, 0.01) > 0.3
    with pytest.raises(ConfigError, match="two"):
        normal_threshold(np.array([0.1]), 0.01)


def test_leave_one_person_out_and_calibrate():
    e = np.stack([unit(1, 0), unit(1, 0.2), unit(0, 1)])
    owners = np.array([0, 0, 1])
    lopo = leave_one_person_out_scores(e, owners, 2)
    # each photo against the other person only
    np.testing.assert_allclose(lopo, [0.0, unit(1, 0.2)[1], person_scores(e[2:], e[:2], owners[:2], 1)[0, 0]],
                               atol=1e-6)
    assert len(leave_one_person_out_scores(e[:2], owners[:2], 1)) == 0  # one person: no impostor
    syn = best_impostor_scores(np.stack([unit(-1, 0), unit(1, 1)]), e, owners, 2)
    assert syn.shape == (2,)
    both = calibrate(0.01, synthetic=syn, enrolled=lopo)
    assert both["value"] == max(both["synthetic"]["threshold"], both["enrolled"]["threshold"])
    only = calibrate(0.01, synthetic=syn, enrolled=lopo, method="synthetic")
    assert "enrolled" not in only and only["value"] == only["synthetic"]["threshold"]
    with pytest.raises(ConfigError, match="no impostor scores"):
        calibrate(0.01, synthetic=None, enrolled=np.zeros(0))


def test_dir_far_by_hand():
    known = np.array([[0.9, 0.1], [0.3, 0.6], [0.7, 0.2]])
    labels = np.array([0, 1, 1])  # the third is named wrongly
    strangers = np.array([[0.55, 0.2], [0.1, 0.3]])
    f = dir_far(known, labels, strangers, 0.5)
    assert f["dir"] == pytest.approx(2 / 3) and f["far"] == 0.5 and f["accuracy"] == pytest.approx(2 / 3)
    assert dir_far(known, labels, strangers, 0.65)["dir"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("bad", [1.5, -2, "0.3", True, float("nan")])
def test_threshold_outside_minus_one_one_is_refused(bad):
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        check_threshold(bad, "identify.threshold")
    assert check_threshold(-1, "x") == -1.0 and check_threshold(0.4, "x") == 0.4


def test_a_large_gallery_answers_by_its_index(monkeypatch):
    """Beyond EXACT_MAX rows a gallery searches its index; the answers equal the exact ones on separable people."""
    import facekd.gallery_index as gi

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(300, 32)).astype(np.float32)
    g = Gallery(embedder_sha256=SHA, dim=32)
    for i, c in enumerate(centres):
        g.add(f"p{i}", c + 0.05 * rng.normal(size=(2, 32)), [f"p{i}a", f"p{i}b"])
    queries = centres[:50] + 0.05 * rng.normal(size=(50, 32))
    exact = g.identify(queries)
    monkeypatch.setattr(gi, "EXACT_MAX", 100)  # 300 people: now "large"
    by_index = g.identify(queries)
    assert [n for n, _, _ in by_index] == [n for n, _, _ in exact] == [f"p{i}" for i in range(50)]
    np.testing.assert_allclose([s for _, s, _ in by_index], [s for _, s, _ in exact], atol=1e-5)
    assert isinstance(g.index(), gi.AnnIndex)
    scores = g.impostor_scores(rng.normal(size=(20, 32)))
    assert len(scores["enrolled"]) == 600 and len(scores["synthetic"]) == 20
    assert scores["enrolled"].max() < 0.9  # another person's best match, never the photo's own


def test_the_search_index_is_rebuilt_after_a_change_only():
    g = Gallery(embedder_sha256=SHA, dim=2)
    g.add("ann", np.stack([unit(1, 0)]), ["a"])
    first = g.index()
    assert g.index() is first  # nothing changed: the same index
    g.add("bob", np.stack([unit(0, 1)]), ["b"])
    assert g.index() is not first and len(g.index()) == 2
    g.remove("ann")
    assert len(g.index()) == 1 and [n for n, _, _ in g.identify(np.stack([unit(1, 0.1)]))] == ["bob"]
