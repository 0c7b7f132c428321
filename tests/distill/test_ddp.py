"""The same script under torchrun with 2 CPU processes (gloo): one set of caches, one finished run folder."""
import json
import os
import subprocess
import sys
from pathlib import Path

from facekd.distill import load_student

REPO = Path(__file__).resolve().parents[2]


def test_torchrun_two_processes(base_run, distill_overrides, tmp_path):
    # base_run has built the shared caches: no rank runs the teacher here
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "scripts" / "distill.py"), *distill_overrides, f"paths.root={tmp_path}",
           "distill.train.epochs=1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "distill" / "resnet18-bce-sface"
    m = json.loads((run / "manifest.json").read_text())
    assert m["complete"] and m["best_epoch"] == 1
    history = json.loads((run / "metrics.json").read_text())["history"]
    # 24 samples / (8 per batch x 2 ranks) = 1 step per rank; every rank logged the same row
    assert len(history) == 1 and "real_test_r2" in history[0]
    logged = [line for log in (tmp_path / "logs").rglob("*.log") for line in log.read_text().splitlines()]
    summaries = [line for line in logged if "distill resnet18-bce-sface: best epoch" in line]
    assert len(summaries) == 1  # only rank 0 reports (the console shows warnings; the log file holds the rest)
    assert load_student(run).out_dim == 128
