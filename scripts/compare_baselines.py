"""Compare every method under one split and the same seeds, as one table.

Runs scratch, teacher_probe, Hinton KD, triplet, MAML, the feature-distillation rows and the multi-layer
(SKD / FitNet / AT) rows on the same labeled split, selects each on val, scores test once, and writes
comparison.md / .csv, results.json and accuracy.png to out_dir. Each row is cached under
<paths.root>/baselines/<method>-<hash>/ and reused while its config, data, split and seed are unchanged.

examples:
  python scripts/compare_baselines.py                                  # the embedded ORL defaults
  python scripts/compare_baselines.py seeds=3 'methods=[pixels,teacher_probe,scratch]'
  python scripts/compare_baselines.py baselines.scratch.train.steps=1000   # reruns only that row
"""
from facekd.cli import run_script

if __name__ == "__main__":
    run_script("facekd.baselines.compare:compare_baselines", "compare_baselines", __doc__)
