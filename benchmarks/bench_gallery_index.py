"""Gallery search at scale: exact numpy search against the faiss HNSW index, on synthetic face embeddings.

    python benchmarks/bench_gallery_index.py [--sizes 10000 100000 1000000] [--threads 1] [--ef-search 64 128]

The gallery: ``--photos-per-person`` unit embeddings (D = ``--dim``) per person, each its person's random
centre plus gaussian noise (``--noise`` 1.0: cosine ~0.7 to the centre, ~0.5 between two photos of one
person, ~0 between people), seeded. Queries: ``--queries`` new photos of enrolled people ("enrolled") and
as many photos of people who are not in the gallery ("strangers").
Per size, for :class:`facekd.gallery_index.ExactIndex` and for :class:`facekd.gallery_index.AnnIndex` at each
``--ef-search`` (one build per size): build seconds; batch 1 (``--single`` queries one call each, the mean
latency in ms and queries/s); batched (every query in calls of ``--batch``, queries/s); recall@1 against exact
search (the same top-1 row, or one of equal score) for enrolled queries and for strangers; and the ANN's speed
as a multiple of exact search's, measured in the same run. ``--threads`` (default: the libraries' own)
limits BLAS and OpenMP threads for both.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import faiss  # noqa: E402,F401  (loaded now, so that --threads reaches its OpenMP and BLAS too)
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

from facekd.gallery_index import (DEFAULT_EF_CONSTRUCTION, DEFAULT_EF_SEARCH, DEFAULT_M, AnnIndex,  # noqa: E402
                                  ExactIndex)

_CHUNK = 100_000  # rows generated at a time (bounds the float32 noise buffer)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def photos(centres: np.ndarray, n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit embeddings, each a random one of ``centres`` plus noise of norm ~``noise``."""
    out = np.empty((n, centres.shape[1]), np.float32)
    for i in range(0, n, _CHUNK):
        m = min(_CHUNK, n - i)
        eps = rng.standard_normal((m, centres.shape[1]), dtype=np.float32) * (noise / np.sqrt(centres.shape[1]))
        out[i:i + m] = _unit(centres[rng.integers(0, len(centres), m)] + eps)
    return out


def make_data(n: int, args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gallery (n x D), enrolled queries and stranger queries (``args.queries`` each)."""
    rng = np.random.default_rng(args.seed)
    people = _unit(rng.standard_normal((max(1, n // args.photos_per_person), args.dim), dtype=np.float32))
    strangers = _unit(rng.standard_normal((args.queries, args.dim), dtype=np.float32))
    return (photos(people, n, args.noise, rng), photos(people, args.queries, args.noise, rng),
            photos(strangers, args.queries, args.noise, rng))


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def speeds(index, queries: np.ndarray, args) -> tuple[float, float]:
    """Mean batch-1 latency (s) over ``args.single`` queries, and batched queries/s over all of them."""
    index.search(queries[:1])  # warm up
    single = timed(lambda: [index.search(queries[i:i + 1]) for i in range(args.single)]) / args.single
    batched = len(queries) / timed(lambda: [index.search(queries[i:i + args.batch])
                                            for i in range(0, len(queries), args.batch)])
    return single, batched


def recall_at_1(index, queries: np.ndarray, truth: tuple[np.ndarray, np.ndarray]) -> float:
    """Share of ``queries`` whose top-1 row is exact search's, or scores as high (a tie)."""
    ids, scores = index.search(queries, 1)
    return float(np.mean((ids[:, 0] == truth[0][:, 0]) | (scores[:, 0] >= truth[1][:, 0] - 1e-5)))


def measure(n: int, args) -> list[dict]:
    """One row for exact search, then one per ``--ef-search``, at gallery size ``n``."""
    gallery, enrolled, strangers = make_data(n, args)
    queries = np.concatenate([enrolled, strangers])
    exact = ExactIndex()
    build = timed(lambda: exact.add(gallery))
    truth = [exact.search(q, 1) for q in (enrolled, strangers)]
    rows = [dict(n=n, index="exact", build=build, speed=speeds(exact, queries, args), recall=(1.0, 1.0))]
    ann = AnnIndex(m=args.m, ef_construction=args.ef_construction)
    build = timed(lambda: ann.add(gallery))
    for ef in args.ef_search:
        ann.ef_search = ef
        rows.append(dict(n=n, index=f"hnsw M={args.m} efC={args.ef_construction} ef={ef}", build=build,
                         speed=speeds(ann, queries, args),
                         recall=tuple(recall_at_1(ann, q, t) for q, t in zip((enrolled, strangers), truth))))
    return rows


def print_rows(rows: list[dict]) -> None:
    """``rows`` of one size (exact search first) as table lines, with speeds as multiples of exact search's."""
    exact_single, exact_batched = rows[0]["speed"]
    for row in rows:
        single, batched = row["speed"]
        print(f"| {row['n']:,} | {row['index']} | {row['build']:.2f} | {1000 * single:.3f} | {1 / single:,.0f} | "
              f"{batched:,.0f} | {row['recall'][0]:.3f} | {row['recall'][1]:.3f} | "
              f"{exact_single / single:.2f} | {batched / exact_batched:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--photos-per-person", type=int, default=10)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--queries", type=int, default=1000, help="enrolled queries, and as many strangers")
    ap.add_argument("--single", type=int, default=300, help="queries timed one call each")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--m", type=int, default=DEFAULT_M)
    ap.add_argument("--ef-construction", type=int, default=DEFAULT_EF_CONSTRUCTION)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[DEFAULT_EF_SEARCH])
    ap.add_argument("--threads", type=int, default=None, help="BLAS and OpenMP threads (default: the libraries')")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with threadpool_limits(limits=args.threads):
        threads = ", ".join(sorted({f"{i['internal_api']} {i['num_threads']}" for i in threadpool_info()}))
        print(f"D={args.dim}, {args.photos_per_person} photos per person, noise {args.noise}, "
              f"{args.queries} enrolled + {args.queries} stranger queries, batch-1 over {args.single}, "
              f"batched by {args.batch}; threads: {threads}")
        print("| N | index | build s | batch-1 ms | batch-1 q/s | batched q/s | recall@1 enrolled "
              "| recall@1 strangers | batch-1 x exact | batched x exact |")
        print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
        for n in args.sizes:
            print_rows(measure(n, args))


if __name__ == "__main__":
    main()
