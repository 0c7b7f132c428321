"""The distilled student's quality against the number of synthetic faces it saw. Same as `facekd scale-curve`; `--help` lists its keys."""
from facekd.commands import run

if __name__ == "__main__":
    run("scale-curve")
