"""``scripts/identify.py``: faces found in raw photos, named by a finetune run (ONNX and torch), and refusals."""
import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facekd.errors import ArtifactError, ConfigError, InputFileError
from facekd.finetune import finetune
from facekd.identify import CSV_COLUMNS, CSV_FILE, SHEET_FILE, identify
from facekd.openset import write_open_set
from facekd.runs import RunError, write_json
from tests.test_finetune import compose, write_student_run

PEOPLE = 4  # ORL identities in the tiny run


@pytest.fixture(scope="module")
def run(orl, tmp_path_factory):
    """A finished smoke finetune run on 4 ORL people (a random-init student: fast), with model.onnx."""
    tmp = tmp_path_factory.mktemp("identify")
    folder = tmp / "people"
    for label in range(PEOPLE):
        idx = [i for i, y in enumerate(orl.labels) if y == label][:6]
        (folder / orl.classes[label]).mkdir(parents=True)
        for i in idx:
            shutil.copy(orl.root / orl.paths[i], folder / orl.classes[label] / Path(orl.paths[i]).name)
    student = write_student_run(tmp / "student")
    metrics = finetune(compose(f"paths.root={tmp / 'runs'}", f"finetune.student_run={student}", "data=pins",
                               f"data.root={folder}", "data.per_class=3", "data.val=1", "data.test=2",
                               "data.image_size=64", "data.framing=pad", "finetune.plots=false",
                               "finetune.card_repeats=1"))
    return Path(metrics["run_dir"])


@pytest.fixture(scope="module")
def photos(orl, tmp_path_factory):
    """A raw photo with two ORL faces pasted on a larger canvas, a blank photo and a corrupt file."""
    d = tmp_path_factory.mktemp("photos")
    canvas = np.full((300, 420, 3), 200, np.uint8)
    canvas[40:152, 30:122] = orl.image(0)     # person 0 (top left)
    canvas[120:232, 260:352] = orl.image(15)  # person 1 (bottom right)
    Image.fromarray(canvas).save(d / "group.png")
    (d / "sub").mkdir()
    Image.fromarray(np.full((200, 160, 3), 255, np.uint8)).save(d / "sub" / "blank.jpg")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (d / "notes.txt").write_text("not an image: never listed")
    return d


def cfg(run, inputs, out, *overrides):
    inp = inputs if isinstance(inputs, str) else "[" + ",".join(map(str, inputs)) + "]"
    return compose(f"identify.model={run}", f"identify.input={inp}", f"identify.out_dir={out}", *overrides,
                   name="identify")


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_faces_rows_and_sheet_with_skip(run, photos, tmp_path):
    out = tmp_path / "out"
    res = identify(cfg(run, str(photos), out, "identify.on_corrupt=skip"))
    got = rows(out / CSV_FILE)
    assert list(got[0]) == list(CSV_COLUMNS)
    by_status = {}
    for r in got:
        by_status.setdefault(r["status"], []).append(r)
    assert [Path(r["file"]).name for r in by_status["unreadable"]] == ["broken.jpg"]
    assert [Path(r["file"]).name for r in by_status["no_face"]] == ["blank.jpg"]
    faces = by_status["known"]  # a closed-set run: nothing is rejected
    assert "unknown" not in by_status and len(faces) == 2
    assert {Path(r["file"]).name for r in faces} == {"group.png"} and [r["face"] for r in faces] == ["0", "1"]
    x0 = [float(r["x0"]) for r in faces]
    assert 20 < x0[0] < 60 and 250 < x0[1] < 290  # left to right, where the faces were pasted
    for r in faces:
        assert r["identity"] in [f"s{i}" for i in range(1, PEOPLE + 1)]
        assert 1 / PEOPLE <= float(r["score"]) <= 1 and float(r["detection_prob"]) >= 0.9
    assert res["counts"] == {"known": 2, "unknown": 0, "no_face": 1, "unreadable": 1, "photos": 3, "faces": 2}
    assert res["threshold"] is None
    with Image.open(out / SHEET_FILE) as im:
        assert im.size[0] >= 2 * 112


def test_unreadable_file_is_refused_by_default_and_nothing_is_written(run, photos, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Exception) as e:
        identify(cfg(run, str(photos), out))
    msg = str(e.value)
    assert "broken.jpg" in msg and "identify.on_corrupt=skip" in msg and "nothing was written" in msg
    assert not out.exists()


def test_onnx_and_torch_agree(run, photos, tmp_path):
    a = identify(cfg(run, [photos / "group.png"], tmp_path / "onnx"))["rows"]
    res = identify(compose(f"identify.model={run}", f"identify.input={photos / 'group.png'}", "identify.backend=torch",
                           f"paths.root={tmp_path}", name="identify"))
    assert res["csv"].parent.parent == tmp_path / "identify" and res["csv"].parent.name.startswith(run.name + "-")
    b = res["rows"]
    assert [r["identity"] for r in a] == [r["identity"] for r in b] and len(a) == 2
    assert np.allclose([float(r["score"]) for r in a], [float(r["score"]) for r in b], atol=1e-3)


def test_open_set_threshold_makes_faces_unknown(run, photos, tmp_path):
    try:
        write_open_set(run, threshold=1.01, far=0.01, n_calibration=10)
        res = identify(cfg(run, [photos / "group.png"], tmp_path / "out"))
        assert [r["status"] for r in res["rows"]] == ["unknown", "unknown"] and res["threshold"] == 1.01
        write_open_set(run, threshold=0.0, far=0.5, n_calibration=10)
        res = identify(cfg(run, [photos / "group.png"], tmp_path / "out2"))
        assert [r["status"] for r in res["rows"]] == ["known", "known"]
    finally:
        (run / "open_set.json").unlink(missing_ok=True)


def test_not_a_finetune_run_is_refused(run, photos, tmp_path):
    student = run.parent.parent.parent / "student"
    with pytest.raises(RunError, match="is a 'distill' run, which ships no model; pass a finetune run"):
        identify(cfg(student, str(photos), tmp_path / "a"))
    baseline = tmp_path / "baseline"
    write_json(baseline / "config.json", {"method": "scratch"})
    with pytest.raises(RunError, match="comparison row 'scratch', which saved no model.*pass a finetune run"):
        identify(cfg(baseline, str(photos), tmp_path / "b"))
    with pytest.raises(RunError, match="does not exist; pass a finetune run"):
        identify(cfg(tmp_path / "nowhere", str(photos), tmp_path / "c"))
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    m = (unfinished / "manifest.json").read_text().replace('"complete": true', '"complete": false')
    (unfinished / "manifest.json").write_text(m)
    with pytest.raises(RunError, match="is unfinished; rerun it: `python scripts/finetune.py"):
        identify(cfg(unfinished, str(photos), tmp_path / "d"))
    assert not any((tmp_path / x).exists() for x in "abcd")


def test_flipped_byte_in_model_onnx_is_refused(run, photos, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    data = bytearray((damaged / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.onnx is damaged: its sha256 is .* rerun it"):
        identify(cfg(damaged, [photos / "group.png"], tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_recorded_open_set_file_that_is_gone_or_changed_is_refused(run, photos, tmp_path):
    from facekd.hashing import artifact_checksums
    from facekd.runs import read_json

    rec = tmp_path / "open"
    shutil.copytree(run, rec)
    write_open_set(rec, threshold=0.5, far=0.01, n_calibration=10)
    m = read_json(rec / "manifest.json")
    m["artifacts"].update(artifact_checksums(rec, ["open_set.json"]))
    write_json(rec / "manifest.json", m)
    assert identify(cfg(rec, [photos / "group.png"], tmp_path / "ok"))["threshold"] == 0.5
    write_open_set(rec, threshold=0.0, far=0.01, n_calibration=10)  # rejection moved by hand
    with pytest.raises(ArtifactError, match=r"open_set\.json is damaged: its sha256 is"):
        identify(cfg(rec, [photos / "group.png"], tmp_path / "a"))
    (rec / "open_set.json").unlink()  # rejection silently off: refused
    with pytest.raises(ArtifactError, match=r"open_set\.json is missing, though .* records it"):
        identify(cfg(rec, [photos / "group.png"], tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_config_and_input_mistakes(run, photos, tmp_path):
    with pytest.raises(InputFileError, match="identify.input: .*missing.jpg does not exist"):
        identify(cfg(run, [photos / "missing.jpg"], tmp_path / "o"))
    with pytest.raises(ConfigError, match="identify.backend must be one of onnx, torch"):
        identify(cfg(run, str(photos), tmp_path / "o", "identify.backend=tensorrt"))
    with pytest.raises(ConfigError, match="identify.model is not set"):
        identify(compose(f"identify.input={photos}", name="identify"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputFileError, match="holds no image files"):
        identify(cfg(run, str(empty), tmp_path / "o"))


def test_help_text():
    from facekd.cli import help_text
    from facekd.commands import COMMANDS

    text = help_text("identify", COMMANDS["identify"].doc, "facekd identify")
    assert "identify.model=???" in text and "identify.backend=onnx" in text and "examples:" in text


def test_a_comparison_row_saves_a_model_identify_can_use(orl, photos, tmp_path):
    """A scores row (scratch, smoke size) saves model.onnx + manifest beside its result; identify names the faces
    with it, refuses its torch backend, and refuses it once the model's bytes change."""
    from facekd.baselines import run_method
    from facekd.runs import read_manifest
    from facekd.baselines.compare import row_config
    from tests.baselines.conftest import compose_compare

    c = compose_compare(tmp_path / "runs")
    mcfg = {**row_config(c, "scratch", smoke=True)[1], "progress": False}
    res = run_method("scratch", mcfg, c.data, c.paths.root, 0, export=True)
    row = Path(res.run_dir)
    manifest = read_manifest(row, "baseline")
    assert res.extra["model"]["file"] == "model.onnx" and "model.onnx" in manifest["artifacts"]
    assert manifest["parity"]["ok"] and len(manifest["classes"]) == 40
    out = identify(cfg(row, [photos / "group.png"], tmp_path / "out"))
    assert [r["status"] for r in out["rows"]] == ["known", "known"]
    assert all(r["identity"] in manifest["classes"] for r in out["rows"])
    with pytest.raises(ConfigError, match="ships onnx; set identify.backend=onnx"):
        identify(cfg(row, [photos / "group.png"], tmp_path / "t", "identify.backend=torch"))
    onnx = row / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-8] + b"damaged!")
    with pytest.raises(ArtifactError, match="model.onnx"):
        identify(cfg(row, [photos / "group.png"], tmp_path / "x"))
