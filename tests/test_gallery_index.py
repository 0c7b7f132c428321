"""The gallery's nearest-face indexes: exact search by hand, HNSW recall, and the choice between them."""
import sys

import numpy as np
import pytest

from facekd.errors import ConfigError
from facekd.gallery_index import AnnIndex, ExactIndex, build_index


def _separated(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """``n`` random unit vectors: in 32 dimensions their cosines stay far below 1 (well separated)."""
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_by_hand():
    index = ExactIndex()
    index.add(np.array([[1, 0], [0, 1]], np.float32))
    index.add(np.array([[-1, 0]], np.float32))
    assert len(index) == 3
    ids, scores = index.search(np.array([[3, 4], [-1, 0.1]], np.float32), k=2)  # (3, 4) -> (0.6, 0.8)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(ids, [[1, 0], [2, 1]])
    np.testing.assert_allclose(scores, [[0.8, 0.6], [1 / np.sqrt(1.01), 0.1 / np.sqrt(1.01)]], rtol=1e-6)
    ids, scores = index.search(np.array([[0, -2]], np.float32), k=1)  # nearest to (0, -1): a tie of 0 and 2
    assert ids.shape == (1, 1) and ids[0, 0] in (0, 2) and scores[0, 0] == pytest.approx(0.0, abs=1e-7)


def test_exact_search_pads_past_the_rows():
    index = ExactIndex()
    index.add(np.array([[1, 0]], np.float32))
    ids, scores = index.search(np.array([1, 1], np.float32), k=3)
    np.testing.assert_array_equal(ids, [[0, -1, -1]])
    assert scores[0, 0] == pytest.approx(np.sqrt(0.5)) and np.isneginf(scores[0, 1:]).all()
    with pytest.raises(ValueError, match="dimensions"):
        index.search(np.zeros((1, 3), np.float32))


def test_ann_finds_the_nearest_of_separated_vectors():
    gallery = _separated(2000)
    index = AnnIndex()
    index.add(gallery)
    noise = np.random.default_rng(1).standard_normal(gallery.shape).astype(np.float32) * 0.02
    queries = gallery + noise
    ids, scores = index.search(queries, k=5)
    assert len(index) == 2000 and ids.shape == (2000, 5) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids[:, 0], np.arange(2000))  # recall@1 == 1
    exact = ExactIndex(32)
    exact.add(gallery)
    _, exact_scores = exact.search(queries, k=1)
    np.testing.assert_allclose(scores[:, 0], exact_scores[:, 0], atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_build_index_picks_by_size():
    small, large = _separated(50), _separated(51)
    assert build_index(small, exact_max=50).kind == "exact"
    ann = build_index(large, exact_max=50)
    assert ann.kind == "ann" and len(ann) == 51
    assert build_index(large, exact_max=50, kind="exact").kind == "exact"
    assert build_index(small, exact_max=50, kind="ann", ef_search=16).kind == "ann"


def test_bad_kind_and_parameters_are_refused():
    with pytest.raises(ConfigError, match="kind must be one of 'auto', 'exact', 'ann', got 'hnsw'"):
        build_index(_separated(10), kind="hnsw")
    with pytest.raises(ConfigError, match="exact_max"):
        build_index(_separated(10), exact_max=-1)
    with pytest.raises(ConfigError, match="ef_search"):
        AnnIndex(ef_search=0)


def test_missing_ann_library_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    with pytest.raises(ConfigError, match="pip install 'faiss-cpu"):
        build_index(_separated(10), kind="ann")
    assert build_index(_separated(10), kind="auto").kind == "exact"  # small galleries never need it
