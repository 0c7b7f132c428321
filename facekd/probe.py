"""Is the teacher a face teacher?  Few-shot probes on frozen features of the embedded ORL faces.

For each split seed, ``per_class`` images per identity are the training set and all the others the test
set (drawn by :func:`facekd.data.splits.make_split`).  Two probes are fitted on frozen features:

* nearest class mean (cosine), :func:`facekd.metrics.nearest_class_mean_predict`;
* a logistic-regression linear probe (scikit-learn, features standardised on the training images).

The same probes run on the backbone features of a random-init student, which is what a face teacher
has to beat clearly.  ``python scripts/probe_teacher.py`` prints the table and writes it as JSON.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from facekd.data.datasets import load_images
from facekd.data.faces import FaceSet, load_orl
from facekd.data.splits import SplitProtocol, make_split
from facekd.metrics import nearest_class_mean_predict
from facekd.modelcard import markdown_table
from facekd.models import build_student, build_teacher
from facekd.runs import write_json

__all__ = ["extract_features", "few_shot_probe", "probe_teacher"]


@torch.no_grad()
def extract_features(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 16,
                     desc: str = "features") -> np.ndarray:
    """Apply ``fn`` (uint8 batch -> features) to ``images`` in batches; returns N x D float32 (maps flattened)."""
    out = [fn(images[i:i + batch_size]).float().flatten(1).cpu()
           for i in tqdm(range(0, len(images), batch_size), desc=desc, leave=False)]
    return torch.cat(out).numpy()


def few_shot_probe(feats: np.ndarray, faces: FaceSet, per_class: int, seed: int) -> dict[str, float]:
    """Nearest-class-mean and logistic-regression accuracy on one few-shot split of ``faces``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    split = make_split(faces, SplitProtocol(per_class=per_class, val=0, test=None, seed=seed))
    index = {p: i for i, p in enumerate(faces.paths)}
    tr = np.array([index[p] for p, _ in split.train])
    te = np.array([index[p] for p, _ in split.test])
    ytr = np.array([y for _, y in split.train])
    yte = np.array([y for _, y in split.test])
    ncm = float((nearest_class_mean_predict(feats[tr], ytr, feats[te]) == yte).mean())
    scaler = StandardScaler().fit(feats[tr])
    clf = LogisticRegression(max_iter=5000, C=1.0).fit(scaler.transform(feats[tr]), ytr)
    logreg = float((clf.predict(scaler.transform(feats[te])) == yte).mean())
    return {"ncm": ncm, "logreg": logreg, "n_train": int(len(tr)), "n_test": int(len(te))}


def _summary(name: str, feature: str, dim: int, per_seed: list[dict]) -> dict:
    row = {"network": name, "feature": feature, "dim": dim, "seeds": per_seed}
    for k in ("ncm", "logreg"):
        v = np.array([r[k] for r in per_seed])
        row[k] = float(v.mean())
        row[f"{k}_std"] = float(v.std())
    return row


def probe_teacher(cfg) -> list[dict]:
    """Run the few-shot probes of the ``probe_teacher`` config; print a markdown table, write ``probe/<teacher>.json``."""
    p = cfg.probe
    faces = load_orl()
    images = torch.from_numpy(load_images(faces.root, faces.paths, int(p.image_size), str(p.framing), progress=True))
    images = images.permute(0, 3, 1, 2).contiguous()
    seeds: Sequence[int] = list(p.seeds)
    teacher_cfg = dict(cfg.teacher)
    rows = []
    for feature in list(p.features) if p.get("features") else [teacher_cfg.get("feature")]:
        teacher = build_teacher({**teacher_cfg, "feature": feature} if feature else teacher_cfg)
        feats = extract_features(teacher.features, images, int(p.batch_size), f"{teacher.name}/{teacher.feature}")
        rows.append(_summary(f"{teacher.name} (teacher)", teacher.feature, feats.shape[1],
                             [few_shot_probe(feats, faces, int(p.per_class), s) for s in seeds]))
    base = dict(p.baseline)
    for size in list(p.baseline_sizes):
        per_seed = []
        for s in seeds:
            torch.manual_seed(s)
            student = build_student({**base, "input_size": int(size)}, out_dim=128).eval()
            feats = extract_features(lambda x: student.backbone_features(student.preprocess(x)), images,
                                     int(p.batch_size), f"random {base['name']} {size}px")
            per_seed.append(few_shot_probe(feats, faces, int(p.per_class), s))
        rows.append(_summary(f"{base['name']} random init, {size} px", "backbone", student.feature_dim, per_seed))
    table = markdown_table(
        [{**r, "ncm_s": f"{100 * r['ncm']:.1f} ± {100 * r['ncm_std']:.1f}",
          "logreg_s": f"{100 * r['logreg']:.1f} ± {100 * r['logreg_std']:.1f}"} for r in rows],
        [("network", "network", ""), ("feature", "feature", ""), ("dim", "dim", ""),
         ("ncm_s", f"nearest class mean, % ({p.per_class}-shot, seeds {list(seeds)})", ""),
         ("logreg_s", "logistic regression, %", "")])
    print(f"ORL, {p.per_class} train images per identity, the rest test ({rows[0]['seeds'][0]['n_test']} images):")
    print(table)
    out = Path(cfg.paths.root) / "probe" / f"{teacher_cfg['name']}.json"
    write_json(out, {"dataset": faces.name, "per_class": int(p.per_class), "seeds": seeds, "rows": rows})
    print(f"written {out}")
    return rows
