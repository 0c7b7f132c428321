"""Compare every method under one split and the same seeds, as one table. Same as `facekd compare`; `--help` lists its keys."""
from facekd.commands import run

if __name__ == "__main__":
    run("compare")
