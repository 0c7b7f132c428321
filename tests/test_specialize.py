"""The two-command path on a user's own folder of raw photos: specialize (align -> generate -> distill ->
finetune), then identify a new photo with the run it printed."""
import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facekd.assets import cache_dir
from facekd.config import compose_config
from facekd.errors import ConfigError
from facekd.identify import CSV_FILE, identify
from facekd.jobs import specialize
from facekd.runs import read_json

PEOPLE = 4


def _people(orl, raw, labels, photos=5):
    for label in labels:
        person = raw / f"person {label}"
        person.mkdir(parents=True, exist_ok=True)
        for i in [i for i, y in enumerate(orl.labels) if y == label][:photos]:  # raw photos: larger than the crops
            Image.fromarray(orl.image(i)).resize((184, 224)).save(person / f"{i}.jpg")


def test_specialize_then_identify_a_new_photo(orl, tmp_path, capsys):
    raw = tmp_path / "my people"
    _people(orl, raw, range(PEOPLE))
    (raw / "nobody yet").mkdir()  # an empty person folder: warned about, left out
    root = tmp_path / "runs"
    overrides = ["profile=smoke", f"data.root={raw}", "data.per_class=3", "data.val=1", f"paths.root={root}",
                 "progress=false", "device=cpu"]
    run = Path(specialize(compose_config("specialize", overrides)))
    printed = capsys.readouterr().out
    assert f"identify.model={run}" in printed and "held-out photos named right:" in printed
    assert run.parent.name == "finetune" and run.name.startswith("faces-recommended-"), "a readable model folder"
    finetuned = read_json(run / "manifest.json")["config"]["finetune"]
    assert finetuned["unfreeze"] and finetuned["augment"], "the whole student is fine-tuned, not a frozen one's head"
    distilled = read_json(Path(finetuned["student_run"]) / "manifest.json")["config"]["distill"]
    assert distilled["sources"]["labeled_mixup"]["weight"] > 0, "the student was distilled with the mixup blends"
    assert (run / "model.onnx").exists() and read_json(run / "manifest.json")["classes"] == [
        f"person {k}" for k in range(PEOPLE)]
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


def test_specialize_reruns_after_a_person_is_added_and_refuses_too_few_people(orl, tmp_path, capsys):
    """A rerun after the folder changes makes a new model with the new person (no refusal); a rerun with no change
    reuses it; a folder where fewer than two people have enough photos is refused naming the minimum."""
    raw, root = tmp_path / "people", tmp_path / "runs"
    _people(orl, raw, [0, 1])
    overrides = ["profile=smoke", f"data.root={raw}", "data.per_class=3", "data.val=1", f"paths.root={root}",
                 "progress=false", "device=cpu", "recipe=paper"]
    first = Path(specialize(compose_config("specialize", overrides)))
    assert read_json(first / "manifest.json")["classes"] == ["person 0", "person 1"]
    _people(orl, raw, [2])
    second = Path(specialize(compose_config("specialize", overrides)))
    assert second != first and read_json(second / "manifest.json")["classes"] == ["person 0", "person 1", "person 2"]
    assert Path(specialize(compose_config("specialize", overrides))) == second
    few = tmp_path / "few"
    _people(orl, few, [0])
    _people(orl, few, [1], photos=2)
    with pytest.raises(ConfigError, match=r"at least 2\. Each person needs at least 5 photos with a face"):
        specialize(compose_config("specialize", [*overrides[:1], f"data.root={few}", *overrides[2:]]))
