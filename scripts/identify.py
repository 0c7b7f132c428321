"""Name the people in photos with a specialized model (a finished finetune run).

Finds every face in the photos (any size, any number of faces) with MTCNN, frames each one as the run's
training images were framed, and runs the run's model.onnx (or its torch model with identify.backend=torch).
Writes identities.csv (one row per face: file, box, identity, score, known/unknown; no_face and unreadable
rows for the rest) and contact_sheet.png to <paths.root>/identify/<run name>-<time>/.  A run with an
open_set.json rejects faces scoring below its threshold as unknown; a closed-set run rejects none.

examples:
  python scripts/identify.py identify.model=runs/finetune/orl-resnet18-bce-sface-bce identify.input=photos/
  python scripts/identify.py identify.model=RUN 'identify.input=[group.jpg,more/]' identify.backend=torch
  python scripts/identify.py identify.model=RUN identify.input=photos/ identify.on_corrupt=skip identify.out_dir=out/
"""
from facekd.cli import run_script

if __name__ == "__main__":
    run_script("facekd.identify:identify", "identify", __doc__)
