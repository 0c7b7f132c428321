"""The main job (make demo): the whole method on the embedded defaults, in one table.

Generates synthetic faces, distills the teacher into a ResNet-18, specializes it on ORL (2 train /
1 val / 7 test photos per person) with the paper's recipe and with facekd's recommended one, and sets
them beside the teacher's linear probe, a ResNet-18 trained from scratch and raw pixels under the same
split. Every row is cached, so a rerun redoes only what changed.

examples:
  python scripts/demo.py                 # about an hour on 2 CPU cores (58 min measured)
  python scripts/demo.py profile=smoke   # toy sizes: checks the plumbing, the numbers mean nothing
  python scripts/demo.py seeds=3         # mean +- std over three seeds
"""
from facekd.cli import run_script

if __name__ == "__main__":
    run_script("facekd.jobs:main_job", "demo", __doc__)
