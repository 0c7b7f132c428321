import numpy as np
import pytest
from PIL import Image

from facekd.data.faces import FaceDataError, load_faces, load_folder, read_image
from facekd.errors import ConfigError, InputFileError


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
    with pytest.raises(FaceDataError, match="broken.jpg") as e:
        load_folder(root)
    assert str(e.value).startswith(f"corrupt or unreadable image {root / 'b' / 'broken.jpg'}: ")
    assert str(e.value).endswith(". Replace or delete it, or set data.on_corrupt=skip to leave unreadable images out")
    faces = load_folder(root, on_corrupt="skip")
    assert faces.skipped == ["b/broken.jpg"] and len(faces) == 4


def test_truncated_jpeg_is_decoded_in_full_and_skipped(tmp_path, caplog):
    root = _write_folder(tmp_path / "f", {"a": 2, "b": 2})
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "a" / "w.jpg")
    data = (root / "a" / "w.jpg").read_bytes()
    (root / "a" / "w.jpg").unlink()
    (root / "a" / "cut.jpg").write_bytes(data[: len(data) - 40])  # the header is intact, the pixels are not
    with Image.open(root / "a" / "cut.jpg") as im:
        im.verify()  # a header check alone would trust it
    with pytest.raises(FaceDataError, match="image file is truncated") as e:
        load_folder(root)
    assert str(e.value).startswith(f"corrupt or unreadable image {root / 'a' / 'cut.jpg'}: OSError: ")
    with caplog.at_level("WARNING", logger="facekd.data.faces"):
        faces = load_folder(root, on_corrupt="skip")
    assert faces.skipped == ["a/cut.jpg"] and "a/cut.jpg" not in faces.paths and len(faces) == 4
    assert any(str(root / "a" / "cut.jpg") in r.getMessage() for r in caplog.records)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(InputFileError) as e:
        load_folder(tmp_path / "nope")
    assert str(e.value) == (f"data.root={tmp_path / 'nope'} does not exist. Set data.root to an existing folder that "
                            f"holds one sub-folder of images per identity (DIR/<person>/<image>.jpg)")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaceDataError, match="no identity sub-folders"):
        load_folder(tmp_path / "empty")
    (tmp_path / "empty" / "person").mkdir()
    with pytest.raises(FaceDataError, match="no readable images"):
        load_folder(tmp_path / "empty")
    with pytest.raises(ConfigError) as e:
        load_faces("pins", None)
    assert str(e.value) == ("data.root is not set: data 'pins' needs data.root=DIR, a folder holding one sub-folder "
                            "of images per identity (DIR/<person>/<image>.jpg)")


def test_a_file_as_root_is_called_a_file(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "face.jpg")
    with pytest.raises(InputFileError) as e:
        load_folder(tmp_path / "face.jpg")
    assert str(e.value) == (f"data.root={tmp_path / 'face.jpg'} is a file, not a folder. Set data.root to the folder "
                            f"that holds one sub-folder of images per identity (DIR/<person>/<image>.jpg), not to a "
                            f"single image or an archive (unpack an archive first)")


def test_loose_images_without_identity_folders_are_explained(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    with pytest.raises(FaceDataError) as e:
        load_folder(tmp_path)
    assert str(e.value) == (f"data.root={tmp_path} has no identity sub-folders; its 1 images lie directly in it: "
                            f"move each person's images into a sub-folder. Expected one sub-folder of images per "
                            f"identity (DIR/<person>/<image>.jpg)")


def test_on_corrupt_value_is_checked(tmp_path):
    root = _write_folder(tmp_path / "f", {"a": 1})
    with pytest.raises(ConfigError) as e:
        load_folder(root, on_corrupt="ignore")
    assert str(e.value) == ("data.on_corrupt must be one of error, skip (what to do with unreadable image files), "
                            "got 'ignore' (a string); set it like data.on_corrupt=error")


def test_read_image_names_the_file(tmp_path):
    with pytest.raises(InputFileError, match="ghost.png") as e:
        read_image(tmp_path / "ghost.png")
    assert str(e.value) == (f"image {tmp_path / 'ghost.png'} does not exist; it may have been moved or deleted since "
                            f"the face folder was listed: restore it, or run again so that the folder is listed afresh")
