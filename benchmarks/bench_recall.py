"""Recall levers, measured: how facewatch uses dlib's ResNet to find more of the people it
looks for, at equal false-alarm rates. Writes ``benchmarks/results/bench_recall.json``.

Part 1, photos (1:N, the ``bench_accuracy`` protocol and its cache: 100 CelebA people
enrolled, their other photos are mated probes, 6,157 LFW photos are non-mated probes):
- how enrolment photos are embedded: once, with the mirror image, or with test-time
  augmentation (3 scales x mirror, what ``embedder.photo_tta`` does);
- whether probes (video faces) get the mirror too (a second ResNet pass per face);
- with 1, 2 and 3 photos per person, how a person is scored: their best photo, their
  template (mean of the photos), or the mean of both (what ``match.Matcher`` does);
- per-person cohort offsets (``watchlist calibrate --per-person``) on top.
TPIR at FPIR 1e-2, 1e-3 and 2e-4, the threshold for each, and FPIR at the shipped default.

Part 2, video (faces of every sampled frame of ground-truth videos at 2 fps, whole-frame
detection, cached; the decisions run the production code: ``Tracker``, ``decide_tracks``,
``group_sightings``):
- tracking: similarities of one face in consecutive frames and of different people, which
  set the tracker's continue/resume similarities;
- the track rule (mean of the best n margins, n = 1, 2, 3; a quality-weighted mean
  embedding of the track; the mean of the two) at the alert threshold;
- the review tier: visits found as a sighting or candidate, and false candidates per
  non-listed appearance, for review thresholds from 0.95 down to 0.90;
- the quality gate's blur limit (15 or 10).
Videos: ``../shared/data/video/archive-colour`` and the three ``bench_archive`` ground-truth
videos (seeds 1-3, built here if missing).

Run: ``.venv/bin/python benchmarks/bench_recall.py`` (needs ``bench_accuracy.py --stage
extract --part facewatch`` first; about 30 minutes on 2 cores the first time, seconds
from the caches in ``benchmarks/results/recall-cache/``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_accuracy as ba  # noqa: E402

from pipelines.evaluation import identification as ident  # noqa: E402
from pipelines.evaluation import watchlist as wl  # noqa: E402
from pipelines.evaluation.faces import ImageFaces  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
CACHE = RESULTS / "recall-cache"
TARGETS = (1e-2, 1e-3, 2e-4)
SCALES = (0.96, 1.0, 1.04)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------- part 1: photos
def raw_views(faces: ImageFaces, out: Path) -> dict[str, np.ndarray]:
    """Raw (unnormalised) descriptors of every cached face, plain and mirrored, at the TTA
    scales (CelebA, which holds the enrolment photos) or at scale 1 (LFW)."""
    if out.exists():
        return dict(np.load(out))
    import torch

    from pipelines.align import align_faces, scaled_template
    from pipelines.config import Settings
    from pipelines.engine import FaceEngine, set_torch_threads
    from pipelines.images import load_image
    from pipelines.schemas import FaceDetections

    set_torch_threads(1)
    emb = FaceEngine(Settings(), device="cpu").load(warmup=False).embedder
    celeba = np.char.find(faces.paths.astype(str), "/celeba/") >= 0
    views: dict[str, np.ndarray] = {}
    for scale in SCALES:
        rows_all = np.flatnonzero(faces.found & (celeba | (scale == 1.0)))
        plain = np.zeros((len(faces), emb.info.dim), np.float32)
        mirror = np.zeros_like(plain)
        for s in range(0, len(rows_all), 32):
            rows = rows_all[s : s + 32]
            frames = [load_image(p) for p in faces.paths[rows]]
            dets = FaceDetections(np.arange(len(rows), dtype=np.int32), faces.boxes[rows],
                                  faces.landmarks[rows], faces.det_score[rows])  # fmt: skip
            template = scaled_template(emb.template, scale)
            chips, _ = align_faces(frames, dets, template, emb.chip_size, emb.template_weights)
            with torch.inference_mode():
                x = torch.from_numpy(chips)
                plain[rows] = emb._forward(x).float().numpy()
                mirror[rows] = emb._forward(torch.flip(x, dims=[2])).float().numpy()
        views[f"plain_{scale}"], views[f"mirror_{scale}"] = plain, mirror
        print(f"views at scale {scale}: {len(rows_all)} faces", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **views)
    return views


def person_scores(gal: np.ndarray, probes: np.ndarray, enrol_rows, rule: str) -> np.ndarray:
    """(n_probes, P): each person's score by ``rule`` (best photo, template, or their mean)."""
    out = np.full((len(probes), len(enrol_rows)), -np.inf)
    for p, rows in enumerate(enrol_rows):
        photos = gal[rows]
        best = (probes @ photos.T).max(axis=1)
        template = probes @ _unit(photos.sum(axis=0))
        out[:, p] = {"best": best, "template": template, "mean": (best + template) / 2}[rule]
    return out


def one_to_n(faces, proto, gal_emb, probe_emb, k, rule, offsets=False) -> dict:
    g, d = np.flatnonzero(proto.gallery), np.flatnonzero(~proto.gallery)
    usable = faces.usable()
    split = wl.split_gallery(list(proto.ids[g]), usable[g], k)
    enrol_rows = [g[r] for r in split.enrol_rows]
    probe_rows = g[split.probe_rows]
    mated = person_scores(gal_emb, probe_emb[probe_rows], enrol_rows, rule)
    nonmated = person_scores(gal_emb, probe_emb[d], enrol_rows, rule)
    mated[~usable[probe_rows]] = -np.inf
    nonmated[~usable[d]] = -np.inf
    default = None
    if offsets:
        scored = ba.Scored(ident.ScoreSet(mated, split.probe_person, nonmated), probe_rows, d, [])
        s = ba.normalised(scored, proto, ba.tail_offset).scores
        mated, nonmated = s.mated, s.nonmated
    else:
        default = 0.95
    searches = ident.searches_from_scores(mated, split.probe_person, nonmated)
    points = {ident.target_key(t): ident.at_fpir(searches, t) for t in TARGETS}
    row = {
        "n_mated": searches.n_mated,
        "tpir_at_fpir": {key: round(p.tpir.value, 4) for key, p in points.items()},
        "threshold_at_fpir": {key: round(p.threshold, 4) for key, p in points.items()},
    }
    if default is not None:
        at = ident.at_threshold(searches, default)
        row["at_0.95"] = {"fpir": round(at.fpir.value, 5), "tpir": round(at.tpir.value, 4)}
    return row


def part_photos(cache: Path) -> dict:
    faces, _ = ImageFaces.load(cache / "facewatch.npz")
    proto = ba.Protocol.from_paths(faces.paths)
    v = raw_views(faces, CACHE / "photo_views.npz")
    embeddings = {
        "once": faces.embeddings,
        "mirror": _unit(v["plain_1.0"] + v["mirror_1.0"]),
        "tta": _unit(sum(v[f"plain_{s}"] + v[f"mirror_{s}"] for s in SCALES)),
    }
    rows = []

    def add(label, gal, probe, k, rule, offsets=False):
        r = one_to_n(faces, proto, embeddings[gal], embeddings[probe], k, rule, offsets)
        rows.append({"photos": gal, "probes": probe, "per_person": k, "rule": rule,
                     "cohort_offsets": offsets, **r})  # fmt: skip
        print(f"{label:48s} k={k} {r['tpir_at_fpir']}", flush=True)

    for k in (1, 2, 3):
        for gal in ("once", "mirror", "tta"):
            for rule in ("best",) if k == 1 else ("best", "template", "mean"):
                add(f"photos {gal}, probes once, {rule}", gal, "once", k, rule)
        add("photos tta, probes mirror, best", "tta", "mirror", k, "best" if k == 1 else "mean")
        add("photos tta + cohort offsets", "tta", "once", k, "best" if k == 1 else "mean", True)
        add("photos tta, probes mirror + offsets", "tta", "mirror", k, "best" if k == 1 else "mean",
            True)  # fmt: skip
    return {"rows": rows}


# ----------------------------------------------------------------------------- part 2: video
def video_faces(video: Path, out: Path, fps: float = 2.0) -> dict[str, np.ndarray]:
    """Every face of the frames sampled at ``fps``: time, box, gate verdict, embedding and
    the aligned chip (kept so a gate can be relaxed and the face embedded later)."""
    if out.exists():
        return dict(np.load(out))
    import decord

    from pipelines.align import align_faces
    from pipelines.config import Settings
    from pipelines.engine import FaceEngine, set_torch_threads
    from pipelines.video import sample_indices

    set_torch_threads(1)
    eng = FaceEngine(Settings(), device="cpu").load()
    e = eng.embedder
    reader = decord.VideoReader(str(video))
    idx = sample_indices(len(reader), float(reader.get_avg_fps()), fps)
    cols: dict[str, list] = {k: [] for k in ("t", "frame", "box", "passed", "quality", "emb",
                                               "chip", "reason")}  # fmt: skip
    for s in range(0, len(idx), 4):
        ii = list(idx[s : s + 4])
        frames = list(reader.get_batch(ii).asnumpy())
        b = eng.process(frames)
        chips, _ = align_faces(frames, b.detections, e.template, e.chip_size, e.template_weights)
        for f in range(len(b)):
            fi = int(b.detections.frame_index[f])
            cols["t"].append(ii[fi] / float(reader.get_avg_fps()))
            cols["frame"].append(ii[fi])
            cols["box"].append(b.detections.boxes[f])
            cols["passed"].append(bool(b.quality.passed[f]))
            cols["quality"].append(float(b.quality.quality_score[f]))
            cols["emb"].append(b.embeddings[f])
            cols["chip"].append(chips[f])
            cols["reason"].append(str(b.quality.reason[f]))
    arrays = {k: np.asarray(v) for k, v in cols.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    print(f"{video.name}: {len(idx)} frames, {len(arrays['t'])} faces", flush=True)
    return arrays


def ground_truths(work: Path) -> dict[str, tuple[Path, list, dict[str, list[Path]], int]]:
    """name -> (video, appearances (person, start, end, lane, wanted), enrolment, width)."""
    import bench_archive

    colour = DATA / "video" / "archive-colour"
    doc = json.loads((colour / "truth.json").read_text())
    out = {
        "archive-colour": (
            colour / "video.mp4",
            [
                (a["person"], a["start_s"], a["end_s"], a["lane"], a["label"] == "wanted")
                for a in doc["appearances"]
            ],  # fmt: skip
            {p: sorted((colour / "enroll" / p).iterdir()) for p in doc["wanted"]},
            640,
        )
    }
    for seed in (1, 2, 3):
        cast, plan, video = bench_archive.build_ground_truth(work, 600.0, seed, (1280, 720))
        enrol = {n: [DATA / p] for n, p in bench_archive.KNOWN.items()}
        enrol.update({n: [p] for n, p in cast.enrol.items()})
        apps = [(a.identity or Path(a.image).parent.name, a.start_s, a.end_s,
                 int(a.start_xy[0] >= 0.5), bool(a.identity)) for a in plan]  # fmt: skip
        out[f"seed{seed}"] = (video, apps, enrol, 1280)
    return out


def label_faces(f: dict, apps: list, width: int) -> np.ndarray:
    """Per face: the index of the appearance it belongs to (by time and lane), or -1."""
    out = np.full(len(f["t"]), -1)
    cx = (f["box"][:, 0] + f["box"][:, 2]) / 2
    for i, t in enumerate(f["t"]):
        live = [k for k, a in enumerate(apps) if a[1] - 0.1 <= t <= a[2] + 0.1]
        if len(live) > 1:
            live = [k for k in live if apps[k][3] == int(cx[i] >= width / 2)]
        if len(live) == 1:
            out[i] = live[0]
    return out


def tracking_stats(sets: dict) -> dict:
    """Similarity of a face to itself 0.5 s later, and of two different people."""
    same, near_diff, any_diff = [], [], []
    rng = np.random.default_rng(0)
    for f, apps, lab in sets.values():
        ok = np.flatnonzero(f["passed"] & (lab >= 0))
        e, t = f["emb"], f["t"]
        who = np.array([apps[k][0] for k in lab])
        for a in ok:
            for b in ok[ok > a]:
                if abs(t[b] - t[a]) > 2.0:
                    continue
                s = float(e[a] @ e[b])
                if lab[a] == lab[b] and abs(t[b] - t[a]) <= 0.6:
                    same.append(s)
                elif who[a] != who[b]:
                    near_diff.append(s)
        for a, b in rng.choice(ok, (20000, 2)):
            if who[a] != who[b]:
                any_diff.append(float(e[a] @ e[b]))

    def q(x, qs):
        return {f"{p:g}": round(float(np.quantile(x, p)), 4) for p in qs}

    return {
        "same_face_0.5s": {"n": len(same), "quantiles": q(same, (0.001, 0.01, 0.05, 0.5))},
        "different_people_within_2s": {"n": len(near_diff), "max": round(max(near_diff), 4),
                                       "quantiles": q(near_diff, (0.5, 0.99, 0.999))},
        "different_people_any_time": {"n": len(any_diff), "max": round(max(any_diff), 4),
                                      "quantiles": q(any_diff, (0.5, 0.99, 0.999))},
    }  # fmt: skip


def relax_blur(f: dict, min_blur: float, embedder) -> dict:
    """The faces as if the blur gate's limit were ``min_blur`` (rejected faces embedded)."""
    from pipelines.quality import laplacian_variance

    f = dict(f)
    fix = (f["reason"] == "blur") & (laplacian_variance(f["chip"]) >= min_blur)
    if fix.any():
        f["emb"], f["passed"], f["reason"] = f["emb"].copy(), f["passed"].copy(), f["reason"].copy()
        f["emb"][fix] = embedder.embed(f["chip"][fix])
        f["passed"][fix], f["reason"][fix] = True, ""
    return f


def decide(f, gallery, rule: str, top_n: int):
    """The archive search's decision chain on a video's faces, with track rule ``rule``:
    ``topn`` (production), ``set`` (quality-weighted mean embedding) or ``mix`` (mean)."""
    from pipelines.match import Matcher
    from pipelines.sightings import (
        FaceTable,
        TrackVerdict,
        decide_tracks,
        group_sightings,
        person_margin_per_face,
        tier_of,
    )  # fmt: skip
    from pipelines.track import Tracker, TrackerConfig

    m = Matcher(gallery)
    n = len(f["t"])
    fm = m.match(f["emb"], gallery.embedder, 5)
    fm.margin[~f["passed"]] = -np.inf
    table = FaceTable(f["t"], f["frame"], np.zeros(n, int), f["box"], f["passed"].astype(bool),
                      f["quality"], fm.person, fm.score, fm.margin)  # fmt: skip
    tracker = Tracker(TrackerConfig.for_embedder(gallery.embedder.name))
    tids = np.zeros(n, np.int64)
    for fr in np.unique(f["frame"]):
        r = np.flatnonzero(f["frame"] == fr)
        tids[r] = tracker.update(float(f["t"][r[0]]), f["box"][r], f["emb"][r], f["passed"][r])
    if rule == "topn":
        verdicts = decide_tracks(table, tids, top_n, m.review_gap)
    else:
        verdicts = []
        for tid in np.unique(tids):
            rows = np.flatnonzero((tids == tid) & table.passed)
            if not len(rows):
                continue
            w = np.maximum(table.quality[rows], 1e-3)
            mean = _unit((f["emb"][rows] * w[:, None]).sum(0))
            agg = m.person_scores(mean[None], gallery.embedder)[0] - m.person_threshold
            if rule == "mix":
                for p in range(len(agg)):
                    best = np.sort(person_margin_per_face(table, rows, p))[::-1][:top_n]
                    agg[p] = (agg[p] + best.mean()) / 2
            best = int(np.argmax(agg))
            tier = tier_of(float(agg[best]), float(m.review_gap[best]))
            if tier:
                verdicts.append(TrackVerdict(int(tid), best, float(agg[best]), tuple(rows), tier))
    drafts = group_sightings(table, verdicts, 2.5)
    return [(m.person_ids[d.person], d.start_s, d.end_s, d.tier) for d in drafts]


def gallery_for(enrol: dict[str, list[Path]], alert: float, review: float, engine):
    from pipelines.images import ImageError
    from pipelines.match import Gallery

    names, embs = [], []
    for person, photos in enrol.items():
        for p in photos:
            try:
                embs.append(engine.probe_face(p).embedding)
                names.append(person)
            except ImageError:  # a photo enrolment refuses (e.g. pose): left out, as it would be
                pass
    n = len(names)
    return Gallery(np.stack(embs), [f"e{i}" for i in range(n)], names, names, ["bench"] * n,
                   [""] * n, engine.info, np.full(n, alert, np.float32),
                   review_thresholds=np.full(n, review, np.float32))  # fmt: skip


def part_video(work: Path) -> dict:
    from pipelines.config import Settings
    from pipelines.engine import FaceEngine
    from pipelines.evaluation.archive import Appearance, Found, score

    engine = FaceEngine(Settings(), device="cpu").load(warmup=False)
    truths = ground_truths(work)
    raw = {name: video_faces(v, CACHE / f"faces_{name}.npz") for name, (v, *_) in truths.items()}
    labelled = {n: (raw[n], t[1], label_faces(raw[n], t[1], t[3])) for n, t in truths.items()}
    result: dict = {"videos": list(truths), "tracking": tracking_stats(labelled), "curves": []}
    galleries: dict = {}
    for min_blur in (15.0, 10.0):
        faces = {n: relax_blur(raw[n], min_blur, engine.embedder) for n in truths}
        for rule, top_n in (("topn", 1), ("topn", 2), ("topn", 3), ("set", 3), ("mix", 3)):
            if min_blur == 15.0 and (rule, top_n) != ("topn", 3):
                continue
            for alert in (0.95, 0.945, 0.94):
                for review in (0.95, 0.94, 0.935, 0.93, 0.925, 0.92, 0.91, 0.90):
                    if review > alert:
                        continue
                    found, truth = [], []
                    for name, (_, apps, enrol, _) in truths.items():
                        key = (name, alert, review)
                        if key not in galleries:
                            galleries[key] = gallery_for(enrol, alert, review, engine)
                        offset = 10_000.0 * len(truth)  # keep the videos apart in time
                        truth += [Appearance(a[0], a[1] + offset, a[2] + offset, a[4])
                                  for a in apps]  # fmt: skip
                        found += [Found(p, s + offset, e + offset, t) for p, s, e, t in
                                  decide(faces[name], galleries[key], rule, top_n)]  # fmt: skip
                    s = score(truth, found)
                    row = {"min_blur": min_blur, "rule": rule, "top_n": top_n, "alert": alert,
                           "review": review, "wanted": s["wanted_appearances"],
                           "non_listed": s["distractor_appearances"],
                           "found_sightings": s["recall_sightings"]["k"],
                           "found_with_candidates": s["recall_with_candidates"]["k"],
                           "false_sightings": s["false_sightings"],
                           "false_candidates": s["false_candidates"]}  # fmt: skip
                    result["curves"].append(row)
                    print(json.dumps(row), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cache", type=Path, default=ba.CACHE, help="bench_accuracy's cache")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fw-bench"), help="videos")
    ap.add_argument("--part", choices=("photos", "video", "both"), default="both")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_recall.json")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    t0 = time.perf_counter()
    result = dict(previous)
    if args.part in ("photos", "both"):
        result["photos"] = part_photos(args.cache)
    if args.part in ("video", "both"):
        result["video"] = part_video(args.work)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
