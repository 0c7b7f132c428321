"""The former name of scripts/distill.py (stage 2: distill the teacher's features into a small student): it runs
that script with the same arguments, after a one-line notice."""
import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    print("facekd: scripts/distill_features.py is now scripts/distill.py; the old name still works for now",
          file=sys.stderr)
    runpy.run_path(str(Path(__file__).with_name("distill.py")), run_name="__main__")
