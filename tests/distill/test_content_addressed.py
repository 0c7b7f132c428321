"""Caches are keyed on the bytes they read; damaged shards, caches and students are refused or rebuilt."""
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from facekd.data.synthetic import SyntheticFaces
from facekd.distill import load_student
from facekd.distill.cache import FeatureCache, build_feature_cache
from facekd.distill.sources import folder_source, open_generate_run, synthetic_sources
from facekd.errors import ArtifactError
from facekd.hashing import content_hash
from facekd.runs import read_json, write_json
from tests.distill.conftest import compose
from tests.distill.test_views_cache import Counting


def _photos(folder, seed):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / name)


def test_photos_replaced_under_the_same_names_rebuild_the_cache(sface, tmp_path):
    photos, root = tmp_path / "photos", tmp_path / "cache"
    _photos(photos, 0)
    cfg = {"root": str(photos), "views": 1, "image_size": 32}
    first = Counting(sface)
    cache = build_feature_cache(folder_source(cfg, {}, 0), first, sface.signature, root, 32, "cpu")
    assert first.seen == 3
    again = Counting(sface)
    same = build_feature_cache(folder_source(cfg, {}, 0), again, sface.signature, root, 32, "cpu")
    assert same.folder == cache.folder
    assert again.seen == 0

    old = np.array(cache.features)
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(photos / "b.png")  # same name, other pixels
    rebuilt = Counting(sface)
    fresh = build_feature_cache(folder_source(cfg, {}, 0), rebuilt, sface.signature, root, 32, "cpu")
    assert rebuilt.seen == 3 and fresh.folder != cache.folder
    assert np.array_equal(fresh.features[[0, 2]], old[[0, 2]]) and not np.array_equal(fresh.features[1], old[1])


def _copy_run(gen_run, root):
    run = root / "generate" / gen_run.name
    shutil.copytree(gen_run, run)
    return run


def test_swapped_shards_are_refused_then_repaired_by_the_generate_stage(gen_run, make_cfg, tmp_path):
    from facekd.distill.stage import distill
    from facekd.generators import generate

    run = _copy_run(gen_run, tmp_path)
    a, b = run / "shards" / "faces_00000.npy", run / "shards" / "faces_00001.npy"
    good = SyntheticFaces(run).batch(range(64))
    a.rename(tmp_path / "swap.npy")
    b.rename(a)
    (tmp_path / "swap.npy").rename(b)
    SyntheticFaces(run)  # same shapes: the layout check alone accepts the swap

    m = read_json(run / "manifest.json")
    expected = (f"{a} is damaged: its sha256 is {content_hash(a)[:16]}..., but {run / 'manifest.json'} recorded "
                f"{m['artifacts']['shards/faces_00000.npy']['sha256'][:16]}... when it was written (its bytes changed "
                f"since). It was written by the generate stage; to write it again, rerun it: `python "
                f"scripts/generate.py paths.root={tmp_path} generate.name={run.name}` with the overrides it was made "
                f"with (it remakes damaged shards in place).")
    with pytest.raises(ArtifactError) as e:
        open_generate_run(run)
    assert str(e.value) == expected
    with pytest.raises(ArtifactError, match="faces_00000.npy is damaged"):
        distill(make_cfg(tmp_path / "d", f"distill.generate_run={run}"))

    generate(compose("generate", ["profile=smoke", f"paths.root={tmp_path}"]))  # the command the message gives
    faces = open_generate_run(run)
    assert np.array_equal(faces.batch(range(64)), good)
    assert read_json(run / "manifest.json")["artifacts"] == m["artifacts"]


def test_another_runs_shards_give_another_cache_key(gen_run, tmp_path):
    """A run whose shards were replaced consistently (manifest included) is read as the new bytes it holds."""
    run = _copy_run(gen_run, tmp_path)
    cfg = {"holdout": 8, "num_images": 16, "views": 1}
    before, _ = synthetic_sources(open_generate_run(run), cfg, {}, 0)
    assert before.fingerprint == synthetic_sources(open_generate_run(gen_run), cfg, {}, 0)[0].fingerprint
    shard = run / "shards" / "faces_00000.npy"
    arr = np.load(shard)
    np.save(shard, arr[::-1].copy())
    m = read_json(run / "manifest.json")
    m["artifacts"]["shards/faces_00000.npy"] = {"sha256": content_hash(shard), "bytes": shard.stat().st_size}
    write_json(run / "manifest.json", m)
    after, _ = synthetic_sources(open_generate_run(run), cfg, {}, 0)
    assert after.fingerprint != before.fingerprint


def test_a_run_without_checksums_is_refused_and_a_rerun_records_them(gen_run, tmp_path):
    from facekd.generators import generate

    run = _copy_run(gen_run, tmp_path)
    m = read_json(run / "manifest.json")
    recorded = m.pop("artifacts")
    write_json(run / "manifest.json", m)
    with pytest.raises(ArtifactError, match="records no checksums, so .* cannot be checked before use"):
        open_generate_run(run)
    generate(compose("generate", ["profile=smoke", f"paths.root={tmp_path}"]))
    assert read_json(run / "manifest.json")["artifacts"] == recorded


def test_a_damaged_feature_cache_is_refused_and_rebuilt(gen_run, sface, tmp_path, caplog):
    faces = SyntheticFaces(gen_run)
    src, _ = synthetic_sources(faces, {"holdout": 8, "num_images": 4, "views": 1}, {}, 0)
    cache = build_feature_cache(src, sface, sface.signature, tmp_path, 32, "cpu")
    features = cache.folder / "features.npy"
    good = features.read_bytes()
    del cache
    with open(features, "r+b") as f:
        f.seek(len(good) - 8)
        f.write(b"\x00" * 8)
    with pytest.raises(ArtifactError, match=r"features\.npy is damaged: its sha256 .* rerun the distill stage, which "
                                            r"rebuilds a damaged cache"):
        FeatureCache(features.parent)
    teacher = Counting(sface)
    with caplog.at_level(logging.WARNING, logger="facekd.distill.cache"):
        rebuilt = build_feature_cache(src, teacher, sface.signature, tmp_path, 32, "cpu")
    assert teacher.seen == 4 and rebuilt.folder == features.parent and features.read_bytes() == good
    assert "Rebuilding the cache" in caplog.text


@pytest.fixture
def run_copy(base_run, tmp_path):
    run = tmp_path / "distill" / base_run.name
    shutil.copytree(base_run, run)
    return run


def _tail(run):
    return (f"It was written by the distill stage; to write it again, rerun it: `python scripts/distill.py "
            f"paths.root={run.parent.parent} distill.name={run.name} teacher=sface student=resnet18 loss=bce seed=0` "
            f"with any other overrides it was first run with.")


def _distill_message(run, detail):
    return f"{run / 'student.safetensors'} is damaged: {detail}. {_tail(run)}"


def test_the_distill_stage_records_its_files_and_load_student_refuses_damaged_ones(run_copy):
    run, path = run_copy, run_copy / "student.safetensors"
    m = read_json(run / "manifest.json")
    assert m["artifacts"]["student.safetensors"]["sha256"] == content_hash(path)
    assert set(m["source_fingerprints"]) == {"synthetic", "labeled-train"}
    assert load_student(run).out_dim == 128
    good = path.read_bytes()
    recorded = m["artifacts"]["student.safetensors"]["sha256"]

    with open(path, "r+b") as f:  # bytes flipped inside the weights: loads fine, but is not the student
        f.seek(len(good) // 2)
        f.write(bytes(b ^ 0xFF for b in good[len(good) // 2:len(good) // 2 + 64]))
    with pytest.raises(ArtifactError) as e:
        load_student(run)
    assert str(e.value) == _distill_message(run, f"its sha256 is {content_hash(path)[:16]}..., but "
                                                 f"{run / 'manifest.json'} recorded {recorded[:16]}... when it was "
                                                 f"written (its bytes changed since)")

    for data, what in ((good[:4096], "it holds 4,096 bytes"), (b"", "it is empty (0 bytes)")):
        path.write_bytes(data)
        with pytest.raises(ArtifactError) as e:
            load_student(run)
        assert str(e.value) == _distill_message(run, f"{what}, but {run / 'manifest.json'} recorded {len(good):,} "
                                                     f"bytes when it was written (truncated or overwritten)")

    # a run that records no checksums: refused, even with an intact file
    path.write_bytes(good)
    write_json(run / "manifest.json", {k: v for k, v in m.items() if k != "artifacts"})
    with pytest.raises(ArtifactError, match="records no checksums"):
        load_student(run)
