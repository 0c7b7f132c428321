"""Stage 2: distill the teacher's features into a small student, without labels.

Reads a generate run (and, if configured, unlabeled views of the train photos), caches the teacher's
features on them, and trains the student to reproduce them (sigmoid-BCE, MSE or cosine; optionally
several named feature maps). Writes <paths.root>/distill/<student>-<loss>-<teacher>/ with
student.safetensors, per-epoch metrics (R^2 against the teacher) and plots.

examples:
  python scripts/distill.py loss=bce                   # label-free sigmoid-BCE (default)
  python scripts/distill.py student=convnet9 loss=mse
  python scripts/distill.py distill.taps.weight=1      # add multi-layer (SKD) targets
  python scripts/distill.py resume=true                # continue an interrupted run
"""
from facekd.cli import run_script

if __name__ == "__main__":
    run_script("facekd.distill.stage:distill", "distill", __doc__)
