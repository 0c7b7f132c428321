"""Is the teacher a face teacher? Few-shot ORL probes on its features.

Fits a linear probe and a nearest-class-mean classifier on the teacher's features over several split
seeds, beside the same probes on a random-init student's features, and prints the table.

examples:
  python scripts/probe_teacher.py
  python scripts/probe_teacher.py teacher=facenet_vggface2 teacher.weights=/path/to/weights.pt
"""
from facekd.cli import run_script

if __name__ == "__main__":
    run_script("facekd.probe:probe_teacher", "probe_teacher", __doc__)
