"""A gallery of enrolled people: L2-normalised face embeddings, matched by cosine, with a rejection threshold.

A :class:`Gallery` holds every enrolled photo's embedding (unit rows), whose person each one is, the photo it
came from, and the sha256 of the embedder that made them, so embeddings of two models are never compared.
People are added and removed without training (:meth:`Gallery.add`, :meth:`Gallery.remove`).

Matching (``template``):

* ``mean``: a person is the normalised mean of their photos' embeddings; a face scores the cosine to it;
* ``all``: a face scores its best cosine over the person's photos.

:func:`identify_scores` names each face by its best-scoring person and calls it unknown below the threshold.

The threshold is set at a requested false-accept rate (FAR: the share of strangers accepted as *someone*)
**without spending any of the user's people** (:func:`calibrate`):

* ``synthetic``: impostor faces that are no enrolled person (synthetic faces from the generate stage); each
  one's best score against the gallery is an impostor score, and the threshold is the empirical quantile;
* ``enrolled``: leave one person out: each enrolled photo is matched against the gallery without its own
  person; a normal fit of those best scores gives the tail at the requested FAR (there are few of them);
* ``max``: the stricter of the two (the default when both are available).

The file (:meth:`Gallery.save`, :meth:`Gallery.load`) is one ``.npz`` without pickles, written atomically,
with a sha256 over its content that is checked on every load.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Mapping, Sequence

import numpy as np

from facekd import gallery_index
from facekd.errors import ArtifactError, ConfigError
from facekd.gallery_index import EXACT_MAX
from facekd.openset import calibrate_threshold, check_far
from facekd.runs import atomic_path

__all__ = ["FORMAT", "TEMPLATES", "ON_EXISTS", "CALIBRATIONS", "Gallery", "normalize", "person_scores",
           "identify_scores", "best_impostor_scores", "leave_one_person_out_scores", "empirical_threshold",
           "normal_threshold", "calibrate", "check_threshold", "false_accept_rate", "dir_far"]

FORMAT = 1
TEMPLATES = ("mean", "all")
ON_EXISTS = ("refuse", "merge", "replace")
CALIBRATIONS = ("max", "synthetic", "enrolled")


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); an all-zero row stays zero."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be N x D, got shape {x.shape}")
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def check_threshold(value: Any, key: str) -> float:
    """A cosine threshold: a number in [-1, 1]; anything else is a :class:`ConfigError` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)) \
            or not -1.0 <= float(value) <= 1.0:
        raise ConfigError(f"{key} must be a cosine similarity in [-1, 1], got {value!r}; e.g. {key}=0.45, or leave "
                          "it unset to use the threshold the gallery was calibrated with")
    return float(value)


def person_scores(queries: np.ndarray, embeddings: np.ndarray, owners: np.ndarray, n_people: int,
                  template: str = "mean") -> np.ndarray:
    """N x P cosine scores of unit ``queries`` against each person (``template``: ``mean`` or ``all``).

    ``embeddings`` (M x D, unit rows) belong to person ``owners[m]`` in ``0..n_people-1``; a person without
    photos scores -inf.
    """
    q = normalize(queries)
    e = normalize(embeddings) if len(embeddings) else np.zeros((0, q.shape[1]), np.float32)
    owners = np.asarray(owners, dtype=np.int64)
    out = np.full((len(q), n_people), -np.inf, dtype=np.float32)
    if template == "mean":
        sums = np.zeros((n_people, e.shape[1]), dtype=np.float64)
        np.add.at(sums, owners, e)
        has = np.bincount(owners, minlength=n_people) > 0
        out[:, has] = q @ normalize(sums[has]).T
    elif template == "all":
        sims = q @ e.T
        for p in np.unique(owners):
            out[:, p] = sims[:, owners == p].max(axis=1)
    else:
        raise ConfigError(f"gallery template must be one of {', '.join(TEMPLATES)}, got {template!r}")
    return out


def identify_scores(scores: np.ndarray, threshold: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(best person, its score, known)`` per row of N x P scores; known = score >= threshold (all when None)."""
    s = np.asarray(scores)
    if s.ndim != 2 or s.shape[1] == 0:
        raise ArtifactError("the gallery is empty: enroll at least one person first (python scripts/enroll.py "
                            "enroll.people=FOLDER)")
    best = s.argmax(axis=1)
    score = s[np.arange(len(s)), best]
    known = np.ones(len(s), bool) if threshold is None else score >= threshold
    return best, score, known


def best_impostor_scores(impostors: np.ndarray, embeddings: np.ndarray, owners: np.ndarray, n_people: int,
                         template: str = "mean") -> np.ndarray:
    """Each impostor face's best score against the gallery (what a threshold must stay above)."""
    if not len(impostors):
        return np.zeros(0, np.float32)
    return person_scores(impostors, embeddings, owners, n_people, template).max(axis=1)


def leave_one_person_out_scores(embeddings: np.ndarray, owners: np.ndarray, n_people: int,
                                template: str = "mean") -> np.ndarray:
    """Each enrolled photo's best score against the gallery *without its own person*: impostor scores made from
    the enrolled people alone.  Needs at least two people."""
    owners = np.asarray(owners, dtype=np.int64)
    if len(np.unique(owners)) < 2:
        return np.zeros(0, np.float32)
    s = person_scores(embeddings, embeddings, owners, n_people, template)
    s[np.arange(len(s)), owners] = -np.inf
    return s.max(axis=1)


def empirical_threshold(impostor_scores: np.ndarray, far: float) -> float:
    """The lowest threshold that accepts at most ``floor(far * n)`` of the n impostor scores."""
    return calibrate_threshold(np.asarray(impostor_scores, dtype=np.float64), far)


def normal_threshold(impostor_scores: np.ndarray, far: float) -> float:
    """The ``1 - far`` quantile of a normal fitted to the impostor scores after Fisher's z transform
    (``arctanh``: cosines are bounded by 1, their z is not), for few scores, where the empirical quantile cannot
    reach ``far``; never below their maximum when ``far * n < 1``."""
    s = np.asarray(impostor_scores, dtype=np.float64)
    if len(s) < 2:
        raise ConfigError("leave-one-person-out calibration needs at least two enrolled photos of two people")
    z = np.arctanh(np.clip(s, -1 + 1e-7, 1 - 1e-7))
    t = float(np.tanh(z.mean() + NormalDist().inv_cdf(1.0 - far) * max(z.std(ddof=1), 1e-9)))
    if far * len(s) < 1:
        t = max(t, float(np.nextafter(s.max(), np.inf)))
    return min(t, 1.0)


def false_accept_rate(impostor_scores: np.ndarray, threshold: float) -> float:
    """The share of impostor scores at or above ``threshold``."""
    s = np.asarray(impostor_scores)
    return float((s >= threshold).mean()) if len(s) else float("nan")


def calibrate(far: float, *, synthetic: np.ndarray | None = None, enrolled: np.ndarray | None = None,
              method: str = "max") -> dict[str, Any]:
    """The threshold at false-accept rate ``far`` from impostor scores that spend none of the user's people.

    ``synthetic``: best scores of synthetic faces (:func:`best_impostor_scores`); ``enrolled``: leave-one-person-
    out scores (:func:`leave_one_person_out_scores`).  ``method``: ``synthetic``, ``enrolled`` or ``max`` (the
    stricter of those available).  Returns ``{"value", "far", "method", "synthetic", "enrolled"}`` with each
    source's own threshold and count.
    """
    far = check_far(far, "gallery far")
    if method not in CALIBRATIONS:
        raise ConfigError(f"gallery calibration must be one of {', '.join(CALIBRATIONS)}, got {method!r}")
    parts: dict[str, dict[str, Any]] = {}
    if synthetic is not None and len(synthetic) and method in ("max", "synthetic"):
        parts["synthetic"] = {"threshold": empirical_threshold(synthetic, far), "n": int(len(synthetic))}
    if enrolled is not None and len(enrolled) >= 2 and method in ("max", "enrolled"):
        parts["enrolled"] = {"threshold": normal_threshold(enrolled, far), "n": int(len(enrolled))}
    if not parts:
        raise ConfigError(f"no impostor scores to calibrate the threshold with (calibration={method}): enroll at "
                          "least two people, or give synthetic faces (a generate run)")
    value = max(p["threshold"] for p in parts.values())
    return {"value": float(value), "far": far, "method": method, **parts}


def dir_far(known_scores: np.ndarray, known_labels: np.ndarray, stranger_scores: np.ndarray,
            threshold: float) -> dict[str, float]:
    """Open-set figures at ``threshold`` on N x P scores: ``dir`` (a known face accepted and named right),
    ``far`` (strangers accepted as anyone), ``accuracy`` (named right, ignoring the threshold)."""
    best, score, known = identify_scores(known_scores, threshold)
    right = best == np.asarray(known_labels)
    strangers = np.asarray(stranger_scores).max(axis=1) if len(stranger_scores) else np.zeros(0)
    return {"dir": float((right & known).mean()), "far": false_accept_rate(strangers, threshold),
            "accuracy": float(right.mean()), "threshold": float(threshold)}


# ------------------------------------------------------------------------------------------------ the file


@dataclass
class Gallery:
    """Enrolled people: unit embeddings (M x D), their owners (index into ``names``), source photos, the embedder."""

    embedder_sha256: str
    dim: int
    names: list[str] = field(default_factory=list)
    embeddings: np.ndarray = None  # type: ignore[assignment]
    owners: np.ndarray = None  # type: ignore[assignment]
    sources: list[str] = field(default_factory=list)
    template: str = "mean"
    threshold: dict[str, Any] | None = None
    embedder: dict[str, Any] = field(default_factory=dict)  # what made the embeddings (path, image size, framing)

    def __post_init__(self) -> None:
        self._version = 0  # bumped by every add and remove: what the cached search rows and index were made from
        self._cache: dict[str, tuple[Any, Any]] = {}
        if self.embeddings is None:
            self.embeddings = np.zeros((0, self.dim), np.float32)
        if self.owners is None:
            self.owners = np.zeros(0, np.int32)
        self.embeddings = np.asarray(self.embeddings, np.float32).reshape(-1, self.dim)
        self.owners = np.asarray(self.owners, np.int32)
        if self.template not in TEMPLATES:
            raise ConfigError(f"gallery template must be one of {', '.join(TEMPLATES)}, got {self.template!r}")

    def __len__(self) -> int:
        return len(self.names)

    def people(self) -> list[tuple[str, int]]:
        """``[(name, photos enrolled)]`` in enrolment order."""
        counts = np.bincount(self.owners, minlength=len(self.names))
        return [(n, int(c)) for n, c in zip(self.names, counts)]

    def add(self, name: str, embeddings: np.ndarray, sources: Sequence[str], on_exists: str = "refuse") -> str:
        """Enroll ``name`` with N x D embeddings of N photos; returns ``added``, ``merged`` or ``replaced``.

        A name already enrolled is refused (``on_exists=refuse``), gets the new photos beside its old ones
        (``merge``) or has its photos replaced (``replace``).  A photo already enrolled for that person (same
        source) is not added twice.
        """
        if on_exists not in ON_EXISTS:
            raise ConfigError(f"on_exists must be one of {', '.join(ON_EXISTS)}, got {on_exists!r}")
        e = normalize(embeddings)
        if e.shape[1] != self.dim:
            raise ArtifactError(f"embeddings of {name!r} are {e.shape[1]}-d, the gallery holds {self.dim}-d ones")
        if len(e) != len(sources):
            raise ValueError("one source per embedding")
        if not len(e):
            raise ConfigError(f"no photo of {name!r} to enroll")
        how = "added"
        if name in self.names:
            if on_exists == "refuse":
                raise ConfigError(f"{name!r} is already enrolled ({self.people()[self.names.index(name)][1]} photos); "
                                  "set enroll.on_exists=merge to add these photos to theirs, or enroll.on_exists="
                                  "replace to enroll them from these photos only")
            if on_exists == "replace":
                self.remove(name)
                how = "replaced"
            else:
                how = "merged"
        if name not in self.names:
            self.names.append(name)
        p = self.names.index(name)
        have = {s for s, o in zip(self.sources, self.owners) if o == p}
        keep = [i for i, s in enumerate(sources) if s not in have]
        self.embeddings = np.concatenate([self.embeddings, e[keep]])
        self.owners = np.concatenate([self.owners, np.full(len(keep), p, np.int32)])
        self.sources += [str(sources[i]) for i in keep]
        self._version += 1
        return how

    def remove(self, name: str) -> int:
        """Remove ``name`` and every photo of theirs; returns how many photos went.  An unknown name is refused."""
        if name not in self.names:
            raise ConfigError(f"{name!r} is not enrolled; enrolled: {', '.join(self.names[:20]) or 'nobody'}")
        p = self.names.index(name)
        keep = self.owners != p
        gone = int((~keep).sum())
        self.embeddings, self.sources = self.embeddings[keep], [s for s, k in zip(self.sources, keep) if k]
        owners = self.owners[keep]
        self.owners = np.where(owners > p, owners - 1, owners).astype(np.int32)
        del self.names[p]
        self._version += 1
        return gone

    def _cached(self, name: str, make: Any) -> Any:
        """``make()``, computed once per state of the gallery (its template and its add/remove count)."""
        key = (self.template, self._version)
        if name not in self._cache or self._cache[name][0] != key:
            self._cache[name] = (key, make())
        return self._cache[name][1]

    def search_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, their person)`` a face is matched against: one normalised mean per person (``mean``) or
        every photo (``all``)."""
        if self.template == "all":
            return self.embeddings, self.owners.astype(np.int64)

        def means() -> tuple[np.ndarray, np.ndarray]:
            sums = np.zeros((len(self.names), self.dim), dtype=np.float64)
            np.add.at(sums, self.owners, self.embeddings)
            return normalize(sums), np.arange(len(self.names), dtype=np.int64)

        return self._cached("rows", means)

    def index(self) -> Any:
        """The search index over :meth:`search_rows` (:func:`facekd.gallery_index.build_index`: exact up to
        ``EXACT_MAX`` rows, HNSW beyond), built once per state of the gallery."""
        return self._cached("index", lambda: gallery_index.build_index(self.search_rows()[0],
                                                                        exact_max=gallery_index.EXACT_MAX))

    def best(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(best person, score)`` of each query: by the full score matrix up to ``EXACT_MAX`` rows, by the
        search index beyond (a million faces answer in milliseconds)."""
        if not len(self.names):
            identify_scores(np.zeros((len(queries), 0)), None)  # the empty-gallery message
        rows, owners = self.search_rows()
        if len(rows) <= EXACT_MAX:
            best, score, _ = identify_scores(self.scores(queries), None)
            return best, score
        ids, score = self.index().search(normalize(queries), 1)
        return owners[ids[:, 0]], score[:, 0]

    def scores(self, queries: np.ndarray, template: str | None = None) -> np.ndarray:
        """N x P cosine scores of ``queries`` against every enrolled person."""
        return person_scores(queries, self.embeddings, self.owners, len(self.names), template or self.template)

    def identify(self, queries: np.ndarray, threshold: float | None = None) -> list[tuple[str, float, bool]]:
        """``[(best person, score, known)]`` per query; ``threshold`` None uses the calibrated one (or none)."""
        t = threshold if threshold is not None else (self.threshold or {}).get("value")
        best, score = self.best(queries)
        known = np.ones(len(score), bool) if t is None else score >= t
        return [(self.names[b], float(s), bool(k)) for b, s, k in zip(best, score, known)]

    def impostor_scores(self, impostors: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The impostor scores :func:`calibrate` takes: ``enrolled`` (leave one person out) and ``synthetic``."""
        if len(self.search_rows()[0]) > EXACT_MAX:
            return self._impostor_scores_by_index(impostors)
        out = {"enrolled": leave_one_person_out_scores(self.embeddings, self.owners, len(self.names), self.template)}
        if impostors is not None:
            out["synthetic"] = best_impostor_scores(impostors, self.embeddings, self.owners, len(self.names),
                                                    self.template)
        return out

    def _impostor_scores_by_index(self, impostors: np.ndarray | None, sample: int = 5000, k: int = 16
                                  ) -> dict[str, np.ndarray]:
        """:meth:`impostor_scores` for a large gallery: a seeded sample of enrolled photos, each scored by its
        best search hit of another person among the top ``k``."""
        rows, owners = self.search_rows()
        pick = np.random.default_rng(0).permutation(len(self.embeddings))[:sample]
        ids, scores = self.index().search(self.embeddings[pick], k)
        other = (ids >= 0) & (owners[np.maximum(ids, 0)] != self.owners[pick, None])
        lopo = np.where(other, scores, -np.inf).max(axis=1)
        out = {"enrolled": lopo[np.isfinite(lopo)].astype(np.float32)}
        if impostors is not None and len(impostors):
            out["synthetic"] = self.index().search(normalize(impostors), 1)[1][:, 0]
        return out

    # -- file

    def _meta(self) -> dict[str, Any]:
        return {"format": FORMAT, "embedder_sha256": self.embedder_sha256, "dim": self.dim, "names": self.names,
                "sources": self.sources, "template": self.template, "threshold": self.threshold,
                "embedder": self.embedder}

    def _checksum(self, meta: Mapping[str, Any]) -> str:
        h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
        h.update(np.ascontiguousarray(self.embeddings, "<f4").tobytes())
        h.update(np.ascontiguousarray(self.owners, "<i4").tobytes())
        return h.hexdigest()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the gallery to ``path`` (``.npz``) atomically, with its checksum."""
        meta = self._meta()
        meta["sha256"] = self._checksum(self._meta())
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, embeddings=np.ascontiguousarray(self.embeddings, "<f4"),
                     owners=np.ascontiguousarray(self.owners, "<i4"), meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, embedder_sha256: str | None = None) -> "Gallery":
        """Read and check a gallery file; with ``embedder_sha256``, refuse one built with another embedder."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise ArtifactError(f"gallery {path} does not exist; build it with `python scripts/enroll.py "
                                f"enroll.gallery={path} enroll.model=RUN enroll.people=FOLDER`")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                g = cls(embedder_sha256=meta["embedder_sha256"], dim=int(meta["dim"]), names=list(meta["names"]),
                        embeddings=z["embeddings"], owners=z["owners"], sources=list(meta["sources"]),
                        template=meta["template"], threshold=meta.get("threshold"), embedder=meta.get("embedder") or {})
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as e:
            raise ArtifactError(f"gallery {path} is damaged ({type(e).__name__}: {e}); enroll the people again into a "
                                "new gallery file") from e
        if meta.get("format") != FORMAT:
            raise ArtifactError(f"gallery {path} has format {meta.get('format')!r}, this facekd reads {FORMAT}")
        if g._checksum(g._meta()) != meta.get("sha256"):
            raise ArtifactError(f"gallery {path} is damaged: its content does not match its recorded sha256; enroll "
                                "the people again into a new gallery file")
        if len(g.owners) != len(g.embeddings) or len(g.sources) != len(g.embeddings) or \
                (len(g.owners) and not 0 <= g.owners.min() <= g.owners.max() < len(g.names)):
            raise ArtifactError(f"gallery {path} is damaged: its photos and people do not line up")
        if embedder_sha256 is not None and embedder_sha256 != g.embedder_sha256:
            raise ArtifactError(
                f"gallery {path} was built with another embedder (sha256 {g.embedder_sha256[:12]}…, "
                f"{g.embedder.get('path', 'unknown path')}), but this model's embedder is {embedder_sha256[:12]}…: "
                "embeddings of two models cannot be compared. Use the model the gallery was built with, or enroll "
                "the people again with this model into a new gallery file")
        return g
