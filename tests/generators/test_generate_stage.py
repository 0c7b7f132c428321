"""The generate stage end to end on the embedded DCGAN: layout, reproducibility, resume, refusals."""
import numpy as np
import pytest
import torch

from facekd.data import synthetic
from facekd.data.synthetic import SyntheticFaces, shard_paths
from facekd.generators import GeneratorError, build_generator, generate
from facekd.runs import RunError, read_json


@pytest.fixture(scope="module")
def reference():
    """Faces 0..63 sampled directly from the generator, with no stage in between."""
    return build_generator({"name": "dcgan"}, device="cpu").sample(range(64)).numpy()


def _all(run_dir) -> np.ndarray:
    faces = SyntheticFaces(run_dir)
    return faces.batch(range(len(faces)))


def test_run_folder_layout_and_read_back(make_cfg, reference, tmp_path):
    run = generate(make_cfg())
    assert run == tmp_path / "runs" / "generate" / "dcgan"
    faces = SyntheticFaces(run)
    assert len(faces) == 64 and faces.image_size == 64
    assert np.array_equal(faces.batch(range(64)), reference)
    assert np.array_equal(faces[40], reference[40])
    m = faces.manifest
    assert m["complete"] and m["num_shards"] == 2 and m["shard_size"] == 32
    assert m["config"]["generator"]["weights_sha256"] == \
        "0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f"
    assert m["seeds"]["first"] == 0 and m["seeds"]["last"] == 63 and m["seeds"]["contiguous"]
    assert np.array_equal(faces.seeds, np.arange(64))
    assert {"torch", "numpy", "facekd"} <= set(m["versions"])
    assert [s["first_candidate"] for s in m["shards"]] == [0, 32]
    from PIL import Image

    with Image.open(run / "preview.png") as im:
        assert im.size == (8 * 66 + 2, 8 * 66 + 2)
    faces.verify()


def test_same_bytes_whatever_the_batch_size_or_start(make_cfg, reference):
    a = _all(generate(make_cfg("generate.batch_size=7", "generate.name=b7")))
    assert np.array_equal(a, reference)
    run = generate(make_cfg("generate.first_seed=10", "generate.num_images=20", "generate.shard_size=8",
                            "generate.name=offset"))
    assert np.array_equal(_all(run), reference[10:30])
    assert np.array_equal(SyntheticFaces(run).seeds, np.arange(10, 30))


def test_interrupt_then_resume_equals_uninterrupted(make_cfg, reference, monkeypatch):
    real_write, calls = synthetic.write_shard, []

    def crash_after_first(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt("simulated interrupt while writing shard 1")
        calls.append(args[1])
        return real_write(*args, **kwargs)

    monkeypatch.setattr(synthetic, "write_shard", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        generate(make_cfg("generate.batch_size=16"))
    monkeypatch.setattr(synthetic, "write_shard", real_write)
    run = make_cfg().paths.root + "/generate/dcgan"
    assert read_json(f"{run}/manifest.json")["complete"] is False
    with pytest.raises(RunError, match="incomplete"):
        SyntheticFaces(run)
    assert shard_paths(run, 0)[0].exists() and not shard_paths(run, 1)[0].exists()

    generate(make_cfg("generate.batch_size=32"))  # resume with another batch size
    m = read_json(f"{run}/manifest.json")
    assert m["complete"] and m["made_now"] == 32  # only the missing shard was made
    assert np.array_equal(_all(run), reference)


def test_half_written_or_deleted_shard_is_remade(make_cfg, reference):
    run = generate(make_cfg())
    shard_paths(run, 0)[1].unlink()  # shard 0's array is there but its record is not: unfinished
    shard_paths(run, 1)[0].unlink()  # shard 1 deleted
    with pytest.raises(RunError, match="shard 0"):
        SyntheticFaces(run)
    generate(make_cfg())
    assert read_json(run / "manifest.json")["made_now"] == 64
    assert np.array_equal(_all(run), reference)
    generate(make_cfg())  # complete: nothing to do
    assert read_json(run / "manifest.json")["made_now"] == 64


def test_other_config_is_refused_unless_overwrite(make_cfg, reference):
    run = generate(make_cfg())
    before = shard_paths(run, 0)[0].read_bytes()
    with pytest.raises(RunError, match="another configuration.*image_size 64 -> 32.*overwrite=true"):
        generate(make_cfg("generate.image_size=32"))
    assert shard_paths(run, 0)[0].read_bytes() == before and SyntheticFaces(run).image_size == 64
    generate(make_cfg("generate.image_size=32", "generate.overwrite=true"))
    faces = SyntheticFaces(run)
    assert faces.image_size == 32 and faces[0].shape == (32, 32, 3)
    expect = torch.nn.functional.interpolate(torch.from_numpy(reference[:1]).permute(0, 3, 1, 2).float() / 255,
                                             size=32, mode="bilinear", antialias=True)
    assert np.abs(faces[0].astype(int) - (expect[0].permute(1, 2, 0) * 255).round().numpy()).max() <= 1


def test_folder_with_foreign_files_is_refused(make_cfg, tmp_path):
    folder = tmp_path / "runs" / "generate" / "dcgan"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    for extra in ([], ["generate.overwrite=true"]):
        with pytest.raises(RunError, match="other files"):
            generate(make_cfg(*extra))
    assert (folder / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("overrides, message", [
    (["generator.name=nope"], "unknown generator 'nope'; known generators: dcgan, diffusers"),
    (["generate.num_images=0"], "num_images must be a positive integer"),
    (["generate.num_images=-5"], "num_images must be a positive integer"),
    (["generate.shard_size=0"], "shard_size must be a positive integer"),
    (["generator=diffusers", "generator.path=/no/such/pipeline"], "does not exist"),
    (["generator=diffusers"], "needs a local pipeline folder"),
    (["generate.filter.enabled=true", "generate.filter.threshold=1.5"], "threshold must be in"),
    (["generator.precision=fp16"], "unknown precision 'fp16'"),
])
def test_bad_input_is_refused_and_nothing_is_lost(make_cfg, overrides, message):
    run = generate(make_cfg("generate.num_images=8", "generate.shard_size=4"))
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(GeneratorError, match=message):
        generate(make_cfg("generate.num_images=8", "generate.shard_size=4", *overrides))
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_folder_that_is_not_a_pipeline_is_refused(make_cfg, tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(GeneratorError, match="not a diffusers pipeline folder"):
        generate(make_cfg("generator=diffusers", f"generator.path={tmp_path / 'weights'}"))
    assert not (tmp_path / "runs" / "generate").exists()


def test_face_filter_rejects_and_refills(make_cfg):
    over = ["generate.filter.enabled=true", "generate.filter.threshold=0.99", "generate.num_images=16",
            "generate.shard_size=8"]
    faces = SyntheticFaces(generate(make_cfg(*over, "generate.batch_size=8", "generate.name=f8")))
    m = faces.manifest
    seeds = np.asarray(faces.seeds)
    assert len(faces) == 16 and len(seeds) == 16 and np.all(np.diff(seeds) > 0)
    assert m["filter"]["rejected"] == seeds[-1] + 1 - 16 > 0  # seeds beyond N refill the rejected ones
    assert m["filter"]["tried"] == seeds[-1] + 1 and not m["seeds"]["contiguous"]
    assert 0 < m["filter"]["rejection_rate"] < 0.5
    from facekd.generators.face_filter import FaceFilter

    assert FaceFilter(0.99)(faces.batch(range(16))).all()
    direct = build_generator({"name": "dcgan"}, device="cpu").sample(seeds).numpy()
    assert np.array_equal(faces.batch(range(16)), direct)
    other = SyntheticFaces(generate(make_cfg(*over, "generate.batch_size=5", "generate.name=f5")))
    assert np.array_equal(np.asarray(other.seeds), seeds)
    assert np.array_equal(other.batch(range(16)), faces.batch(range(16)))


def test_progress_bar_can_be_silenced_and_is_not_part_of_the_faces_identity(make_cfg, reference, capsys):
    run = generate(make_cfg("generate.progress=false"))
    assert "generate" not in capsys.readouterr().err
    assert np.array_equal(_all(run), reference)
    generate(make_cfg("generate.progress=true"))  # the same faces: reused, not refused as another config
    assert read_json(run / "manifest.json")["made_now"] == 64
