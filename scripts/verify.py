"""Verify two photos: the same person or not, with the cosine similarity of their faces' embeddings. Same as `facekd verify`; `--help` lists its keys."""
from facekd.commands import run

if __name__ == "__main__":
    run("verify")
