"""Enroll people into a gallery, with no training: add, remove or list them.

Reads a folder with one sub-folder of photos per person (the sub-folder's name is the person's name), finds the
face in each photo with MTCNN, embeds it with the run's embedder.onnx and writes the gallery file (atomically,
with its checksum and the embedder's sha256).  The rejection threshold is calibrated again after every change,
on synthetic faces and leave-one-person-out among the enrolled photos, never on real strangers.  A name that
is already enrolled is refused unless enroll.on_exists=merge (add the photos) or replace.

examples:
  python scripts/enroll.py enroll.model=runs/finetune/<name> enroll.people=~/people
  python scripts/enroll.py enroll.model=RUN enroll.people=new_people/ enroll.on_exists=merge
  python scripts/enroll.py enroll.gallery=runs/galleries/<name>.npz 'enroll.remove=[alice]'
  python scripts/enroll.py enroll.gallery=runs/galleries/<name>.npz enroll.list=true
"""
from facekd.cli import run_script

if __name__ == "__main__":
    run_script("facekd.enroll:enroll", "enroll", __doc__)
