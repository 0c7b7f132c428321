"""The two-command path on a user's own folder of raw photos: specialize (align -> generate -> distill ->
finetune), then identify a new photo with the run it printed."""
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from facekd.assets import cache_dir
from facekd.cli import compose_config
from facekd.identify import CSV_FILE, identify
from facekd.jobs import specialize
from facekd.runs import read_json

PEOPLE = 4


def test_specialize_then_identify_a_new_photo(orl, tmp_path, capsys):
    raw = tmp_path / "my people"
    for label in range(PEOPLE):
        person = raw / f"person {label}"
        person.mkdir(parents=True)
        for i in [i for i, y in enumerate(orl.labels) if y == label][:5]:  # raw photos: larger than the crops
            Image.fromarray(orl.image(i)).resize((184, 224)).save(person / f"{i}.jpg")
    root = tmp_path / "runs"
    cfg = compose_config("specialize", ["profile=smoke", f"data.root={raw}", "data.per_class=3", "data.val=1",
                                        f"paths.root={root}", "progress=false", "device=cpu"])
    run = Path(specialize(cfg))
    printed = capsys.readouterr().out
    assert f"identify.model={run}" in printed
    model = read_json(root / "specialize" / "model.json")
    assert model["finetune_run"] == str(run)
    assert model["row"] == "distill_bce_mixup_finetune", "the recommended recipe is the default model"
    finetuned = read_json(run / "manifest.json")["config"]["finetune"]
    assert finetuned["unfreeze"] and finetuned["augment"], "the whole student is fine-tuned, not a frozen one's head"
    distilled = read_json(Path(finetuned["student_run"]) / "manifest.json")["config"]["distill"]
    assert distilled["sources"]["labeled_mixup"]["weight"] > 0, "the student was distilled with the mixup blends"
    assert (run / "model.onnx").exists()
    aligned = [d for d in (cache_dir() / "aligned").glob("my people-*") if (d / "sources.json").exists()]
    assert aligned, "the raw photos were aligned by MTCNN first"

    canvas = np.full((320, 260, 3), 190, np.uint8)  # a new photo of person 1 (its 6th picture, never trained on)
    new = [i for i, y in enumerate(orl.labels) if y == 1][5]
    canvas[60:284, 38:222] = np.asarray(Image.fromarray(orl.image(new)).resize((184, 224)))
    Image.fromarray(canvas).save(tmp_path / "new.png")
    out = tmp_path / "identified"
    identify(compose_config("identify", [f"identify.model={run}", f"identify.input={tmp_path / 'new.png'}",
                                         f"identify.out_dir={out}"]))
    with open(out / CSV_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["status"] == "known"
    assert rows[0]["identity"] in {f"person {k}" for k in range(PEOPLE)}
