"""Enroll, identify by gallery and verify, end to end on ORL photos with a finetune run's embedder.onnx."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facekd.data.faces import FaceDataError
from facekd.deploy import deploy_section
from facekd.embedder import EMBEDDER_FILE, Features, load_embedder
from facekd.enroll import enroll
from facekd.errors import ArtifactError, ConfigError
from facekd.finetune import load_finetuned
from facekd.gallery import Gallery
from facekd.identify import CSV_FILE, identify
from facekd.runs import RunError, read_json, write_json
from facekd.verify import verify
from tests.test_cli import run_script
from tests.test_finetune import compose
from tests.test_identify import rows, run  # noqa: F401  (the module's finetune run fixture)


@pytest.fixture(scope="module")
def people(orl, tmp_path_factory):
    """Three ORL people with two photos each, one blank photo among them, and an empty folder."""
    d = tmp_path_factory.mktemp("people")
    for label in range(3):
        idx = [i for i, y in enumerate(orl.labels) if y == label][:2]
        (d / orl.classes[label]).mkdir()
        for i in idx:
            shutil.copy(orl.root / orl.paths[i], d / orl.classes[label] / Path(orl.paths[i]).name)
    Image.fromarray(np.full((120, 100, 3), 255, np.uint8)).save(d / orl.classes[0] / "blank.png")
    (d / "nobody").mkdir()
    return d


def ecfg(root, *overrides):
    return compose(f"paths.root={root}", *overrides, name="enroll")


def test_the_embedder_is_exported_and_matches_torch(run, orl):  # noqa: F811
    manifest = read_json(run / "manifest.json")
    assert EMBEDDER_FILE in manifest["artifacts"] and manifest["embedder"]["parity"]["min_cosine"] > 0.9999
    emb = load_embedder(run)
    assert emb.sha256 == manifest["artifacts"][EMBEDDER_FILE]["sha256"] and emb.image_size == 64
    crops = np.stack([np.asarray(Image.fromarray(orl.image(i)).resize((64, 64))) for i in range(3)])
    got = emb.embed(crops)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    model, _ = load_finetuned(run)
    with torch.no_grad():
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
        want = torch.nn.functional.normalize(Features(model, "extract")(model.preprocess(x)), dim=1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_enroll_list_merge_remove_identify_and_verify(run, people, orl, tmp_path):  # noqa: F811
    res = enroll(ecfg(tmp_path, f"enroll.model={run}", f"enroll.people={people}"))
    path = res["gallery"]
    assert path == tmp_path / "galleries" / f"{run.name}.npz"
    assert res["people"] == [(orl.classes[i], 2) for i in range(3)]  # the blank photo and the empty folder: none
    assert [Path(p).name for p in res["no_face"][orl.classes[0]]] == ["blank.png"]
    assert res["threshold"]["method"] == "max" and "enrolled" in res["threshold"]
    assert res["seconds_per_photo"]["detect"] > 0 and res["seconds_per_photo"]["embed"] > 0
    g = Gallery.load(path, load_embedder(run).sha256)
    assert len(g.embeddings) == 6 and g.embedder["grey"] is True
    # the same people again: refused, nothing written
    with pytest.raises(ConfigError, match="already enrolled.*nothing was written"):
        enroll(ecfg(tmp_path, f"enroll.model={run}", f"enroll.people={people}"))
    merged = enroll(ecfg(tmp_path, f"enroll.model={run}", f"enroll.people={people}", "enroll.on_exists=merge"))
    assert merged["people"] == res["people"]  # the same photos are not enrolled twice
    removed = enroll(ecfg(tmp_path, f"enroll.gallery={path}", f"enroll.remove=[{orl.classes[2]}]"))
    assert [n for n, _ in removed["people"]] == orl.classes[:2]
    assert enroll(ecfg(tmp_path, f"enroll.gallery={path}", "enroll.list=true"))["people"] == removed["people"]

    query = tmp_path / "query"
    query.mkdir()
    shutil.copy(orl.root / orl.paths[5], query / "a.pgm")
    out = identify(compose(f"identify.gallery={path}", f"identify.input={query}", f"identify.out_dir={tmp_path / 'o'}",
                           name="identify"))
    got = rows(tmp_path / "o" / CSV_FILE)
    assert len(got) == 1 and got[0]["identity"] in orl.classes[:2] and out["backend"] == "gallery"
    for t, status in (("1.0", "unknown"), ("-1.0", "known")):
        identify(compose(f"identify.gallery={path}", f"identify.input={query}", f"identify.threshold={t}",
                         f"identify.out_dir={tmp_path / t}", name="identify"))
        assert rows(tmp_path / t / CSV_FILE)[0]["status"] == status

    same = orl.root / orl.paths[0]
    v = verify(compose(f"verify.gallery={path}", f"verify.photos=[{same},{same}]", name="verify"))
    assert v["score"] == pytest.approx(1.0, abs=1e-5) and v["same"] is True
    v = verify(compose(f"verify.model={run}", f"verify.photos=[{same},{orl.root / orl.paths[20]}]", name="verify"))
    assert v["same"] is None and -1 <= v["score"] <= 1


def test_no_face_refused_on_request_and_other_embedder_refused(run, people, tmp_path):  # noqa: F811
    with pytest.raises(FaceDataError, match=r"no face found in 1 photo\(s\).*blank.png.*nothing was written"):
        enroll(ecfg(tmp_path, f"enroll.model={run}", f"enroll.people={people}", "enroll.on_no_face=error"))
    assert not (tmp_path / "galleries").exists()
    other = Gallery(embedder_sha256="f" * 64, dim=128, embedder={"path": str(run)})
    other.add("x", np.ones((1, 128)), ["x.jpg"])
    other.save(tmp_path / "other.npz")
    with pytest.raises(ArtifactError, match="another embedder"):
        enroll(ecfg(tmp_path, f"enroll.model={run}", f"enroll.people={people}", f"enroll.gallery={tmp_path / 'other.npz'}"))
    empty = Gallery(embedder_sha256=load_embedder(run).sha256, dim=128, embedder={"path": str(run)})
    empty.save(tmp_path / "empty.npz")
    with pytest.raises(ConfigError, match="is empty"):
        identify(compose(f"identify.gallery={tmp_path / 'empty.npz'}", f"identify.input={people}",
                         name="identify"))
    with pytest.raises(RunError, match="holds no manifest.json, so it is not a facekd run folder"):
        load_embedder(tmp_path)
    bare = tmp_path / "bare_run"
    bare.mkdir()
    write_json(bare / "manifest.json", {"stage": "finetune", "complete": True, "artifacts": {}, "classes": ["a"],
                                        "image_size": 112, "framing": "pad",
                                        "deploy": deploy_section(backends=["torch"], data_cfg={}, writer="the finetune "
                                                                 "stage", remake="rerun it")})
    with pytest.raises(RunError, match="holds no embedder.onnx: it was made with finetune.export_onnx=false"):
        load_embedder(bare)
    write_json(bare / "manifest.json", {"stage": "finetune", "complete": True, "artifacts": {}})
    with pytest.raises(RunError, match="is a 'finetune' run, which ships no model"):
        load_embedder(bare)  # no deploy record


def test_cli_mistakes_end_in_one_paragraph(run, people, tmp_path):  # noqa: F811
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 not a gallery")
    for args in (["scripts/identify.py", f"identify.gallery={broken}", f"identify.input={people}"],
                 ["scripts/enroll.py", f"enroll.gallery={broken}", "enroll.list=true"],
                 ["scripts/verify.py", f"verify.model={run}", f"verify.photos=[{broken},{broken}]",
                  "verify.threshold=2"]):
        p = run_script(*args)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "damaged" in run_script("scripts/enroll.py", f"enroll.gallery={broken}", "enroll.list=true").stderr
