"""Name the people in photos with a specialized model (a finished finetune run). Same as `facekd identify`; `--help` lists its keys."""
from facekd.commands import run

if __name__ == "__main__":
    run("identify")
