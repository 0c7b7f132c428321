"""Stage 3: specialize the distilled student on a few labeled photos per person.

Trains a linear head on the frozen student (or the whole student with finetune.unfreeze=true) on the
labeled train split, selects on val, scores test once, and writes <paths.root>/finetune/<name>/ with
metrics, plots and the deployable model.onnx (checked against the torch model).

examples:
  python scripts/finetune.py                                  # ORL, the default distill run
  python scripts/finetune.py data=folder data.root=/my/photos # your own photos, one folder per person
  python scripts/finetune.py finetune.unfreeze=true           # also train the student at a lower lr
"""
from facekd.cli import run_script

if __name__ == "__main__":
    run_script("facekd.finetune:finetune", "finetune", __doc__)
