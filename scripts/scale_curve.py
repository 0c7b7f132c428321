"""The distilled student's quality against the number of synthetic faces it saw.

For each count in curve.faces, the distill_bce_probe row is distilled in stream mode (new generator faces
every step, the teacher online) for curve.epochs epochs that together show the student that many faces,
then finetuned and scored under the shared split. Writes curve.csv, curve.json and curve.png (R² on the
real val/test photos and held-out synthetic faces, and test accuracy, against faces seen) to curve.out_dir.
Every point and seed is cached, so adding a point reruns only that point.

examples:
  python scripts/scale_curve.py 'curve.faces=[2000,8000]' seeds=3
  python scripts/scale_curve.py 'curve.faces=[100000,1000000]' device=cuda curve.epochs=21
  python scripts/scale_curve.py 'curve.overrides=["distill.sources.labeled_train.weight=0"]'   # synthetic faces only
"""
from facekd.cli import run_script

if __name__ == "__main__":
    run_script("facekd.scale_curve:scale_curve", "scale_curve", __doc__)
