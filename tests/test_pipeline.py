"""The main job end to end at smoke size on the embedded assets: table, chart and t-SNE."""
import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_main_job_smoke(tmp_path):
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "profile=smoke", f"paths.root={tmp_path}",
                           "progress=false"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "demo"
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    assert [r["method"] for r in rows] == ["distill_bce_probe", "distill_bce_mixup_finetune", "teacher_probe", "scratch", "pixels"]
    for r in rows:
        assert 0.0 <= float(r["accuracy_mean"]) <= 1.0 and int(r["params"]) >= 0
    assert (out / "tsne.png").stat().st_size > 0 and (out / "accuracy.png").exists()
    assert "main job finished" in proc.stdout
    # what it prints: the headline table under the rows' names, marked as smoke
    assert "| distill_bce_probe (recipe=paper) |" in proc.stdout
    assert "| distill_bce_mixup_finetune (recipe=recommended) |" in proc.stdout
    assert "| pixels |" in proc.stdout and "| teacher_probe (nearest class mean" in proc.stdout
    assert "profile=smoke" in proc.stdout and "not results" in proc.stdout
    md = (out / "comparison.md").read_text()
    assert md.startswith("# Smoke run (toy sizes): Baseline comparison") and "SMOKE (toy sizes)" in md
    # a quiet console: the table is the first thing printed; the INFO lines go to the run's log file
    assert proc.stdout.startswith("SMOKE (toy sizes) - orl: 40 identities") and " INFO]" not in proc.stderr
    [log] = (tmp_path / "logs").rglob("*.log")
    text = log.read_text()
    assert "distill_bce_probe seed 0: accuracy" in text
    # a fresh run logs no resume line, and the main job's finetune run is deployable like finetune.py's
    assert "resum" not in text.lower()
    import json

    result = json.loads((out / "results.json").read_text())["results"]["distill_bce_probe"][0]
    ft = Path(result["extra"]["finetune_run"])
    assert (ft / "model.onnx").stat().st_size > 0 and (ft / "confusion.png").exists()
    for stage_run in (ft, Path(result["extra"]["student_run"])):  # every manifest says it is a smoke run
        assert json.loads((stage_run / "manifest.json").read_text())["profile"] == "smoke"
