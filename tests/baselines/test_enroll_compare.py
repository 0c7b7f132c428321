"""The comparison on the enroll protocol (``data=orl_enroll``) at smoke size: every row's embedding judged with a
gallery (trained, enrolled-only people and strangers), the gallery table, and the rows' embedders for enroll."""
import json

import pytest

from facekd.baselines.compare import compare_baselines
from facekd.embedder import load_embedder
from facekd.errors import ConfigError
from facekd.gallery_eval import load_embeddings


@pytest.fixture(scope="module")
def compared(tmp_path_factory, compose_smoke):
    tmp = tmp_path_factory.mktemp("enroll_compare")
    rows = compare_baselines(compose_smoke(tmp, "data=orl_enroll", "methods=[pixels,teacher_probe,scratch,distill_bce_probe]"))
    return tmp, {r["method"]: r for r in rows}


def test_every_row_has_gallery_figures_for_k1_and_k2(compared):
    tmp, rows = compared
    for name, row in rows.items():
        assert set(row["gallery"]) == {"k1", "k2"}, name
        for g in row["gallery"].values():
            for key in ("trained_accuracy", "enrolled_accuracy", "dir", "far", "dir_oracle"):
                assert 0.0 <= g[f"{key}_mean"] <= 1.0, (name, key)
    # the teacher as it is names enrolled-only people it never saw as well as trained ones
    teacher = rows["teacher_probe"]["gallery"]["k1"]
    assert teacher["enrolled_accuracy_mean"] >= 0.9 and teacher["trained_accuracy_mean"] >= 0.9
    assert "as it is" in teacher["embedding"] and "penultimate" in rows["scratch"]["gallery"]["k1"]["embedding"]
    md = (tmp / "compare_baselines" / "comparison.md").read_text()
    assert "### Gallery: enroll, identify, reject" in md and "10 enrolled-only people" in md
    assert "100 photos of 10 strangers" in md and md.index("Gallery") < md.index("Closed-set classifier heads")
    assert (tmp / "compare_baselines" / "gallery.png").stat().st_size > 1000


def test_rows_keep_their_embeddings_and_ship_an_embedder(compared):
    tmp, _ = compared
    results = json.loads((tmp / "compare_baselines" / "results.json").read_text())["results"]
    teacher_probe = results["teacher_probe"][0]
    emb = load_embeddings(f"{teacher_probe['run_dir']}/gallery_embeddings.npz")
    assert len(emb["strangers"][0]) == 100 and len(emb["enroll"][0]) == 20 and len(emb["synthetic"][0]) == 16
    embedder = load_embedder(teacher_probe["run_dir"])
    assert embedder.dim == 128
    # the distilled row's finetune run ships the student's embedder
    assert load_embedder(results["distill_bce_probe"][0]["extra"]["finetune_run"]).dim > 0


def test_bad_gallery_settings_are_refused_naming_the_key(tmp_path, compose_smoke):
    with pytest.raises(ConfigError, match="gallery.shots"):
        compare_baselines(compose_smoke(tmp_path, "data=orl_enroll", "methods=[pixels]", "gallery.shots=[3]"))
    with pytest.raises(ConfigError, match="gallery.calibration"):
        compare_baselines(compose_smoke(tmp_path, "data=orl_enroll", "methods=[pixels]", "gallery.calibration=oracle"))
