"""Stage 2: distill the teacher's features into a small student, without labels. Same as `facekd distill`; `--help` lists its keys."""
from facekd.commands import run

if __name__ == "__main__":
    run("distill")
