import numpy as np
from PIL import Image

from facekd.data.align import align_folder
from facekd.data.faces import load_folder


def test_mtcnn_aligns_real_faces_and_skips_non_faces(orl, tmp_path):
    src = tmp_path / "raw"
    for i, rel in enumerate(orl.paths[:2]):
        (src / "person").mkdir(parents=True, exist_ok=True)
        Image.fromarray(orl.image(i)).resize((184, 224)).save(src / "person" / f"{i}.jpg")
    Image.fromarray(np.full((120, 120, 3), 127, np.uint8)).save(src / "person" / "wall.jpg")
    out = align_folder(src, size=64, out_dir=tmp_path / "aligned")
    faces = load_folder(out)
    assert len(faces) == 2 and faces.image(0).shape == (64, 64, 3)
    assert "person/wall.jpg" in (out / "failed.json").read_text()
    again = align_folder(src, size=64, out_dir=tmp_path / "aligned")  # cached: nothing redone
    assert again == out

    # a photo replaced under its name is aligned again; a deleted photo's crop goes
    crop = out / "person" / "0.png"
    first = crop.read_bytes()
    Image.fromarray(orl.image(5)).resize((184, 224)).save(src / "person" / "0.jpg")
    (src / "person" / "1.jpg").unlink()
    align_folder(src, size=64, out_dir=tmp_path / "aligned")
    assert crop.read_bytes() != first and not (out / "person" / "1.png").exists()
    assert len(load_folder(out)) == 1


def test_a_person_left_without_faces_is_warned_about(tmp_path, caplog):
    """An empty identity folder, or one whose photos hold no face, never reaches the aligned folder: say so."""
    src = tmp_path / "raw"
    (src / "empty").mkdir(parents=True)
    (src / "walls").mkdir()
    Image.fromarray(np.full((120, 120, 3), 127, np.uint8)).save(src / "walls" / "wall.jpg")
    with caplog.at_level("WARNING", logger="facekd.data.align"):
        out = align_folder(src, size=64, out_dir=tmp_path / "aligned")
    assert f"identity folder {src.resolve() / 'empty'} holds no images; this person is left out" in caplog.text
    assert f"identity folder {src.resolve() / 'walls'} has no photo with a confident face" in caplog.text
    assert not (out / "empty").exists() and not (out / "walls").exists()


def test_a_person_removed_then_added_back_is_aligned_again(orl, tmp_path):
    """Removing a person forgets their crops on disk at once, so adding them back later aligns them again."""
    import shutil

    src = tmp_path / "raw"
    for label in (0, 1):
        (src / f"p{label}").mkdir(parents=True)
        for i in [i for i, y in enumerate(orl.labels) if y == label][:2]:
            Image.fromarray(orl.image(i)).resize((184, 224)).save(src / f"p{label}" / f"{i}.jpg")
    out = align_folder(src, size=64, out_dir=tmp_path / "aligned")
    shutil.move(src / "p1", tmp_path / "p1")
    align_folder(src, size=64, out_dir=tmp_path / "aligned")  # nothing new to align: only forgetting
    shutil.move(tmp_path / "p1", src / "p1")
    align_folder(src, size=64, out_dir=tmp_path / "aligned")
    assert load_folder(out).classes == ["p0", "p1"] and len(load_folder(out)) == 4
