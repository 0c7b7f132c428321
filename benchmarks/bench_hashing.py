"""The cost of keying inputs on their bytes: sha256 of the embedded ORL photos, cold and warm.

    python benchmarks/bench_hashing.py [--repeats 3]

The ceiling, measured in the same run, is reading the same files' bytes without hashing (the least any
content check can cost). Printed per case: the median wall time over ``--repeats`` and its ratio to that
ceiling.
* no memo: every file hashed (``memo=False``);
* cold memo: every file hashed and its hash remembered (a first run);
* warm memo: hashes reused while size and timestamps are unchanged (every later run).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from facekd.data.faces import load_orl  # noqa: E402
from facekd.hashing import content_hashes  # noqa: E402


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    faces = load_orl()
    files = [Path(faces.root) / p for p in faces.paths]
    mb = sum(f.stat().st_size for f in files) / 1e6
    read = statistics.median(_timed(lambda: [f.read_bytes() for f in files]) for _ in range(args.repeats))
    rows = {"read bytes only (ceiling)": read,
            "no memo": statistics.median(_timed(lambda: content_hashes(files, memo=False)) for _ in range(args.repeats))}
    cold, warm = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as memo:
            cold.append(_timed(lambda: content_hashes(files, memo=memo)))
            warm.append(_timed(lambda: content_hashes(files, memo=memo)))
    rows["cold memo (first run)"], rows["warm memo (later runs)"] = statistics.median(cold), statistics.median(warm)
    print(f"ORL: {len(files)} photos, {mb:.2f} MB; median of {args.repeats}")
    print("| case | ms | x ceiling |\n|---|---|---|")
    for name, t in rows.items():
        print(f"| {name} | {1000 * t:.1f} | {t / read:.2f} |")


if __name__ == "__main__":
    main()
