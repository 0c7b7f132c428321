import numpy as np
import pytest
from PIL import Image

from facekd.data.faces import FaceDataError, load_faces, load_folder, read_image


def _write_folder(root, counts, size=(20, 24)):
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_orl_has_400_images_of_40_identities(orl):
    assert len(orl) == 400 and len(orl.classes) == 40
    assert set(orl.counts().values()) == {10}
    img = orl.image(0)
    assert img.shape == (112, 92, 3) and img.dtype == np.uint8
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()  # grey expanded


def test_pins_style_folder(tmp_path):
    root = _write_folder(tmp_path / "pins", {"pins_Adriana": 3, "pins_Zac": 2})
    (root / "pins_Zac" / "notes.txt").write_text("ignored")
    faces = load_folder(root)
    assert faces.classes == ["pins_Adriana", "pins_Zac"] and faces.labels == [0, 0, 0, 1, 1]
    assert faces.image(4).shape == (20, 24, 3)


def test_corrupt_image_is_named_then_error_or_skip(tmp_path):
    root = _write_folder(tmp_path / "f", {"a": 2, "b": 2})
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(FaceDataError, match="broken.jpg"):
        load_folder(root)
    faces = load_folder(root, on_corrupt="skip")
    assert faces.skipped == ["b/broken.jpg"] and len(faces) == 4


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FaceDataError, match="does not exist"):
        load_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaceDataError, match="no identity sub-folders"):
        load_folder(tmp_path / "empty")
    (tmp_path / "empty" / "person").mkdir()
    with pytest.raises(FaceDataError, match="no readable images"):
        load_folder(tmp_path / "empty")
    with pytest.raises(FaceDataError, match="data.root"):
        load_faces("pins", None)


def test_read_image_names_the_file(tmp_path):
    with pytest.raises(FaceDataError, match="ghost.png"):
        read_image(tmp_path / "ghost.png")
