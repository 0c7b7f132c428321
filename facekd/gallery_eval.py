"""The enroll protocol's figures: a model's embedding used with a gallery, on people it trained on and on people
it never saw (``data=orl_enroll``).

The split (:mod:`facekd.data.splits`) has three kinds of people:

* *trained* people: their ``train`` photos are what every method trains on; the first k of them are enrolled, their
  ``val`` photos choose the gallery template, their ``test`` photos are queries;
* *enrolled-only* people: never seen by any training or distillation step; the first k of their ``enroll`` photos
  are enrolled, their ``enroll_query`` photos are queries;
* *strangers*: never enrolled and never used to calibrate; the false-accept rate is measured on them.

One gallery holds every trained and enrolled-only person, as it would in use.  For each k in ``shots``:

* ``template``: ``mean`` or ``all`` (:mod:`facekd.gallery`), the one with the better accuracy on the trained
  people's val photos (ties: ``mean``, the smaller and faster gallery);
* ``trained_accuracy`` / ``enrolled_accuracy``: queries named right by their best-scoring person (no threshold);
* ``threshold``: calibrated at ``far`` from impostor scores that spend no person of the user's
  (:func:`facekd.gallery.calibrate`: leave-one-person-out among the enrolled photos, and synthetic faces);
  ``dir`` (a known query accepted and named right) and ``far`` (strangers accepted) are measured at it, and each
  calibration source's own threshold with the FAR it gives on the strangers;
* ``dir_oracle``: DIR at the threshold set on the strangers themselves at ``far`` (an optimistic bound, for
  comparison with figures measured that way).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from facekd.data.labeled import split_datasets
from facekd.gallery import (best_impostor_scores, calibrate, dir_far, empirical_threshold, false_accept_rate,
                            leave_one_person_out_scores, normalize, person_scores)
from facekd.runs import atomic_path

__all__ = ["Embed", "first_k", "gallery_figures", "protocol_embeddings", "save_embeddings",
           "load_embeddings", "teacher_agreement", "agreement_table"]

log = logging.getLogger(__name__)

Embed = Callable[[torch.Tensor], np.ndarray]  # uint8 N x 3 x S x S images -> N x D embeddings


def first_k(labels: np.ndarray, k: int) -> np.ndarray:
    """Indices of the first ``k`` items of each label, in order."""
    seen: dict[int, int] = {}
    keep = []
    for i, y in enumerate(np.asarray(labels).tolist()):
        if seen.get(y, 0) < k:
            keep.append(i)
            seen[y] = seen.get(y, 0) + 1
    return np.asarray(keep, dtype=np.int64)


def protocol_embeddings(embed: Embed, data: Any, impostors: torch.Tensor | None = None
                        ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{part: (unit embeddings, labels)}`` of every part the protocol uses (plus ``synthetic`` impostors)."""
    parts = ("train", "val", "test", "enroll", "enroll_query", "strangers")
    sets = split_datasets(data, parts, augment_train=False)
    out = {}
    for part in parts:
        x, y = sets[part].tensors()
        out[part] = (normalize(embed(x)) if len(y) else np.zeros((0, 1), np.float32), y.numpy())
    if impostors is not None and len(impostors):
        out["synthetic"] = (normalize(embed(impostors)), np.zeros(len(impostors), np.int64))
    return out


def save_embeddings(emb: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Any) -> None:
    """The protocol's embeddings (:func:`protocol_embeddings`) as one ``.npz``, written atomically."""
    arrays = {}
    for part, (e, y) in emb.items():
        arrays[f"{part}__emb"], arrays[f"{part}__labels"] = e, y
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_embeddings(path: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What :func:`save_embeddings` wrote."""
    with np.load(path, allow_pickle=False) as z:
        parts = sorted({k.split("__")[0] for k in z.files})
        return {p: (z[f"{p}__emb"], z[f"{p}__labels"]) for p in parts}


def gallery_figures(emb: Mapping[str, tuple[np.ndarray, np.ndarray]], shots: Sequence[int] = (1, 2),
                    far: float = 0.01, calibration: str = "max") -> dict[str, dict[str, Any]]:
    """The protocol's figures for each k in ``shots`` (``{"k1": {...}, "k2": {...}}``; see the module doc)."""
    (etr, ytr), (eva, yva), (ete, yte) = emb["train"], emb["val"], emb["test"]
    (een, yen), (eq, yq), (est, _) = emb["enroll"], emb["enroll_query"], emb["strangers"]
    n_trained = int(max(ytr.max(initial=-1), yva.max(initial=-1), yte.max(initial=-1)) + 1)
    n_people = n_trained + int(yen.max(initial=-1) + 1)
    synthetic = emb.get("synthetic", (None, None))[0]
    out: dict[str, dict[str, Any]] = {}
    for k in shots:
        a, b = first_k(ytr, k), first_k(yen, k)
        gal = np.concatenate([etr[a], een[b]])
        owners = np.concatenate([ytr[a], yen[b] + n_trained])
        val_acc = {t: float((person_scores(eva, gal, owners, n_people, t).argmax(1) == yva).mean())
                   for t in ("mean", "all")}
        template = "all" if val_acc["all"] > val_acc["mean"] else "mean"

        def scores(q: np.ndarray) -> np.ndarray:
            return person_scores(q, gal, owners, n_people, template)

        s_te, s_q, s_st = scores(ete), scores(eq), scores(est)
        lopo = leave_one_person_out_scores(gal, owners, n_people, template)
        syn = best_impostor_scores(synthetic, gal, owners, n_people, template) if synthetic is not None else None
        cal = calibrate(far, synthetic=syn, enrolled=lopo, method=calibration)
        known = np.concatenate([s_te, s_q])
        labels = np.concatenate([yte, yq + n_trained])
        at = dir_far(known, labels, s_st, cal["value"])
        strangers_best = s_st.max(1)
        oracle_t = empirical_threshold(strangers_best, far)
        oracle = dir_far(known, labels, s_st, oracle_t)
        sources = {src: {"threshold": cal[src]["threshold"], "n": cal[src]["n"],
                         "far_on_strangers": false_accept_rate(strangers_best, cal[src]["threshold"]),
                         "dir": dir_far(known, labels, s_st, cal[src]["threshold"])["dir"]}
                   for src in ("synthetic", "enrolled") if src in cal}
        out[f"k{k}"] = {
            "shots": int(k), "template": template, "val_accuracy": val_acc,
            "trained_accuracy": float((s_te.argmax(1) == yte).mean()),
            "enrolled_accuracy": float((s_q.argmax(1) == yq + n_trained).mean()) if len(yq) else float("nan"),
            "dir": at["dir"], "far": at["far"], "threshold": cal["value"], "far_target": float(far),
            "calibration": calibration, "sources": sources,
            "dir_oracle": oracle["dir"], "threshold_oracle": float(oracle_t),
            "n": {"people": n_people, "trained": n_trained, "gallery_photos": int(len(gal)),
                  "trained_queries": int(len(yte)), "enrolled_queries": int(len(yq)), "strangers": int(len(est)),
                  "synthetic": int(len(synthetic)) if synthetic is not None else 0}}
    return out


def teacher_agreement(student: Mapping[str, tuple[np.ndarray, np.ndarray]],
                      teacher: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """How much of the teacher's face space a student carries to people it never saw.

    ``r2_unseen``: R² of a linear map from the student's embedding to the teacher's, fitted (ridge) on the trained
    people's photos (ridge regression, its penalty chosen by leave-one-out on those photos: scikit-learn's RidgeCV)
    and scored on the enrolled-only people's photos; ``r2_trained``: the same map scored where it
    was fitted; ``similarity_corr``: the correlation between the student's and the teacher's cosine similarities of
    every pair of the enrolled-only people's photos (1 = the same neighbourhoods).
    """
    fit, unseen = ("train", "val", "test"), ("enroll", "enroll_query")
    xs, xt = (np.concatenate([e[p][0] for p in fit]).astype(np.float64) for e in (student, teacher))
    us, ut = (np.concatenate([e[p][0] for p in unseen]).astype(np.float64) for e in (student, teacher))
    from sklearn.linear_model import RidgeCV

    model = RidgeCV(alphas=np.logspace(-4, 3, 15)).fit(xs, xt)

    def r2(x: np.ndarray, y: np.ndarray) -> float:
        return float(1 - ((y - model.predict(x)) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())

    iu = np.triu_indices(len(us), 1)
    ss, st = (normalize(u) @ normalize(u).T for u in (us, ut))
    return {"r2_trained": r2(xs, xt), "r2_unseen": r2(us, ut),
            "similarity_corr": float(np.corrcoef(ss[iu], st[iu])[0, 1])}


def agreement_table(results_json: str, teacher_row: str = "teacher_probe") -> str:
    """:func:`teacher_agreement` of every row of a comparison's ``results.json`` (enroll protocol), mean ± std over
    seeds, as a markdown table."""
    import json
    from pathlib import Path

    results = json.loads(Path(results_json).read_text())["results"]
    teacher = load_embeddings(Path(results[teacher_row][0]["run_dir"]) / "gallery_embeddings.npz")
    lines = ["| row | seeds | R² to the teacher, trained people | R² to the teacher, unseen people | "
             "pair-similarity correlation, unseen people |", "|---|---|---|---|---|"]
    for row, seeds in results.items():
        if row == teacher_row:
            continue
        figs = [teacher_agreement(load_embeddings(Path(r["run_dir"]) / "gallery_embeddings.npz"), teacher)
                for r in seeds]
        cells = [f"{np.mean([f[k] for f in figs]):.3f} ± {np.std([f[k] for f in figs]):.3f}"
                 for k in ("r2_trained", "r2_unseen", "similarity_corr")]
        lines.append(f"| {row} | {len(figs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="How much of the teacher's face space each row of an enroll-"
                                                 "protocol comparison carries to unseen people.")
    parser.add_argument("results_json", help="the comparison's results.json (data=orl_enroll)")
    parser.add_argument("--teacher-row", default="teacher_probe")
    args = parser.parse_args()
    print(agreement_table(args.results_json, args.teacher_row))
