"""The synthetic face store: shard writing, finished-shard detection, memory-mapped reading."""
import pickle

import numpy as np
import pytest

from facekd.data import synthetic
from facekd.data.synthetic import SyntheticFaces, finished_shard, shard_lengths, shard_paths, write_shard
from facekd.runs import RunError, read_json, write_json, write_manifest

SIZE = 8


def _faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def _make_run(run_dir, n=10, shard=4, complete=True) -> np.ndarray:
    """A hand-made generate run of ``n`` known faces (no generator involved)."""
    faces = _faces(n)
    for i, k in enumerate(shard_lengths(n, shard)):
        write_shard(run_dir, i, faces[i * shard:i * shard + k], {"seeds": list(range(i * shard, i * shard + k))})
    np.save(run_dir / synthetic.SEEDS_FILE, np.arange(n))
    write_manifest(run_dir, "generate", {"x": 1}, complete=complete, image_size=SIZE, shard_size=shard,
                   num_images=n)
    return faces


def test_shard_lengths():
    assert shard_lengths(10, 4) == [4, 4, 2]
    assert shard_lengths(8, 4) == [4, 4]
    assert shard_lengths(3, 4) == [3]


def test_write_shard_is_finished_and_records_hash(tmp_path):
    faces = _faces(5)
    rec = write_shard(tmp_path, 0, faces, {"seeds": [0, 1, 2, 3, 4]})
    assert rec["count"] == 5 and rec["seeds"] == [0, 1, 2, 3, 4]
    assert finished_shard(tmp_path, 0, 5, SIZE)["sha256"] == synthetic.array_sha256(faces)
    assert np.array_equal(np.load(shard_paths(tmp_path, 0)[0], mmap_mode="r"), faces)
    assert finished_shard(tmp_path, 0, 6, SIZE) is None  # another count is not this shard
    assert not list(tmp_path.rglob("*.tmp"))


def test_half_written_shard_is_not_finished(tmp_path):
    npy, rec = shard_paths(tmp_path, 0)
    write_shard(tmp_path, 0, _faces(4), {"seeds": [0, 1, 2, 3]})
    rec.unlink()  # array renamed into place, record never written (crash in between)
    assert finished_shard(tmp_path, 0, 4, SIZE) is None
    write_shard(tmp_path, 0, _faces(4), {"seeds": [0, 1, 2, 3]})
    npy.write_bytes(npy.read_bytes()[:200])  # truncated array under a valid record
    assert finished_shard(tmp_path, 0, 4, SIZE) is None


def test_write_shard_rejects_wrong_dtype(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_shard(tmp_path, 0, _faces(2).astype(np.float32), {})


def test_reader_reads_back_memory_mapped(tmp_path):
    faces = _make_run(tmp_path)
    ds = SyntheticFaces(tmp_path)
    assert len(ds) == 10 and ds.image_size == SIZE and ds.manifest["complete"] is True
    assert np.array_equal(ds[0], faces[0]) and np.array_equal(ds[9], faces[9]) and np.array_equal(ds[-1], faces[9])
    assert ds[5].dtype == np.uint8 and ds[5].shape == (SIZE, SIZE, 3)
    idx = [9, 0, 5, 4, 3, 8, 5]  # across shards, out of order, repeated
    assert np.array_equal(ds.batch(idx), faces[idx])
    assert ds.batch([]).shape == (0, SIZE, SIZE, 3)
    assert isinstance(ds.shard(0), np.memmap)
    assert np.array_equal(np.stack(list(ds)), faces)
    assert np.array_equal(ds.seeds, np.arange(10))
    ds.verify()
    with pytest.raises(IndexError):
        ds[10]
    with pytest.raises(IndexError):
        ds.batch([0, 10])


def test_reader_pickles_without_the_pixels(tmp_path):
    _make_run(tmp_path, n=40)
    ds = SyntheticFaces(tmp_path)
    ds.batch(range(40))  # maps opened
    blob = pickle.dumps(ds)
    assert len(blob) < 40 * SIZE * SIZE * 3
    assert np.array_equal(pickle.loads(blob)[7], ds[7])


def test_reader_refuses_missing_incomplete_damaged(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        SyntheticFaces(tmp_path / "nope")
    _make_run(tmp_path / "half", complete=False)
    with pytest.raises(RunError, match="incomplete"):
        SyntheticFaces(tmp_path / "half")
    _make_run(tmp_path / "bad")
    shard_paths(tmp_path / "bad", 1)[0].unlink()
    with pytest.raises(RunError, match="shard 1"):
        SyntheticFaces(tmp_path / "bad")
    _make_run(tmp_path / "other")
    m = read_json(tmp_path / "other" / "manifest.json")
    write_json(tmp_path / "other" / "manifest.json", {**m, "stage": "distill"})
    with pytest.raises(RunError, match="expected a 'generate' run"):
        SyntheticFaces(tmp_path / "other")


def test_verify_detects_changed_bytes(tmp_path):
    _make_run(tmp_path)
    npy = shard_paths(tmp_path, 2)[0]
    arr = np.load(npy)
    arr[0, 0, 0, 0] ^= 1
    np.save(npy, arr)
    with pytest.raises(RunError, match="sha256"):
        SyntheticFaces(tmp_path).verify()
