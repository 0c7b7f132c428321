"""Enroll people into a gallery, with no training: add, remove or list them. Same as `facekd enroll`; `--help` lists its keys."""
from facekd.commands import run

if __name__ == "__main__":
    run("enroll")
