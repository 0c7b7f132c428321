"""Is the teacher a face teacher? Few-shot ORL probes on its features. Same as `facekd probe-teacher`; `--help` lists its keys."""
from facekd.commands import run

if __name__ == "__main__":
    run("probe-teacher")
