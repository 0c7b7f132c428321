"""A face model for your own people, in one command. Same as `facekd specialize`; `--help` lists its keys."""
from facekd.commands import run

if __name__ == "__main__":
    run("specialize")
