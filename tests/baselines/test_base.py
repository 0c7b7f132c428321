"""The method interface: shared evaluation on a hand-made case, caching, unknown names."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from facekd.baselines import METHODS, Predictor, evaluate_fitted, run_method
from facekd.baselines.base import MethodResult, method_hash, split_content_hash
from facekd.baselines.pixels import Pixels
from facekd.data.preprocess import Preprocess


class _Set:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def tensors(self):
        return self.x, self.y


def _points(coords):
    """1 x 1 images whose RGB values are (x, y, 0): the identity body embeds them at (x, y, 0)."""
    x = torch.tensor([[c[0], c[1], 0] for c in coords], dtype=torch.uint8).view(-1, 3, 1, 1)
    return x


def test_embedding_evaluation_hand_made():
    """Square corners: each class holds two opposite corners, so every anchor is sqrt(2) from its positive and
    1 from each negative (every triplet wrong), and both class means are the centre (ties go to class 0)."""
    y = torch.tensor([0, 0, 1, 1])
    square = _points([(0, 0), (1, 1), (1, 0), (0, 1)])
    sets = {"train": _Set(square, y), "val": _Set(square, y), "test": _Set(square, y)}
    pred = Predictor(nn.Flatten(1), Preprocess(size=1, scale=1.0), output="embedding")
    out = evaluate_fitted(pred, SimpleNamespace(num_classes=2), ("val", "test"), ncm_metric="euclidean", datasets=sets)
    assert out["extra"]["triplet_accuracy"] == 0.0
    assert out["test"]["accuracy"] == 0.5 and out["test"]["recall_macro"] == 0.5
    # two tight clusters: every triplet right, every point nearest its own class mean
    tight = _points([(0, 0), (0, 1), (9, 9), (9, 8)])
    sets = {"train": _Set(tight, y), "val": _Set(tight, y), "test": _Set(tight, y)}
    out = evaluate_fitted(pred, SimpleNamespace(num_classes=2), ("test",), ncm_metric="euclidean", datasets=sets)
    assert out["extra"]["triplet_accuracy"] == 1.0 and out["test"]["accuracy"] == 1.0
    assert out["extra"]["embedding_std"] > 0
    # cosine nearest class mean: train means point along x (class 0) and y (class 1); the test points
    # (10,1), (1,10), (5,4), (4,5) are predicted 0, 1, 0, 1 against labels 0, 1, 1, 0
    cos = evaluate_fitted(pred, SimpleNamespace(num_classes=2), ("test",), ncm_metric="cosine",
                          datasets={"train": _Set(_points([(1, 0), (9, 0), (0, 1), (0, 9)]), y),
                                    "test": _Set(_points([(10, 1), (1, 10), (5, 4), (4, 5)]), torch.tensor([0, 1, 1, 0]))})
    assert cos["test"]["accuracy"] == 0.5


def test_scores_evaluation_is_argmax():
    x = torch.tensor([[9, 0, 0], [0, 9, 0], [0, 0, 9], [9, 1, 0]], dtype=torch.uint8).view(-1, 3, 1, 1)
    y = torch.tensor([0, 1, 2, 1])
    sets = {"val": _Set(x, y), "test": _Set(x, y)}
    pred = Predictor(nn.Flatten(1), Preprocess(size=1, scale=1.0), output="scores")
    out = evaluate_fitted(pred, SimpleNamespace(num_classes=3), ("test",), datasets=sets)
    assert out["test"]["accuracy"] == 0.75
    assert out["test"]["recall_macro"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_unknown_method_lists_known(tmp_path):
    with pytest.raises(KeyError, match="known methods: .*pixels.*scratch"):
        run_method("no_such_method", {}, {}, tmp_path, 0)
    assert {"pixels", "teacher_probe", "scratch", "hinton_kd", "triplet", "maml"} <= set(METHODS.names())


def test_result_is_cached_by_config_hash(smoke_cfg, smoke_data, smoke_row, monkeypatch):
    cfg, root = smoke_row("pixels"), smoke_cfg.paths.root
    first = run_method("pixels", cfg, smoke_cfg.data, root, 0, data=smoke_data)
    assert isinstance(first, MethodResult) and 0.5 < first.accuracy <= 1.0 and first.params == 0

    def boom(*args, **kwargs):
        raise AssertionError("a cached result was recomputed")

    monkeypatch.setattr(Pixels, "fit", boom)
    again = run_method("pixels", cfg, smoke_cfg.data, root, 0, data=smoke_data)
    assert again == first
    # operational keys do not change the hash; a result-defining key does (and retrains)
    split, content = smoke_data.split.id, split_content_hash(smoke_data)
    assert method_hash("pixels", {**cfg, "device": "cuda"}, smoke_cfg.data, split, 0, None, content) == first.config_hash
    assert method_hash("pixels", {**cfg, "size": 16}, smoke_cfg.data, split, 0, None, content) != first.config_hash
    assert method_hash("pixels", cfg, smoke_cfg.data, split, 0, None, content[::-1]) != first.config_hash
    with pytest.raises(AssertionError, match="recomputed"):
        run_method("pixels", {**cfg, "size": 16}, smoke_cfg.data, root, 0, data=smoke_data)
    with pytest.raises(AssertionError, match="recomputed"):
        run_method("pixels", cfg, smoke_cfg.data, root, 0, force=True, data=smoke_data)


def test_a_photo_replaced_under_its_name_changes_the_row_key_not_the_split(tmp_path):
    """The result cache is keyed on the split's image bytes: same names, new pixels -> the row reruns."""
    import numpy as np
    from PIL import Image

    from facekd.data.labeled import prepare_labeled

    rng = np.random.default_rng(0)
    for person in ("ann", "bob", "cy"):
        (tmp_path / "faces" / person).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "faces" / person / f"{i}.png")
    data_cfg = {"name": "faces", "root": str(tmp_path / "faces"), "per_class": 1, "val": 1, "test": None,
                "too_few": "drop", "framing": "pad", "image_size": 16}
    before = prepare_labeled(data_cfg, tmp_path / "runs")
    key_before = split_content_hash(before)
    photo = tmp_path / "faces" / "bob" / "1.png"
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(photo)
    after = prepare_labeled(data_cfg, tmp_path / "runs")
    assert after.split.id == before.split.id
    assert split_content_hash(after) != key_before
    assert split_content_hash(after) == split_content_hash(prepare_labeled(data_cfg, tmp_path / "runs"))
