"""The enroll protocol's figures on hand-made embeddings, and synthetic impostors rendered like the photos."""
import numpy as np
import pytest
import torch

from facekd.data.synthetic import render_synthetic
from facekd.gallery_eval import first_k, gallery_figures, load_embeddings, save_embeddings


def _people(n, start, dim, per, noise, rng):
    """``per`` noisy embeddings of each of n people whose centres are basis vectors start..start+n-1."""
    e = np.concatenate([np.eye(dim)[start + i] + noise * rng.normal(size=(per, dim)) for i in range(n)])
    return e.astype(np.float32), np.repeat(np.arange(n), per)


def test_figures_on_separable_people_and_orthogonal_strangers(tmp_path):
    rng = np.random.default_rng(0)
    dim = 40
    emb = {"train": _people(4, 0, dim, 2, 0.05, rng), "val": _people(4, 0, dim, 1, 0.05, rng),
           "test": _people(4, 0, dim, 3, 0.05, rng), "enroll": _people(3, 4, dim, 2, 0.05, rng),
           "enroll_query": _people(3, 4, dim, 4, 0.05, rng), "strangers": _people(5, 20, dim, 4, 0.05, rng),
           "synthetic": _people(10, 30, dim, 1, 0.05, rng)}
    save_embeddings(emb, tmp_path / "e.npz")
    back = load_embeddings(tmp_path / "e.npz")
    assert set(back) == set(emb) and np.array_equal(back["enroll"][1], emb["enroll"][1])
    figs = gallery_figures(back, shots=(1, 2), far=0.05)
    for k in ("k1", "k2"):
        f = figs[k]
        assert f["trained_accuracy"] == 1.0 and f["enrolled_accuracy"] == 1.0
        # strangers score like the leave-one-out impostors, so about far of them pass; every known face passes
        assert f["far"] <= 0.1 and f["dir"] == 1.0 and f["dir_oracle"] == 1.0 and f["threshold"] < 0.9
        assert f["n"]["people"] == 7 and f["n"]["strangers"] == 20
        assert set(f["sources"]) == {"synthetic", "enrolled"}
    assert figs["k1"]["n"]["gallery_photos"] == 7 and figs["k2"]["n"]["gallery_photos"] == 14


def test_enrolled_people_are_labelled_after_the_trained_ones():
    """An enrolled-only query named as a trained person is wrong even when the label numbers coincide."""
    dim = 8
    eye = np.eye(dim, dtype=np.float32)
    emb = {"train": (eye[[0, 1]], np.array([0, 1])), "val": (eye[[0, 1]], np.array([0, 1])),
           "test": (eye[[0, 1]], np.array([0, 1])),
           "enroll": (eye[[2, 3]], np.array([0, 1])),
           # person 0 of the enrolled is queried with a face that looks like trained person 0
           "enroll_query": (eye[[0, 3]], np.array([0, 1])), "strangers": (eye[[6, 7]], np.array([0, 1]))}
    f = gallery_figures(emb, shots=(1,), far=0.5, calibration="enrolled")["k1"]
    assert f["enrolled_accuracy"] == 0.5 and f["trained_accuracy"] == 1.0


def test_first_k_keeps_order():
    assert first_k(np.array([1, 0, 1, 1, 0, 2]), 2).tolist() == [0, 1, 2, 4, 5]


def test_render_synthetic_size_and_grey():
    faces = np.zeros((2, 64, 64, 3), np.uint8)
    faces[..., 0] = 255  # pure red
    x = render_synthetic(faces, 112, grey=True)
    assert x.shape == (2, 3, 112, 112) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0], x[:, 1]) and int(x[0, 0, 50, 50]) == round(0.299 * 255)
    assert int(render_synthetic(faces, 64, grey=False)[0, 0, 0, 0]) == 255


@pytest.mark.parametrize("k", [1, 2])
def test_more_shots_never_lose_people(k):
    rng = np.random.default_rng(1)
    emb = {"train": _people(3, 0, 16, 2, 0.3, rng), "val": _people(3, 0, 16, 1, 0.3, rng),
           "test": _people(3, 0, 16, 2, 0.3, rng), "enroll": _people(2, 3, 16, 2, 0.3, rng),
           "enroll_query": _people(2, 3, 16, 2, 0.3, rng), "strangers": _people(2, 8, 16, 2, 0.3, rng)}
    f = gallery_figures(emb, shots=(k,), far=0.1)[f"k{k}"]
    assert f["n"]["people"] == 5 and f["template"] in ("mean", "all")
    assert 0.0 <= f["dir"] <= f["trained_accuracy"] + f["enrolled_accuracy"]


def test_teacher_agreement_is_one_for_the_teacher_and_low_for_noise():
    from facekd.gallery_eval import teacher_agreement

    rng = np.random.default_rng(0)
    parts = ("train", "val", "test", "enroll", "enroll_query")
    teacher = {p: (rng.normal(size=(30, 8)).astype(np.float32), np.zeros(30, np.int64)) for p in parts}
    same = teacher_agreement(teacher, teacher)
    assert same["r2_unseen"] == pytest.approx(1.0, abs=1e-3) and same["similarity_corr"] == pytest.approx(1.0)
    noise = {p: (rng.normal(size=(30, 8)).astype(np.float32), y) for p, (_, y) in teacher.items()}
    other = teacher_agreement(noise, teacher)
    assert other["r2_unseen"] < 0.1 and abs(other["similarity_corr"]) < 0.3
