"""Print the model card of every registered network: parameters, FLOPs and CPU latency in torch, and (unless Same as `facekd model-card`; `--help` lists its keys."""
from facekd.commands import run

if __name__ == "__main__":
    run("model-card")
