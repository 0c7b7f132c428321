"""Stage 3: specialize the distilled student on a few labeled photos per person. Same as `facekd finetune`; `--help` lists its keys."""
from facekd.commands import run

if __name__ == "__main__":
    run("finetune")
