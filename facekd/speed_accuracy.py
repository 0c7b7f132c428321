"""Speed against accuracy: each network's deployed ONNX time (model card) beside its comparison accuracy.

``python -m facekd.speed_accuracy CARD_JSON --row METHOD=NETWORK@SIZE[:RESULTS_JSON] ... --out FOLDER``

* ``CARD_JSON``: ``model_card.json`` of ``python scripts/model_card.py out=FOLDER`` (deployed columns on);
* each ``--row`` names a comparison row and the network it deploys, e.g.
  ``distill_bce_mixup_finetune_mobilefacenet=mobilefacenet@64:runs/edge/compare/results.json``
  (``teacher_probe=sface@112`` for the teacher with its linear probe); the row's accuracy (mean ± std over its
  seeds) comes from that ``results.json`` (``--results`` gives the default one); a row with int8 copies
  (``finetune.int8``) adds an int8 point at its int8 test accuracy;
* ``--cite LABEL=NETWORK@SIZE:ACC:STD:SOURCE`` adds a point measured elsewhere (its source says where).

Writes ``speed_accuracy.png`` (markers, std bars, the Pareto front) and ``speed_accuracy.json`` into ``--out``
and prints the table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from facekd.errors import ConfigError, FacekdError
from facekd.plots import pareto_front, plot_speed_accuracy
from facekd.runs import write_json

__all__ = ["card_time", "row_points", "speed_accuracy"]


def _net(spec: str) -> tuple[str, int]:
    name, _, size = spec.partition("@")
    if not name or not size.isdigit():
        raise ConfigError(f"{spec!r}: name a network as NETWORK@SIZE, e.g. mobilefacenet@64")
    return name, int(size)


def card_time(card: Mapping[str, Any], network: str, size: int, precision: str) -> float:
    """The deployed ONNX ms of ``network`` at ``size`` px in ``precision`` (fp32 | int8) from a model card."""
    for r in card["rows"]:
        if r["network"] == network and int(r["input"]) == size and r.get(f"onnx_{precision}_ms"):
            return float(r[f"onnx_{precision}_ms"])
    raise ConfigError(f"the model card has no {precision} ONNX time of {network} at {size} px; rerun "
                      f"scripts/model_card.py with that network and size (deployed=true)")


def row_points(card: Mapping[str, Any], results: Mapping[str, Any], method: str, network: str,
               size: int) -> list[dict[str, Any]]:
    """The fp32 point of comparison row ``method`` and, if it shipped int8 copies, its int8 point."""
    rows = {r["method"]: r for r in results["rows"]}
    if method not in rows:
        raise ConfigError(f"row {method!r} is not in that results.json (it has {', '.join(rows)})")
    r = rows[method]
    label = f"{method} ({network}@{size})"
    points = [{"label": label, "short": f"{network}@{size} fp32", "network": network, "input": size, "precision": "fp32", "seeds": r["seeds"],
               "ms": card_time(card, network, size, "fp32"), "accuracy": 100 * r["accuracy_mean"],
               "accuracy_std": 100 * r["accuracy_std"], "source": f"{method}: test accuracy of its torch model"}]
    int8 = r.get("int8") or {}
    if "test_accuracy_int8_mean" in int8:
        points.append({"label": label + " int8", "short": f"{network}@{size} int8", "network": network, "input": size, "precision": "int8",
                       "seeds": int8["seeds"], "ms": card_time(card, network, size, "int8"),
                       "accuracy": 100 * int8["test_accuracy_int8_mean"],
                       "accuracy_std": 100 * int8["test_accuracy_int8_std"],
                       "source": f"{method}: test accuracy of model.int8.onnx (its fp32 ONNX: "
                                 f"{100 * int8['test_accuracy_fp32_mean']:.1f} ± {100 * int8['test_accuracy_fp32_std']:.1f})"})
    return points


def speed_accuracy(card_json: str, rows: Sequence[str], cites: Sequence[str], out: str,
                   results: str | None = None) -> list[dict[str, Any]]:
    """The points of ``rows`` and ``cites`` (see the module doc), written as a chart and JSON under ``out``."""
    card = json.loads(Path(card_json).read_text())
    points: list[dict[str, Any]] = []
    for spec in rows:
        method, _, rest = spec.partition("=")
        net, _, path = rest.partition(":")
        path = path or results
        if not path:
            raise ConfigError(f"--row {spec}: no results.json (add :PATH or --results)")
        points += row_points(card, json.loads(Path(path).read_text()), method, *_net(net))
    for spec in cites:
        label, _, rest = spec.partition("=")
        net, acc, std, source = (rest.split(":", 3) + ["", "", ""])[:4]
        name, size = _net(net)
        points.append({"label": label, "network": name, "input": size, "precision": "fp32", "seeds": None,
                       "ms": card_time(card, name, size, "fp32"), "accuracy": float(acc),
                       "accuracy_std": float(std or 0), "source": source})
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    front = {p["label"] for p in pareto_front(points)}
    for p in points:
        p["pareto"] = p["label"] in front
    write_json(folder / "speed_accuracy.json", {"card": str(card_json), "points": points})
    plot_speed_accuracy(points, folder / "speed_accuracy.png",
                        title="deployed ONNX time (batch 1, one CPU thread) against test accuracy")
    return points


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m facekd.speed_accuracy", description=__doc__.split("\n")[0])
    ap.add_argument("card_json")
    ap.add_argument("--row", action="append", default=[], help="METHOD=NETWORK@SIZE[:RESULTS_JSON]")
    ap.add_argument("--cite", action="append", default=[], help="LABEL=NETWORK@SIZE:ACC:STD:SOURCE")
    ap.add_argument("--results", help="the results.json of --row entries that name none")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        points = speed_accuracy(args.card_json, args.row, args.cite, args.out, args.results)
    except (FacekdError, OSError, ValueError, KeyError) as e:  # a user's file or argument: one paragraph
        raise SystemExit(f"facekd: error: {e}") from None
    print("| point | ONNX ms | test accuracy % | Pareto | source |\n|---|---|---|---|---|")
    for p in sorted(points, key=lambda p: p["ms"]):
        print(f"| {p['label']} | {p['ms']:.2f} | {p['accuracy']:.1f} ± {p['accuracy_std']:.1f} | "
              f"{'yes' if p['pareto'] else ''} | {p['source']} |")


if __name__ == "__main__":
    main()
