"""A face model for your own people, in one command.

DIR holds one sub-folder of raw photos per person (any size, any number of photos; at least
data.per_class + data.val + 1 each). The faces are found and aligned with MTCNN, synthetic faces are
generated, the teacher is distilled into a small student, and the student is specialized on your
photos (data.per_class per person for training, data.val for selection, the rest to test) with
facekd's recommended recipe (the distill_bce_mixup_finetune row: the whole student fine-tuned).
methods=[distill_bce_probe] runs the paper's recipe instead (a linear head on the frozen student):
faster, less accurate on ORL. The run folder it prints is what scripts/identify.py reads.

examples:
  python scripts/specialize.py data.root=DIR
  python scripts/specialize.py data.root=DIR data.per_class=3 paths.root=runs/mine
  python scripts/specialize.py data.root=DIR data.unknown_identities=4   # also calibrate "unknown"
  python scripts/specialize.py data.root=DIR 'methods=[distill_bce_probe]'   # the paper's recipe
then:
  python scripts/identify.py identify.model=RUN identify.input=new_photo.jpg
"""
from facekd.cli import run_script

if __name__ == "__main__":
    run_script("facekd.jobs:specialize", "specialize", __doc__)
