"""Stage 1: generate unlabeled synthetic faces.

Draws reproducible faces from a pretrained generator (by default the embedded DCGAN) and writes them
as shards under <paths.root>/generate/<generate.name>, with a manifest recording every shard's checksum.
Face j of a run is the same on every machine for the same seed.

examples:
  python scripts/generate.py                               # the embedded DCGAN, a CPU-demo size
  python scripts/generate.py generate.num_images=102400    # the paper's size
  python scripts/generate.py profile=smoke                 # toy size, for a quick check
"""
from facekd.cli import run_script

if __name__ == "__main__":
    run_script("facekd.generators:generate", "generate", __doc__)
