"""The main job (make demo): the whole method on the embedded defaults, in one table. Same as `facekd demo`; `--help` lists its keys."""
from facekd.commands import run

if __name__ == "__main__":
    run("demo")
