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
