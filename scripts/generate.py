"""Stage 1: generate unlabeled synthetic faces. Same as `facekd generate`; `--help` lists its keys."""
from facekd.commands import run

if __name__ == "__main__":
    run("generate")
