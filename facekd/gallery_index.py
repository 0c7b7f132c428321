"""Nearest-face search over a gallery's unit embeddings: exact (numpy) up to a size, HNSW (faiss) beyond it.

Both indexes share one interface: ``add(embeddings)`` appends rows (ids ``0, 1, ...`` in the order added),
``search(queries, k)`` returns ``(ids, scores)``, N x k ``int64`` and ``float32``, best first, where the score
is the cosine (rows are L2-normalised on the way in, so cosine = dot product), and ``len(index)`` counts the
rows. When fewer than ``k`` rows can be returned, the missing columns hold id ``-1`` and score ``-inf``.

* :class:`ExactIndex`: one matmul per block of queries; exact, nothing to build.
* :class:`AnnIndex`: faiss ``IndexHNSWFlat`` with the inner-product metric. Chosen over usearch by measurement
  in a one-off script on the same kind of data (same HNSW algorithm, so the same recall at the same M / ef;
  1 thread, D=128, M=32, ef_construction=128, ef_search=128): faiss built 10k rows in 1.6 s and 100k in 67 s,
  usearch in 2.2 s and 99 s; faiss answered one query in 0.19 ms (10k) and 0.71 ms (100k), usearch in
  0.34 ms and 1.34 ms.
* :func:`build_index` picks one by the number of rows.

How the defaults were measured: ``python benchmarks/bench_gallery_index.py --sizes 10000 100000 --threads 1
--ef-search 64 128 256`` (synthetic faces, D=128, 10 photos per person, each photo its person's centre plus
noise: cosine ~0.5 between two photos of one person, ~0 between people; queries: 1000 new photos of enrolled
people and 1000 photos of strangers; one thread, on a shared 2-core machine):

* ``M=32, ef_construction=128, ef_search=128`` (:data:`DEFAULT_M`...): recall@1 of enrolled people's photos
  against exact search was 1.000 at 10k and 100k rows (ef_search=64: 0.999 at 100k, leaving no room for
  larger galleries; in a one-off scan at 100k, M=16 with ef_construction=64 reached only 0.984 at
  ef_search=128), at 0.25 ms (10k) and 0.62 ms (100k) a query. Strangers reach a lower recall (0.99 at 10k,
  0.79 at 100k): no gallery row stands out near them, so HNSW may stop at a row a little less similar than
  the best (by up to ~0.1 cosine). That costs nothing in open-set identification: HNSW only ever misses
  rows, so its best score is never above the exact one, and a stranger that exact search rejects is
  rejected too.
* :data:`EXACT_MAX` = 50,000 rows: one query by exact search took 0.26 ms at 10k rows and 4.6 ms at 100k
  (and, timed alone, 0.5 ms at 20k and 1.5 ms at 50k; one thread), against HNSW's 0.25-0.62 ms: HNSW answers
  a single query faster from ~10k rows on. But up to 50k, exact search answers one query in under 2 ms,
  answers batches faster than HNSW (7,100 queries/s at 50k, 3,200 at 100k, against HNSW's 1,800 at 100k),
  is exact for strangers too, and needs no build (HNSW: 1.9 s at 10k, 54 s at 100k, on one thread).
"""
from __future__ import annotations

from types import ModuleType

import numpy as np

from facekd.errors import ConfigError

__all__ = ["KINDS", "EXACT_MAX", "DEFAULT_M", "DEFAULT_EF_CONSTRUCTION", "DEFAULT_EF_SEARCH", "ExactIndex",
           "AnnIndex", "build_index"]

KINDS = ("auto", "exact", "ann")
EXACT_MAX = 50_000
DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 128
DEFAULT_EF_SEARCH = 128
_BLOCK_BYTES = 64 << 20  # the most score-matrix memory one block of exact search may take


def _unit_rows(x: np.ndarray, dim: int | None, what: str) -> np.ndarray:
    """``x`` as C-contiguous float32 unit rows (one 1-D vector is one row); ``dim`` checked when known."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{what} must be N x D, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{what} have {x.shape[1]} dimensions, the index holds {dim}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12))


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _padded(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``ids``/``scores`` widened to ``k`` columns with id -1 and score -inf."""
    n, have = ids.shape
    if have >= k:
        return ids, scores
    out_ids = np.full((n, k), -1, np.int64)
    out_scores = np.full((n, k), -np.inf, np.float32)
    out_ids[:, :have], out_scores[:, :have] = ids, scores
    return out_ids, out_scores


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row of ``scores``, best first."""
    if k == 1:
        best = scores.argmax(axis=1)[:, None]
        return best.astype(np.int64), np.take_along_axis(scores, best, axis=1)
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64), np.take_along_axis(part_scores, order, axis=1)


class ExactIndex:
    """Exact cosine search: every query against every row, by numpy matmul."""

    kind = "exact"

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self._rows = np.zeros((0, dim or 0), np.float32)

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, embeddings: np.ndarray) -> None:
        """Append rows (normalised); their ids continue from ``len(self)``."""
        rows = _unit_rows(embeddings, self.dim, "embeddings")
        self.dim = rows.shape[1]
        self._rows = rows if not len(self._rows) else np.concatenate([self._rows, rows])

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, scores)`` of the ``k`` most similar rows to each query, best first."""
        k = _check_k(k)
        q = _unit_rows(queries, self.dim, "queries")
        n = len(self._rows)
        if n == 0:
            return _padded(np.zeros((len(q), 0), np.int64), np.zeros((len(q), 0), np.float32), k)
        block = max(1, _BLOCK_BYTES // (4 * n))
        parts = [_top_k(q[i:i + block] @ self._rows.T, min(k, n)) for i in range(0, len(q), block)]
        ids, scores = (np.concatenate(p) for p in zip(*parts))
        return _padded(ids, scores.astype(np.float32, copy=False), k)


def _faiss() -> ModuleType:
    """The faiss module, or a :class:`ConfigError` that says how to get it."""
    try:
        import faiss
    except ImportError as e:
        raise ConfigError(
            "an approximate (HNSW) gallery index needs the faiss library, which is not installed in this "
            f"Python ({e}): install it with `pip install 'faiss-cpu>=1.9'` (it is a facekd dependency, so "
            "`pip install -e .` in the facekd folder brings it), or use kind='exact', which needs nothing "
            "more and is exact, only slower on galleries of more than ~50,000 faces") from e
    return faiss


def _check_positive(value: int, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}; e.g. {key}=32")
    return int(value)


class AnnIndex:
    """Approximate cosine search: faiss HNSW (``IndexHNSWFlat``, inner product) over the normalised rows.

    ``m`` (HNSW "M": links per node, fixed once built; more = better recall, slower build, more memory),
    ``ef_construction`` (candidates kept while inserting) and ``ef_search`` (candidates kept while
    searching; may be changed at any time: higher = better recall, slower queries). faiss uses its
    OpenMP threads (``faiss.omp_set_num_threads``) to build and to answer batches.
    """

    kind = "ann"

    def __init__(self, dim: int | None = None, m: int = DEFAULT_M, ef_construction: int = DEFAULT_EF_CONSTRUCTION,
                 ef_search: int = DEFAULT_EF_SEARCH) -> None:
        self._faiss = _faiss()
        self.dim = dim
        self.m = _check_positive(m, "m")
        self.ef_construction = _check_positive(ef_construction, "ef_construction")
        self._ef_search = _check_positive(ef_search, "ef_search")
        self._index = None

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def ef_search(self) -> int:
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._ef_search = _check_positive(value, "ef_search")
        if self._index is not None:
            self._index.hnsw.efSearch = self._ef_search

    def _make(self, dim: int) -> None:
        index = self._faiss.IndexHNSWFlat(dim, self.m, self._faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self._ef_search
        self.dim, self._index = dim, index

    def add(self, embeddings: np.ndarray) -> None:
        """Insert rows (normalised) into the graph; their ids continue from ``len(self)``."""
        rows = _unit_rows(embeddings, self.dim, "embeddings")
        if self._index is None:
            self._make(rows.shape[1])
        self._index.add(rows)

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, scores)`` of (approximately) the ``k`` most similar rows to each query, best first."""
        k = _check_k(k)
        q = _unit_rows(queries, self.dim, "queries")
        if self._index is None:
            return _padded(np.zeros((len(q), 0), np.int64), np.zeros((len(q), 0), np.float32), k)
        scores, ids = self._index.search(q, k)
        ids = ids.astype(np.int64, copy=False)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32, copy=False)
        return ids, scores


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ConfigError(
            f"kind must be one of {', '.join(repr(k) for k in KINDS)}, got {kind!r}: 'exact' compares each "
            "query with every gallery face (exact, best for small galleries), 'ann' searches an HNSW graph "
            "(approximate, milliseconds on a million faces, costs a build), and 'auto' picks exact up to "
            f"exact_max faces (default {EXACT_MAX:,}) and ann above; e.g. kind='auto'")
    return kind


def build_index(embeddings: np.ndarray, exact_max: int = EXACT_MAX, kind: str = "auto", *, m: int = DEFAULT_M,
                ef_construction: int = DEFAULT_EF_CONSTRUCTION,
                ef_search: int = DEFAULT_EF_SEARCH) -> ExactIndex | AnnIndex:
    """An index holding ``embeddings`` (N x D): exact when ``kind`` is "exact", or "auto" and N <= ``exact_max``;
    HNSW otherwise (``m``, ``ef_construction``, ``ef_search``: see :class:`AnnIndex`)."""
    _check_kind(kind)
    if isinstance(exact_max, bool) or not isinstance(exact_max, (int, np.integer)) or exact_max < 0:
        raise ConfigError(f"exact_max must be a number of gallery faces >= 0, got {exact_max!r}; "
                          f"e.g. exact_max={EXACT_MAX}")
    n = np.shape(embeddings)[0] if np.ndim(embeddings) == 2 else 1
    use_exact = kind == "exact" or (kind == "auto" and n <= exact_max)
    index: ExactIndex | AnnIndex = ExactIndex() if use_exact else \
        AnnIndex(m=m, ef_construction=ef_construction, ef_search=ef_search)
    index.add(embeddings)
    return index
