"""1:N watch-list accuracy of facewatch beside the face_recognition/dlib pipeline (the peer).

Protocol (issue 5): ``../shared/data/celeba``: 100 identities; the first image of each is
enrolled, the rest are mated probes. Every image of ``../shared/data/lfw`` is a non-mated
probe (no identity is in both). One search per image: its largest face. Probes with no face
or a face rejected by the quality gates count as misses (mated) or non-alarms (non-mated).

Pipelines, run on the same images in the same run:
- facewatch: MTCNN -> five-point similarity alignment -> quality gates -> dlib ResNet read by
  our own reader (``pipelines/``), cosine similarity; default threshold from the backend.
- peer: face_recognition's default pipeline rebuilt from ``dlib`` (dlib-bin): HOG detector
  (one upsample), 5-point shape predictor, ``compute_face_descriptor`` (150 px chip, padding
  0.25, no jitter); score = -L2 distance, default threshold distance 0.6.

Stages (each cached under ``benchmarks/results/accuracy-cache/`` as .npz, never pickle, so
levers are re-scored without running MTCNN again; delete the folder to recompute):
- ``extract``: faces and embeddings of every image, for both pipelines (several minutes
  per pipeline on two cores; run them in parallel with ``--part facewatch`` and ``--part
  peer`` in two processes);
- ``levers``: re-embeddings of the same facewatch faces with other templates and flip
  averaging;
- ``score``: the tables and ``benchmarks/results/bench_accuracy.json``, with the archive
  search's track rule (``search.top_n``) scored on stand-in tracks (``track_rules``).

Run everything: ``.venv/bin/python benchmarks/bench_accuracy.py`` (``--help`` for stages).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pipelines.embedders.backends import DlibResnetEmbedder  # noqa: E402
from pipelines.evaluation import identification as ident  # noqa: E402
from pipelines.evaluation import watchlist as wl  # noqa: E402
from pipelines.evaluation.faces import ImageFaces, identity_images  # noqa: E402
from pipelines.evaluation.outputs import plot_det  # noqa: E402

logger = logging.getLogger("bench_accuracy")
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
CACHE = RESULTS / "accuracy-cache"
PEER_THRESHOLD = -0.6  # face_recognition's default: same person when L2 distance <= 0.6


# ------------------------------------------------------------------------------ image sets


def image_sets(data: Path, limit: int | None = None) -> dict[str, list[Path]]:
    """``{"celeba": paths, "lfw": paths}``, identity-sorted; ``limit`` images per set."""
    out = {}
    for name in ("celeba", "lfw"):
        paths = [p for ps in identity_images(data / name).values() for p in ps]
        out[name] = paths[:limit] if limit else paths
    return out


def all_paths(sets: dict[str, list[Path]]) -> list[Path]:
    return sets["celeba"] + sets["lfw"]


def progress_printer(label: str, every: int = 256):
    t0 = time.perf_counter()
    last = {"at": -every}

    def progress(stage: str, done: int, total: int) -> None:
        if done - last["at"] >= every or done == total:
            last["at"] = done
            rate = done / max(time.perf_counter() - t0, 1e-9)
            print(f"[{label}] {stage} {done}/{total} ({rate:.1f} img/s)", flush=True)

    return progress


# ------------------------------------------------------------------------------ extract


def extract_facewatch(paths: list[Path], out: Path, threads: int) -> None:
    from pipelines.config import Settings
    from pipelines.engine import FaceEngine, set_torch_threads
    from pipelines.evaluation.faces import extract_faces

    set_torch_threads(threads)
    engine = FaceEngine(Settings(), device="cpu").load(warmup=False)
    t0 = time.perf_counter()
    faces = extract_faces(
        engine.detector, engine.embedder, engine.gate, paths, 32, progress_printer("facewatch")
    )
    faces.save(
        out,
        embedder=engine.info.key,
        seconds=np.float64(time.perf_counter() - t0),
        default_threshold=np.float64(engine.embedder.default_threshold),
    )
    print(f"wrote {out}")


def dlib_models():
    import dlib
    import face_recognition_models

    models = Path(face_recognition_models.__file__).parent / "models"
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat")),
        dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat")),
    )


def extract_peer(paths: list[Path], out: Path, shard: tuple[int, int] = (0, 1)) -> None:
    """face_recognition's default pipeline on each image's largest HOG face.

    ``shard=(i, k)``: only rows i, i+k, i+2k, ... (the others stay empty); run k shards in
    parallel processes and merge them with ``merge_peer``."""
    import dlib
    from derive_templates import dlib_chip_matrix

    from pipelines.images import load_image

    hog, shape_predictor, resnet = dlib_models()
    n = len(paths)
    found = np.zeros(n, bool)
    n_faces = np.zeros(n, np.int32)
    boxes = np.zeros((n, 4), np.float32)
    points = np.zeros((n, 5, 2), np.float32)
    chip = np.zeros((n, 2, 3), np.float64)
    desc = np.zeros((n, 128), np.float32)
    progress = progress_printer("peer")
    t0 = time.perf_counter()
    rows = range(shard[0], n, shard[1])
    for done, i in enumerate(rows, 1):
        img = load_image(paths[i])
        rects = hog(img, 1)
        n_faces[i] = len(rects)
        if rects:
            rect = max(rects, key=lambda r: r.area())
            shape = shape_predictor(img, rect)
            found[i] = True
            boxes[i] = (rect.left(), rect.top(), rect.right(), rect.bottom())
            points[i] = [(p.x, p.y) for p in shape.parts()]
            chip[i] = dlib_chip_matrix(dlib.get_face_chip_details(shape, 150, 0.25))
            desc[i] = np.asarray(resnet.compute_face_descriptor(img, shape, 1), np.float32)
        progress("faces", done, len(rows))
    np.savez_compressed(
        out,
        paths=np.array([str(p) for p in paths]),
        found=found,
        n_faces=n_faces,
        boxes=boxes,
        points=points,
        chip=chip,
        descriptors=desc,
        seconds=np.float64(time.perf_counter() - t0),
        shard=np.array(shard),
    )
    print(f"wrote {out}")


def merge_peer(parts: list[Path], out: Path) -> None:
    """One peer cache from shard files (each holds rows i::k)."""
    merged: dict[str, np.ndarray] = {}
    seconds = 0.0
    for part in parts:
        with np.load(part) as z:
            i, k = (int(v) for v in z["shard"])
            if not merged:
                merged = {key: z[key].copy() for key in z.files if key not in ("seconds", "shard")}
            for key in merged:
                if key != "paths":
                    merged[key][i::k] = z[key][i::k]
            seconds += float(z["seconds"])
    np.savez_compressed(out, **merged, seconds=np.float64(seconds))
    print(f"wrote {out}")


# ------------------------------------------------------------------------------ levers


def lever_engine(threads: int, flip: bool = False):
    from pipelines.config import DlibResnetConfig, Settings
    from pipelines.engine import FaceEngine, set_torch_threads

    set_torch_threads(threads)
    settings = Settings(embedder=DlibResnetConfig(flip_average=flip))
    return FaceEngine(settings, device="cpu").load(warmup=False)


def dlib_geometry(paths: np.ndarray, rows: np.ndarray) -> dict:
    """dlib's HOG face and exact chip transform on ``rows`` (zeros elsewhere)."""
    import dlib
    from derive_templates import dlib_chip_matrix

    from pipelines.images import load_image

    hog, shape_predictor, _ = dlib_models()
    found = np.zeros(len(paths), bool)
    boxes = np.zeros((len(paths), 4))
    chip = np.zeros((len(paths), 2, 3))
    for i in rows:
        img = load_image(paths[i])
        rects = hog(img, 1)
        if rects:
            rect = max(rects, key=lambda r: r.area())
            shape = shape_predictor(img, rect)
            found[i] = True
            boxes[i] = (rect.left(), rect.top(), rect.right(), rect.bottom())
            chip[i] = dlib_chip_matrix(dlib.get_face_chip_details(shape, 150, 0.25))
    return {"found": found, "boxes": boxes, "chip": chip}


def derive_dlib_templates(faces: ImageFaces, peer: dict, rows: np.ndarray) -> dict:
    """MTCNN's landmarks where dlib's own chip puts them (``derive_templates.py``'s method):
    faces both pipelines found within 30 px, on ``rows`` (LFW images)."""
    from derive_templates import best_weights, mapped_mean, symmetrise

    both = rows[faces.found[rows] & peer["found"][rows]]
    centre_fw = (faces.boxes[both, :2] + faces.boxes[both, 2:]) / 2
    centre_dl = (peer["boxes"][both, :2] + peer["boxes"][both, 2:]) / 2
    close = both[np.linalg.norm(centre_fw - centre_dl, axis=1) <= 30]
    exact = symmetrise(mapped_mean(faces.landmarks[close], peer["chip"][close]))
    weights = best_weights(faces.landmarks[close[:800]], peer["chip"][close[:800]], exact)
    return {
        "n_faces": len(close),
        "dlib-chip": (exact, None),
        "dlib-chip-eyes": (exact, weights),
    }


def run_levers(args: argparse.Namespace, which: list[str]) -> None:
    """Re-embed the cached faces: flip averaging, and templates derived against dlib."""
    from pipelines.evaluation.faces import reembed

    faces, _ = ImageFaces.load(args.cache / "facewatch.npz")
    if "flip" in which and not (args.cache / "lever_flip.npz").exists():
        engine = lever_engine(args.threads, flip=True)
        emb = reembed(faces, engine.embedder, progress=progress_printer("flip"))
        np.savez_compressed(args.cache / "lever_flip.npz", embeddings=emb)
    if "templates" in which:
        lfw_rows = np.flatnonzero(np.char.find(faces.paths.astype(str), "/lfw/") >= 0)
        lfw_rows = lfw_rows[:: args.template_every]
        derived = derive_dlib_templates(faces, dlib_geometry(faces.paths, lfw_rows), lfw_rows)
        engine = lever_engine(args.threads)
        for name in args.templates.split(","):
            out = args.cache / f"lever_template_{name}.npz"
            if out.exists():
                continue
            template, weights = derived[name]
            emb = reembed(
                faces, engine.embedder, template, weights, progress=progress_printer(name)
            )
            np.savez_compressed(
                out,
                embeddings=emb,
                template=template,
                weights=np.ones(5) if weights is None else weights,
                n_faces=derived["n_faces"],
            )


# ------------------------------------------------------------------------------ scoring

LIST_SIZES = (10, 30, 100)


@dataclass
class Protocol:
    """Row i of every cache: its identity and whether it is a gallery (CelebA) image."""

    ids: np.ndarray  # (N,) str
    gallery: np.ndarray  # (N,) bool
    fold: np.ndarray  # (N,) int: LFW identity half (0/1) for cohort splits; -1 gallery

    @classmethod
    def from_paths(cls, paths: np.ndarray) -> Protocol:
        paths = [Path(p) for p in paths.astype(str)]
        ids = np.array([p.parent.name for p in paths])
        gallery = np.array([p.parent.parent.name == "celeba" for p in paths])
        lfw_ids = sorted(set(ids[~gallery]))
        half = {name: i % 2 for i, name in enumerate(lfw_ids)}
        fold = np.array([-1 if g else half[i] for i, g in zip(ids, gallery, strict=True)])
        return cls(ids, gallery, fold)


@dataclass
class System:
    """One pipeline's embeddings of every image, and how it compares them."""

    name: str
    embeddings: np.ndarray  # (N, D)
    usable: np.ndarray  # (N,) bool
    metric: str  # "cosine" or "l2" (score = -distance)
    default_threshold: float


@dataclass
class Scored:
    scores: ident.ScoreSet
    probe_rows: np.ndarray  # cache rows of the mated probes
    nonmated_rows: np.ndarray  # cache rows of the non-mated probes
    people: list[str]


def pairwise(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    dots = a.astype(np.float64) @ b.T.astype(np.float64)
    if metric == "cosine":
        return dots
    sq = (a.astype(np.float64) ** 2).sum(1)[:, None] + (b.astype(np.float64) ** 2).sum(1)[None]
    return -np.sqrt(np.maximum(sq - 2 * dots, 0))


def person_matrix(probes, entries, entry_person, n_people, metric) -> np.ndarray:
    """(n_probes, n_people): each person's best score over their enrolled images."""
    s = pairwise(probes, entries, metric)
    out = np.full((len(probes), n_people), -np.inf)
    for p in range(n_people):
        out[:, p] = s[:, entry_person == p].max(axis=1)
    return out


def score_system(sys_: System, proto: Protocol, enroll_per_id: int = 1) -> Scored:
    g = np.flatnonzero(proto.gallery)
    d = np.flatnonzero(~proto.gallery)
    split = wl.split_gallery(list(proto.ids[g]), sys_.usable[g], enroll_per_id)
    entry_rows = g[np.concatenate(split.enrol_rows)]
    entry_person = np.concatenate([np.full(len(r), i) for i, r in enumerate(split.enrol_rows)])
    probe_rows = g[split.probe_rows]
    n_people = len(split.people)
    emb = sys_.embeddings
    mated = person_matrix(emb[probe_rows], emb[entry_rows], entry_person, n_people, sys_.metric)
    nonmated = person_matrix(emb[d], emb[entry_rows], entry_person, n_people, sys_.metric)
    mated[~sys_.usable[probe_rows]] = -np.inf
    nonmated[~sys_.usable[d]] = -np.inf
    return Scored(ident.ScoreSet(mated, split.probe_person, nonmated), probe_rows, d, split.people)


def tail_offset(scores: np.ndarray, cohort: np.ndarray, k: int = 10) -> np.ndarray:
    """What ``watchlist calibrate --per-person`` does: minus each person's mean top-k
    cohort score (a shift only)."""
    return scores - np.sort(cohort, axis=0)[-k:].mean(axis=0)


def normalised(scored: Scored, proto: Protocol, fn=ident.cohort_normalise) -> Scored:
    """Per-person score normalisation with a cohort disjoint from the test distractors:
    LFW identities are split in two halves; non-mated probes of one half are normalised
    with statistics from the other half, and mated probe i with the half ``i % 2``'s."""
    s = scored.scores
    fold = proto.fold[scored.nonmated_rows]
    usable = np.isfinite(s.nonmated).all(axis=1)
    nonmated = np.empty_like(s.nonmated)
    mated = np.empty_like(s.mated)
    mated_fold = np.arange(len(s.mated)) % 2
    for f in (0, 1):
        cohort = s.nonmated[(fold != f) & usable]
        nonmated[fold == f] = fn(s.nonmated[fold == f], cohort)
        mated[mated_fold == f] = fn(s.mated[mated_fold == f], cohort)
    return Scored(
        ident.ScoreSet(mated, s.mated_person, nonmated),
        scored.probe_rows,
        scored.nonmated_rows,
        scored.people,
    )


def same_probes(scored: Scored, rows: np.ndarray) -> Scored:
    """Only the mated probes whose cache rows are in ``rows``."""
    keep = np.isin(scored.probe_rows, rows)
    s = scored.scores
    return Scored(
        ident.ScoreSet(s.mated[keep], s.mated_person[keep], s.nonmated),
        scored.probe_rows[keep],
        scored.nonmated_rows,
        scored.people,
    )


def lambs(scored: Scored, threshold: float, top: int = 3) -> dict:
    """Which enrolled people draw the false alarms at ``threshold``."""
    nm = scored.scores.nonmated
    alarm = nm.max(axis=1) >= threshold
    who = nm[alarm].argmax(axis=1)
    counts = np.bincount(who, minlength=nm.shape[1])
    order = np.argsort(-counts)[:top]
    return {
        "false_alarms": int(alarm.sum()),
        "people_with_alarms": int((counts > 0).sum()),
        "top": [{"person": scored.people[i], "alarms": int(counts[i])} for i in order if counts[i]],
    }


def describe(scored: Scored, default: float | None, unusable: dict) -> dict:
    s = scored.scores.searches()
    out = ident.summary(s, default)
    key = ident.target_key(1e-3)
    out["lambs_at_fpir_0.001"] = lambs(scored, out["threshold_at_fpir"][key] or np.inf)
    if default is not None:
        out["lambs_at_default"] = lambs(scored, default)
        out["list_sizes"] = ident.list_size_scaling(scored.scores, LIST_SIZES, default, 1e-3)
    out["unusable"] = unusable
    return ident.as_jsonable(out)


def unusable_counts(sys_: System, scored: Scored, reasons: np.ndarray | None) -> dict:
    out = {}
    for kind, rows in (("mated", scored.probe_rows), ("nonmated", scored.nonmated_rows)):
        bad = rows[~sys_.usable[rows]]
        if reasons is None:
            out[kind] = {"no_face": int(len(bad))}
        else:
            r, c = np.unique(reasons[bad], return_counts=True)
            out[kind] = {str(k): int(v) for k, v in zip(r, c, strict=True)}
    return out


def propose_default(scored: Scored, proto: Protocol, target: float = 1e-3) -> dict:
    """A default threshold chosen on one LFW half and checked on the other, both ways."""
    s = scored.scores.searches()
    fold = proto.fold[scored.nonmated_rows]
    folds = []
    for f in (0, 1):
        t = ident.threshold_for_fpir(s.nonmated_score[fold == f], target)
        held = ident.Rate(int((s.nonmated_score[fold != f] >= t).sum()), int((fold != f).sum()))
        folds.append({"chosen_on": f, "threshold": t, "held_out_fpir": held.to_dict()})
    proposed = float(np.ceil(max(x["threshold"] for x in folds) * 200) / 200)
    point = ident.at_threshold(s, proposed)
    return {
        "target_fpir": target,
        "folds": folds,
        "proposed": proposed,
        "at_proposed": point.to_dict(),
    }


# the shipped default, which the cache's (the threshold when it was extracted) may predate
SHIPPED_THRESHOLD = DlibResnetEmbedder.default_threshold
TRACK_LENGTHS = (3, 5, 8)
TRACK_TOP_N = (1, 2, 3)
TRACK_FALSE_RATES = (0.005, 0.01)


def track_rules(sys_: System, proto: Protocol, threshold: float, draws: int = 3) -> dict:
    """The archive search's track rule on stand-in tracks, for ``search.top_n`` 1, 2 and 3.

    A track's score for a person is the mean of its best ``top_n`` scores for them; the
    best person wins it when that is >= ``threshold``. Stand-in tracks are k usable images
    of one person: mated, k probe images of an enrolled CelebA person (one enrolment image
    each); non-mated, k images of one LFW person (``draws`` random draws each). The photos
    of one person vary more than the frames of one video track, so the rules differ more
    here than on video. Reported: false sightings (non-mated tracks that win) and found
    (mated tracks won by their person) at ``threshold``, and found at equal false rates.
    """
    rng = np.random.default_rng(0)
    g = np.flatnonzero(proto.gallery)
    split = wl.split_gallery(list(proto.ids[g]), sys_.usable[g], 1)
    entry_rows = g[np.concatenate(split.enrol_rows)]
    entry_person = np.arange(len(split.people))
    probe_rows = g[split.probe_rows]
    rows_all = np.flatnonzero(sys_.usable)
    scores = np.full((len(proto.ids), len(split.people)), -np.inf)
    scores[rows_all] = person_matrix(
        sys_.embeddings[rows_all],
        sys_.embeddings[entry_rows],
        entry_person,
        len(split.people),
        sys_.metric,
    )
    lfw = np.flatnonzero(~proto.gallery & sys_.usable)
    out: dict = {"threshold": threshold, "draws": draws, "lengths": {}}
    for k in TRACK_LENGTHS:
        tracks, truth = [], []
        for p in range(len(split.people)):
            rows = probe_rows[(split.probe_person == p) & sys_.usable[probe_rows]]
            if len(rows) >= k:
                tracks.append(rng.choice(rows, k, replace=False))
                truth.append(p)
        for who in np.unique(proto.ids[lfw]):
            rows = lfw[proto.ids[lfw] == who]
            for _ in range(draws if len(rows) >= k else 0):
                tracks.append(rng.choice(rows, k, replace=False))
                truth.append(-1)
        truth_arr = np.asarray(truth)
        mated = truth_arr >= 0
        per_n = {}
        ranked = np.stack([np.sort(scores[t], axis=0)[::-1] for t in tracks])  # (T, k, people)
        for n in TRACK_TOP_N:
            agg = ranked[:, :n].mean(axis=1)
            best, who = agg.max(axis=1), agg.argmax(axis=1)
            right = mated & (who == truth_arr)
            row = {
                "false_sightings": int((best[~mated] >= threshold).sum()),
                "found": float((right & (best >= threshold)).sum() / mated.sum()),
                "at_false_rate": {},
            }
            for rate in TRACK_FALSE_RATES:
                t = ident.threshold_for_fpir(best[~mated], rate)
                found = float((right & (best >= t)).sum() / mated.sum())
                row["at_false_rate"][str(rate)] = {"threshold": t, "found": found}
            per_n[str(n)] = row
        out["lengths"][str(k)] = {
            "mated": int(mated.sum()),
            "nonmated": int((~mated).sum()),
            "top_n": per_n,
        }
    return out


def print_track_rules(tr: dict) -> None:
    rates = [str(r) for r in TRACK_FALSE_RATES]
    print(
        f"\ntrack rule (search.top_n) on stand-in tracks of k photos, at {tr['threshold']:.3f} "
        "and at equal false-sighting rates:"
    )
    print(
        f"{'k':>3s} {'top_n':>5s} {'mated':>6s} {'nonm':>5s} {'false':>6s} {'found':>6s} "
        + " ".join(f"{'found@' + r:>12s}" for r in rates)
    )
    for k, v in tr["lengths"].items():
        for n, r in v["top_n"].items():
            at = " ".join(f"{_pct(r['at_false_rate'][x]['found']):>12s}" for x in rates)
            print(
                f"{k:>3s} {n:>5s} {v['mated']:6d} {v['nonmated']:5d} "
                f"{r['false_sightings']:6d} {_pct(r['found']):>6s} {at}"
            )


def load_systems(cache: Path) -> tuple[dict[str, System], Protocol, np.ndarray, dict]:
    faces, meta = ImageFaces.load(cache / "facewatch.npz")
    proto = Protocol.from_paths(faces.paths)
    default = float(meta["default_threshold"])
    fw = System("facewatch", faces.embeddings, faces.usable(), "cosine", default)
    systems = {"facewatch": fw, "facewatch, gates off": replace(fw, usable=faces.found)}
    extra = {"embedder": str(meta["embedder"]), "seconds_facewatch": float(meta["seconds"])}
    peer_path = cache / "peer.npz"
    if peer_path.exists():
        with np.load(peer_path) as z:
            if not np.array_equal(z["paths"], faces.paths):
                raise SystemExit("peer.npz and facewatch.npz cover different images")
            systems["peer"] = System("peer", z["descriptors"], z["found"], "l2", PEER_THRESHOLD)
            extra["seconds_peer"] = float(z["seconds"])
    for lever in sorted(cache.glob("lever_*.npz")):
        name = lever.stem.removeprefix("lever_").replace("_", " ")
        with np.load(lever) as z:
            systems[f"facewatch, {name}"] = replace(fw, embeddings=z["embeddings"])
            if "template" in z.files:
                extra[name] = {
                    "points": np.round(z["template"], 2).tolist(),
                    "weights": z["weights"].tolist(),
                }
    return systems, proto, faces.reason, extra


def run_score(args: argparse.Namespace) -> dict:
    systems, proto, reasons, extra = load_systems(args.cache)
    results: dict = {}
    scored_by: dict[str, Scored] = {}
    for name, sys_ in systems.items():
        scored = score_system(sys_, proto)
        scored_by[name] = scored
        r = reasons if name.startswith("facewatch") else None
        results[name] = describe(scored, sys_.default_threshold, unusable_counts(sys_, scored, r))
    for name in [n for n in systems if n in ("facewatch", "facewatch, flip", "peer")]:
        sys_ = systems[name]
        r = reasons if name.startswith("facewatch") else None
        three = score_system(sys_, proto, enroll_per_id=3)
        scored_by[f"{name}, 3 enrolment images"] = three
        results[f"{name}, 3 enrolment images"] = describe(
            three, sys_.default_threshold, unusable_counts(sys_, three, r)
        )
        # the same probes with one enrolment image, so the two rows compare like for like
        one = same_probes(scored_by[name], three.probe_rows)
        results[f"{name}, 1 image, probes of the 3-image rows"] = describe(
            one, sys_.default_threshold, unusable_counts(sys_, one, r)
        )
    for name in list(scored_by):
        if name in ("facewatch, gates off",):
            continue
        unusable = results[name]["unusable"]
        z = normalised(scored_by[name], proto)
        results[f"{name} + cohort Z-norm"] = describe(z, None, unusable)
        t = normalised(scored_by[name], proto, tail_offset)
        results[f"{name} + per-person offsets"] = describe(t, None, unusable)
    report = {
        "protocol": __doc__.split("Pipelines")[0].strip(),
        "n_images": int(len(proto.ids)),
        "results": results,
        "proposed_default": propose_default(scored_by["facewatch"], proto),
        "track_rules": track_rules(systems["facewatch"], proto, SHIPPED_THRESHOLD),
        **extra,
    }
    print_tables(report)
    print_track_rules(report["track_rules"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_det(
        {n: ident.det_curve(scored_by[n].scores.searches()) for n in ("facewatch", "peer")
         if n in scored_by},
        args.out.with_suffix(".det.png"),
    )  # fmt: skip
    args.out.write_text(json.dumps(ident.as_jsonable(report), indent=1) + "\n")
    print(f"wrote {args.out}")
    return report


def _pct(v) -> str:
    return "   n/a" if v is None else f"{100 * v:5.1f}%"


def print_tables(report: dict) -> None:
    keys = ("0.01", "0.001", "0.0002")
    head = f"{'system':58s} {'mated':>6s} {'nonm':>5s} " + " ".join(
        f"{'TPIR@' + k:>12s}" for k in keys
    )
    print(head + f" {'FPIR@def':>9s} {'TPIR@def':>9s} {'rank1':>6s}")
    for name, r in report["results"].items():
        tp = " ".join(f"{_pct(r['tpir_at_fpir'][k]):>12s}" for k in keys)
        print(
            f"{name:58s} {r['n_mated']:6d} {r['n_nonmated']:5d} {tp} "
            f"{_pct(r.get('fpir_at_default')):>9s} {_pct(r.get('tpir_at_default')):>9s} "
            f"{_pct(r['rank1']['rate']):>6s}"
        )
    print("\nthresholds for FPIR " + ", ".join(keys))
    for name, r in report["results"].items():
        t = ", ".join("n/a" if v is None else f"{v:.4f}" for v in r["threshold_at_fpir"].values())
        print(f"  {name:58s} {t}")
    p = report["proposed_default"]
    print(
        f"\nproposed facewatch default threshold (FPIR {p['target_fpir']} on a 100-person "
        f"list, chosen on one LFW half, checked on the other): {p['proposed']:.3f}"
    )
    for f in p["folds"]:
        print(f"  half {f['chosen_on']}: {f['threshold']:.4f}, held-out FPIR {f['held_out_fpir']}")
    print(f"  at {p['proposed']:.3f} on everything: {p['at_proposed']}")


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_accuracy.json")
    ap.add_argument(
        "--stage", choices=("extract", "levers", "score", "all"), default="all", help="what to run"
    )
    ap.add_argument("--part", choices=("facewatch", "peer", "both", "merge-peer"), default="both")
    ap.add_argument("--shard", default="0/1", help="peer rows i::k as i/k (parallel processes)")
    ap.add_argument(
        "--levers", default="flip,templates", help="re-embeddings to compute: flip,templates"
    )
    ap.add_argument("--templates", default="dlib-chip-eyes", help="dlib-chip,dlib-chip-eyes")
    ap.add_argument(
        "--template-every", type=int, default=10, help="derive from every n-th LFW image"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads for facewatch")
    ap.add_argument("--limit", type=int, default=None, help="first N images per set (smoke)")
    return ap.parse_args(argv)


def run_extract(args: argparse.Namespace, paths: list[Path]) -> None:
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.part in ("facewatch", "both") and not (args.cache / "facewatch.npz").exists():
        extract_facewatch(paths, args.cache / "facewatch.npz", args.threads)
    if args.part in ("peer", "both") and not (args.cache / "peer.npz").exists():
        i, k = (int(v) for v in args.shard.split("/"))
        if k == 1:
            extract_peer(paths, args.cache / "peer.npz")
        else:
            extract_peer(paths, args.cache / f"peer_shard{i}of{k}.npz", (i, k))
    if args.part == "merge-peer":
        merge_peer(sorted(args.cache.glob("peer_shard*.npz")), args.cache / "peer.npz")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sets = image_sets(args.data, args.limit)
    paths = all_paths(sets)
    if args.stage in ("extract", "all"):
        run_extract(args, paths)
    if args.stage in ("levers", "all"):
        run_levers(args, [w.strip() for w in args.levers.split(",") if w.strip()])
    if args.stage in ("score", "all"):
        run_score(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
