"""The baseline comparison: every method under the same split and seeds, as one table.

``compare_baselines(cfg)`` (``python scripts/compare_baselines.py``) reads the ``compare_baselines``
config: ``methods`` lists table rows; each row name is a key of ``baselines`` (its config group under
``configs/baseline/``, whose ``method`` names the plug-in) or, failing that, a registered method run with
its defaults.  Each row runs once per seed with :func:`~facekd.baselines.base.run_method` (cached by
config hash, so a rerun after a change retrains only what changed), and the rows are summarised as
mean ± std over seeds.

Written to ``out_dir`` (default ``${paths.root}/compare_baselines``): ``comparison.md`` (our table, then
the paper's published numbers beside ours), ``comparison.csv``, ``accuracy.png`` (bar chart with std
error bars) and ``results.json`` (every per-seed result).

Open set (``data.unknown_identities`` >= 1, e.g. ``data=orl_openset``): every row calibrates its own rejection
threshold at ``open_set_far`` on the calibration unknowns and the table and CSV gain the columns
``DIR@FAR %`` (known test faces accepted and named right) and ``test FAR %`` (test unknowns accepted), mean ±
std over seeds.  Closed-set tables are unchanged.
"""
from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from facekd.baselines.base import DEFAULT_OPEN_SET_FAR, METHODS, MethodResult, plain, run_method
from facekd.config import canonical_row, run_profile
from facekd.data.labeled import prepare_labeled
from facekd.errors import ConfigError, UnknownNameError
from facekd.gallery import CALIBRATIONS
from facekd.modelcard import BUSY_NOTE
from facekd.openset import check_far
from facekd.runs import atomic_path, write_json
from facekd.validate import check_choice, check_int

__all__ = ["resolve_rows", "row_config", "summarize", "comparison_markdown", "paper_markdown", "write_csv", "plot_accuracy",
           "compare_baselines", "headline_markdown", "run_profile", "PAPER_RESULTS", "CAVEAT", "SMOKE_LINE"]

log = logging.getLogger(__name__)

METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "precision_micro", "recall_micro",
           "f1_micro")

# DESIGN-level facts: the paper's published Pins test accuracy (%), per (method plug-in, network).  Upstream chose
# epochs on the test split, so they are optimistic.  ``None`` network = the method's only row.
PAPER_RESULTS: dict[tuple[str, str | None], str] = {
    ("scratch", "convnet9"): "19.78 (ConvNet-9)",
    ("scratch", "resnet18"): "52.14 (ResNet-18)",
    ("scratch", "resnet50"): "40.09 (ResNet-50)",
    ("teacher_probe", None): "97.71 (VGGFace2 ResNet-50)",
    ("distilled", "mse"): "2.29 (ConvNet-9); ResNet-18: R² ≈ 0",
    ("distilled", "bce"): "44.80 (ConvNet-9), 79.83 (ResNet-18)",
    ("triplet", None): "triplet accuracy 83.10 (ConvNet-9), 91.16 (ResNet-50)",
    ("hinton_kd", None): "2.56 (ConvNet-9 <- InceptionV3)",
    ("subclass_kd", None): "Sun: weighted F1 72.06 (MobileNetV2 <- ResNet-50, MHIST; Hinton KD 72.85, none 71.63)",
    ("maml", None): "no result",
}

CAVEAT = ("The paper's numbers come from different data and networks (Pins, 105 identities x 32 training images; "
          "VGGFace2 ResNet-50 / InceptionV3 teachers) and were selected on the test split; ours come from the "
          "configured data set and teacher, selected on val. Compare trends, not values.")


def row_config(cfg: Mapping[str, Any], row: str, smoke: bool = False) -> tuple[str, dict[str, Any]]:
    """``(plug-in, config)`` of one registered row: ``baselines.<row>``, its ``smoke`` section laid over it when
    ``smoke``, and the comparison's ``teacher`` for a plug-in that uses one (injected here, and only here)."""
    from omegaconf import OmegaConf

    rcfg = dict(plain((cfg.get("baselines") or {}).get(row)) or {})
    smoke_cfg = rcfg.pop("smoke", None) or {}
    if smoke and smoke_cfg:
        rcfg = OmegaConf.to_container(OmegaConf.merge(rcfg, smoke_cfg), resolve=True)
    plugin = str(rcfg.get("method", row))
    if plugin not in METHODS:
        raise UnknownNameError(f"row '{row}' names method '{plugin}', which is unknown; known methods: "
                               f"{', '.join(METHODS.names())}")
    if getattr(METHODS.get(plugin), "uses_teacher", False) and cfg.get("teacher"):
        rcfg["teacher"] = plain(cfg["teacher"])
    return plugin, METHODS.get(plugin)().resolve(rcfg)


def resolve_rows(methods: Sequence[str] | str, cfg: Mapping[str, Any], smoke: bool = False) -> list[tuple[str, str, dict]]:
    """``[(row name, plug-in name, row config)]`` for the rows ``methods`` names (``all``: every registered row; a
    former name resolves to the row's new one).  An unknown name raises, listing the known rows."""
    known = sorted((cfg.get("baselines") or {}).keys())
    if methods == "all" or list(methods) == ["all"]:
        methods = known
    names = [canonical_row(str(m)) for m in methods]
    unknown = [m for m in names if m not in known]
    if unknown:
        raise UnknownNameError(f"unknown row(s) {', '.join(unknown)}; known rows (files under configs/baseline/): "
                               f"{', '.join(known)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"methods lists a row twice: {list(methods)}")
    return [(row, *row_config(cfg, row, smoke)) for row in names]


def _network(plugin: str, cfg: Mapping[str, Any]) -> str | None:
    if plugin == "distilled":
        return str(cfg.get("loss", "bce"))
    if plugin == "scratch":
        student = cfg.get("student") or {}
        return str(student.get("name", "resnet18")) if isinstance(student, Mapping) else str(student)
    return None


def _int8_figures(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Seeds' ``finetune.int8`` reports as means and stds: the classifier's test accuracy in int8 and in its fp32
    ONNX, the top-1 agreement on val, the smallest embedder cosine to fp32 on val, and how many copies shipped."""
    if not reports:
        return {}
    out: dict[str, Any] = {"seeds": len(reports),
                           "shipped": sum(int(i.get("shipped", False)) for r in reports for i in r.values()),
                           "copies": sum(len(r) for r in reports)}
    model = [r["model.onnx"] for r in reports if (r.get("model.onnx") or {}).get("test_accuracy")]
    for prec in ("int8", "fp32"):
        v = [m["test_accuracy"][prec] for m in model]
        if v:
            out[f"test_accuracy_{prec}_mean"], out[f"test_accuracy_{prec}_std"] = float(np.mean(v)), float(np.std(v))
    agree = [r["model.onnx"]["val_top1_agreement"] for r in reports if "model.onnx" in r]
    cos = [r["embedder.onnx"]["val_min_cosine"] for r in reports if "embedder.onnx" in r]
    if agree:
        out["val_top1_agreement_mean"] = float(np.mean(agree))
    if cos:
        out["embedder_val_min_cosine"] = float(np.min(cos))
    return out


def summarize(row: str, plugin: str, cfg: Mapping[str, Any], results: Sequence[MethodResult]) -> dict[str, Any]:
    """Mean and std over seeds of one row's results (population std; 0 for one seed)."""
    out: dict[str, Any] = {"method": row, "plugin": plugin, "student": results[0].student,
                           "seeds": len(results), "paper": PAPER_RESULTS.get((plugin, _network(plugin, cfg)), "")}
    recipe = cfg.get("recipe")  # a row that runs one of the stages' recipes (configs/recipe/), both stages of it
    named = [str(o) for o in cfg.get("distill_overrides") or [] if str(o).startswith("recipe=")]
    if recipe and all(o == f"recipe={recipe}" for o in named):
        out["recipe"] = str(recipe)
    for k in METRICS:
        v = np.array([r.test[k] for r in results], dtype=float)
        out[f"{k}_mean"], out[f"{k}_std"] = float(v.mean()), float(v.std())
    for k in ("params", "mflops", "cpu_ms_per_img", "train_seconds"):
        out[k] = float(np.mean([getattr(r, k) for r in results]))
    out["params"] = int(out["params"])
    for k in ("triplet_accuracy", "teacher_ncm_accuracy", "teacher_accuracy"):
        vals = [r.extra[k] for r in results if k in r.extra]
        if vals:
            out[f"{k}_mean"], out[f"{k}_std"] = float(np.mean(vals)), float(np.std(vals))
    out["latency_busy"] = any(bool(r.extra.get("latency_busy")) for r in results)
    open_set = [r.extra["open_set"] for r in results if r.extra.get("open_set")]
    if open_set:
        out["open_set"] = True
        for k, name in (("dir", "dir"), ("far", "test_far"), ("far_calibration", "calibration_far")):
            v = np.array([o[k] for o in open_set], dtype=float)
            out[f"{name}_mean"], out[f"{name}_std"] = float(v.mean()), float(v.std())
        out["far_target"] = float(open_set[0]["far_target"])
    notes = []
    deployed = [r.extra["deployed"] for r in results if r.extra.get("deployed")]
    if deployed:  # the exported ONNX files under onnxruntime, batch 1, one thread: mean over seeds of the fastest run
        out["deployed_ms"] = {f: float(np.mean([d[f]["onnx_ms_per_img"] for d in deployed if f in d]))
                              for f in sorted({f for d in deployed for f in d})}
    int8 = _int8_figures([r.extra["int8"] for r in results if r.extra.get("int8")])
    if int8:
        out["int8"] = int8
        if "test_accuracy_int8_mean" in int8:
            notes.append(f"int8 {100 * int8['test_accuracy_int8_mean']:.1f} ± {100 * int8['test_accuracy_int8_std']:.1f}% "
                         f"(its fp32 ONNX {100 * int8['test_accuracy_fp32_mean']:.1f}%)")
    if any(r.extra.get("collapsed") for r in results):
        notes.append("embedding collapsed")
    for k, label in (("teacher_ncm_accuracy", "teacher NCM"), ("teacher_accuracy", "teacher")):
        if f"{k}_mean" in out:
            notes.append(f"{label} {100 * out[f'{k}_mean']:.1f}%")
    used = [(r.extra["subclasses_used"], r.extra["subclasses_total"]) for r in results if "subclasses_used" in r.extra]
    if used:
        notes.append(f"teacher uses {np.mean([u for u, _ in used]):.0f}/{used[0][1]} subclasses")
    if "triplet_accuracy_mean" in out:
        notes.append(f"triplets ordered right {100 * out['triplet_accuracy_mean']:.1f}%")
    out["notes"] = "; ".join(notes)
    return out


def _pm(row: Mapping[str, Any], key: str) -> str:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if mean is None:
        return "–"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if row.get("seeds", 1) > 1 else f"{100 * mean:.1f}"


TABLE_COLUMNS = [("method", "method"), ("student", "student"), ("accuracy", "accuracy %"),
                 ("precision_macro", "precision (macro) %"), ("recall_macro", "recall (macro) %"),
                 ("f1_macro", "F1 (macro) %"), ("f1_weighted", "F1 (weighted) %"), ("params", "params (M)"), ("mflops", "MFLOPs"),
                 ("cpu_ms_per_img", "CPU ms/img"), ("train_seconds", "train s"), ("notes", "notes")]


# open set only: after F1 (weighted)
OPEN_SET_COLUMNS = [("dir", "DIR@FAR %"), ("test_far", "test FAR %")]


def _open_set(rows: Sequence[Mapping[str, Any]]) -> bool:
    return any(r.get("open_set") for r in rows)


def table_columns(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The table's columns: :data:`TABLE_COLUMNS`, plus :data:`OPEN_SET_COLUMNS` when the protocol is open-set."""
    if not _open_set(rows):
        return list(TABLE_COLUMNS)
    at = [k for k, _ in TABLE_COLUMNS].index("f1_weighted") + 1
    return TABLE_COLUMNS[:at] + OPEN_SET_COLUMNS + TABLE_COLUMNS[at:]


def comparison_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Our comparison table (mean ± std over seeds)."""
    columns = table_columns(rows)
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        cells = []
        for key, _ in columns:
            if key in METRICS or key in dict(OPEN_SET_COLUMNS):
                cells.append(_pm(r, key))
            elif key == "params":
                cells.append(f"{r['params'] / 1e6:.2f}")
            elif key == "mflops":
                cells.append(f"{r['mflops']:,.0f}")
            elif key == "cpu_ms_per_img":
                cells.append(f"{r[key]:.1f}" + (" *" if r.get("latency_busy") else ""))
            elif key == "train_seconds":
                cells.append(f"{r[key]:.1f}")
            else:
                cells.append(str(r.get(key, "")).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    if any(r.get("latency_busy") for r in rows):
        lines.append(f"\n{BUSY_NOTE}")
    return "\n".join(lines)




def paper_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The paper's published numbers beside ours, with the caveat."""
    lines = ["| method | ours: accuracy % (student) | paper: Pins accuracy % |", "|---|---|---|"]
    for r in rows:
        ours = f"{_pm(r, 'accuracy')} ({r['student']})"
        if "triplet_accuracy_mean" in r:
            ours += f"; triplet accuracy {_pm(r, 'triplet_accuracy')}"
        lines.append(f"| {r['method']} | {ours} | {r.get('paper') or '–'} |")
    return "\n".join(lines) + f"\n\n{CAVEAT}"


CSV_FIELDS = ["method", "plugin", "student", "seeds"] + [f"{k}_{s}" for k in METRICS for s in ("mean", "std")] + \
    ["params", "mflops", "cpu_ms_per_img", "train_seconds", "triplet_accuracy_mean", "triplet_accuracy_std", "notes",
     "paper"]


# open set only, after the CSV_FIELDS
OPEN_SET_CSV_FIELDS = ["far_target", "dir_mean", "dir_std", "test_far_mean", "test_far_std", "calibration_far_mean",
                       "calibration_far_std"]


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    fields = CSV_FIELDS + (OPEN_SET_CSV_FIELDS if _open_set(rows) else [])
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    return Path(path)


def plot_accuracy(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """Bar chart of test accuracy per row, with the std over seeds as error bars."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 0.9 * len(rows) + 2), 4.2), dpi=120)
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    means = [100 * r["accuracy_mean"] for r in rows]
    stds = [100 * r["accuracy_std"] for r in rows]
    bars = ax.bar(x, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.85)
    for b, m in zip(bars, means):
        ax.text(b.get_x() + b.get_width() / 2, m + 1, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [r["method"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("test accuracy %")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def gallery_settings(cfg: Mapping[str, Any], data: Any, root: Path) -> dict[str, Any]:
    """The ``gallery`` section, checked, with the synthetic impostor faces (their own generate run, made when
    missing) rendered as the labeled photos are shown to a model."""
    g = dict(cfg.get("gallery") or {})
    unknown = set(g) - {"shots", "far", "calibration", "synthetic", "generate_overrides"}
    if unknown:
        raise ConfigError(f"unknown gallery keys {sorted(unknown)}; known: calibration, far, generate_overrides, "
                          "shots, synthetic")
    shots = g.get("shots", [1, 2])
    shots = list(shots) if isinstance(shots, (list, tuple)) else [shots]
    most = int(data.split.protocol.get("enroll_shots", 2))
    shots = [check_int(k, "gallery.shots", minimum=1, maximum=min(most, int(data.cfg.get("per_class", 2))),
                       what="photos enrolled per person (at most data.enroll_shots and data.per_class)") for k in shots]
    out = {"shots": shots, "far": check_far(g.get("far", 0.01), "gallery.far"),
           "calibration": check_choice(g.get("calibration", "max"), "gallery.calibration", CALIBRATIONS,
                                       what="which impostor scores set the rejection threshold"),
           "impostors": None, "impostors_id": None}
    n = check_int(g.get("synthetic", 1000), "gallery.synthetic", minimum=0, what="synthetic impostor faces")
    if n:
        from facekd.data.labeled import split_datasets
        from facekd.data.synthetic import SyntheticFaces
        from facekd.data.synthetic import is_grey, render_synthetic
        from facekd.pipeline import ensure_generate_run

        run = root / "generate" / "impostors"
        overrides = ["generate.name=impostors", "generate.first_seed=1000000", f"generate.num_images={n}",
                     *[str(o) for o in g.get("generate_overrides") or []]]
        faces = SyntheticFaces(ensure_generate_run(cfg, root, overrides, run=run))
        x, _ = split_datasets(data, ("train",), augment_train=False)["train"].tensors()
        grey = is_grey(x)
        out["impostors"] = render_synthetic(faces.batch(np.arange(min(n, len(faces)))),
                                            int(data.cfg.get("image_size", 112)), grey)
        out["impostors_id"] = {"generate": faces.config_hash, "n": int(min(n, len(faces))), "grey": grey}
    return out


def _seeds(cfg: Mapping[str, Any]) -> list[int]:
    seeds = cfg.get("seeds", 1)
    if isinstance(seeds, (list, tuple)):
        return [int(s) for s in seeds]
    if int(seeds) < 1:
        raise ConfigError(f"seeds must be a positive count or a list of seeds, got {seeds}")
    first = int(cfg.get("seed", 0))
    return list(range(first, first + int(seeds)))


def compare_baselines(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Run every row of ``cfg.methods`` for every seed (cached), write the table, CSV and chart; return the rows."""
    cfg = plain(cfg)
    smoke = run_profile(cfg) == "smoke"
    rows = resolve_rows(cfg["methods"], cfg, smoke)
    seeds = _seeds(cfg)
    far = check_far(cfg.get("open_set_far", DEFAULT_OPEN_SET_FAR), "open_set_far")
    root = Path(cfg["paths"]["root"])
    out_dir = Path(cfg.get("out_dir") or root / "compare_baselines")
    data = prepare_labeled(cfg["data"], root)
    operational = {"device": cfg.get("device", "auto"), "progress": bool(cfg.get("progress", True))}
    gallery = gallery_settings(cfg, data, root) if data.enroll_protocol else None
    results: dict[str, list[MethodResult]] = {}
    t0 = time.perf_counter()
    for row, plugin, mcfg in rows:
        for seed in seeds:
            t = time.perf_counter()
            res = run_method(plugin, {**mcfg, **operational}, cfg["data"], root, seed, data=data, open_set_far=far,
                             export=bool(cfg.get("export_onnx", True)), gallery=gallery)
            log.info("%s seed %d: accuracy %.4f (%.0f s)", row, seed, res.accuracy, time.perf_counter() - t)
            results.setdefault(row, []).append(res)
    summary = [summarize(row, plugin, mcfg, results[row]) for row, plugin, mcfg in rows]
    title = (f"{'SMOKE (toy sizes) - ' if smoke else ''}{cfg['data'].get('name', 'data')}: {data.num_classes} "
             f"identities, {cfg['data'].get('per_class')} train images each")
    table = comparison_markdown(summary)
    paper = paper_markdown(summary)
    seeds_txt = f"{len(seeds)} seed(s) {seeds}"
    split_txt = f"split {data.split.id} (manifest {data.split_path.parent.name}/{data.split_path.name})"
    if data.open_set:
        n = len(data.split.unknown_classes) // 2
        split_txt += (f"; open set: each row's rejection threshold calibrated at FAR {100 * far:g}% on the "
                      f"{len(data.split.unknown_val)} images of {n} calibration unknown identities, DIR and FAR "
                      f"observed on the known test faces and the {len(data.split.unknown_test)} images of {n} other "
                      f"unknown identities")
    gallery_md = ""
    if gallery is not None:
        from facekd.baselines.gallery_table import gallery_markdown, summarize_gallery

        for row in summary:
            row["gallery"] = summarize_gallery(results[row["method"]])
        gallery_md = gallery_markdown(summary, data, gallery)
        table = f"{gallery_md}\n\n### Closed-set classifier heads (trained people)\n\n{table}"
    md = (f"# {'Smoke run (toy sizes): ' if smoke else ''}Baseline comparison\n\n"
          f"{SMOKE_LINE + chr(10) + chr(10) if smoke else ''}{title}; {split_txt}; {seeds_txt}; test accuracy "
          f"scored once at the state chosen on val.\n\n{table}\n\n## Beside the paper\n\n{paper}\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "comparison.md") as tmp:
        tmp.write_text(md)
    write_csv(summary, out_dir / "comparison.csv")
    plot_accuracy(summary, out_dir / "accuracy.png", title)  # the smoke title marks a smoke chart too
    if gallery is not None:
        from facekd.baselines.gallery_table import plot_gallery

        plot_gallery(summary, out_dir / "gallery.png", "k1", title)
    write_json(out_dir / "results.json", {"rows": summary, "seeds": seeds, "split": str(data.split_path),
                                          "results": {k: [r.as_dict() for r in v] for k, v in results.items()},
                                          "wall_seconds": round(time.perf_counter() - t0, 1)})
    if cfg.get("headline"):  # the main job: the short table
        print(f"{title}; {split_txt}; {seeds_txt}\n\n{headline_markdown(summary)}\n\n"
              f"the full table (precision, recall, train time, notes) and the paper's figures: {out_dir / 'comparison.md'}")
    else:
        print(f"{title}; {split_txt}; {seeds_txt}\n\n{table}\n\nBeside the paper:\n\n{paper}\n\nwritten to {out_dir}")
    if smoke:
        print(SMOKE_LINE)
    return summary


SMOKE_LINE = ("profile=smoke: every stage ran at toy sizes to check the plumbing; these numbers are not results "
              "(rows at or below chance are expected). Run without profile=smoke for real figures.")


HEADLINE_COLUMNS = [("method", "method"), ("accuracy", "accuracy %"), ("f1_macro", "macro-F1 %"),
                    ("params", "params (M)"), ("mflops", "MFLOPs"), ("cpu_ms_per_img", "CPU ms/img")]


def headline_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The short table the main job prints: six columns, the teacher's nearest-class-mean accuracy beside its probe."""
    lines = ["| " + " | ".join(h for _, h in HEADLINE_COLUMNS) + " |", "|" + "|".join("---" for _ in HEADLINE_COLUMNS) + "|"]
    for r in rows:
        label = str(r["method"]) + (f" (recipe={r['recipe']})" if r.get("recipe") else "")
        if "teacher_ncm_accuracy_mean" in r:
            label += f" (nearest class mean {_pm(r, 'teacher_ncm_accuracy')}%)"
        cells = [label, _pm(r, "accuracy"), _pm(r, "f1_macro"),
                 f"{r['params'] / 1e6:.2f}", f"{r['mflops']:,.0f}",
                 f"{r['cpu_ms_per_img']:.1f}" + (" *" if r.get("latency_busy") else "")]
        lines.append("| " + " | ".join(cells) + " |")
    if any(r.get("latency_busy") for r in rows):
        lines.append(f"\n{BUSY_NOTE}")
    return "\n".join(lines)
