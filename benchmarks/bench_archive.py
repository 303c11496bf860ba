"""Archive search speed against a naive loop and against decoding alone, on the same videos.

Three ways through the same files, in one run:
1. ``decode``: decord reads every frame (the floor: nothing can be faster than reading);
2. ``naive``: one process, no Ray: facenet-pytorch MTCNN with its defaults on every frame
   sampled at ``--fps``, at full resolution, then our dlib-resnet embedder, one frame at a
   time, matched against the enrolment photos (best person over the threshold);
3. ``search``: ``facewatch search`` as a user runs it (a subprocess; wall time includes
   starting Ray and the face pool), plus the job's own wall time from its summary.json.

Recall on the ground-truth video is scored for both, and once more for the search with
``search.top_n: 1`` (on the ground-truth video only): a track then matches on its single
best frame, the naive loop's rule. The default (the mean of a track's best 3 margins) is
stricter on purpose; this run separates what that rule costs from what the search's
faster detection costs.

Videos: the Hamilton clip (640x360), the facenet-pytorch clip (1080p) and a longer
ground-truth video (1280x720, default 600 s: archive footage is HD and long, and the
search's fixed start-up cost, about 15 s of Ray, Serve and model loading on 2 cores, is
paid once per job, so a short video measures start-up rather than search), built with
``pipelines.groundtruth`` from LFW photos, where we know who is on screen when: recall and
precision of both the naive loop and the search are scored on it (a sighting counts when
person and time overlap).

Per video, the search's per-frame work is also run in one process with a clock around each
stage (``archive_stages``: decode, whole-frame and region detection, alignment/quality/
crops, embedding, matching, tracking and decisions), beside the naive loop's stages, with
wall and CPU seconds: ``stages`` in the JSON, and per video the in-process search/naive
and search/decode. What the end-to-end search spends beyond those stages (Ray, Serve, the
store, start-up) is ``stages_remainder_s``. ``--no-stages`` skips these runs.

Run: ``.venv/bin/python benchmarks/bench_archive.py`` (about 10 minutes on 2 CPU cores, plus
about 2 to build the ground-truth video the first time).
Prints a table and writes ``benchmarks/results/bench_archive.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pipelines import groundtruth  # noqa: E402
from pipelines.video import sample_indices  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CLIPS = ["video/short_hamilton_clip.mp4", "video/facenet_pytorch_video.mp4"]
KNOWN = {
    "Lin-Manuel Miranda": "known/lin-manuel-miranda.png",
    "Alex Lacamoire": "known/alex-lacamoire.png",
}
CASE = ["--case", "BENCH", "--reason", "benchmark"]


# -- inputs --------------------------------------------------------------------------------
def build_ground_truth(work: Path, duration: float, seed: int, size: tuple[int, int]):
    cast = groundtruth.lfw_cast(DATA / "lfw", watched=4, distractors=8, seed=seed)
    height = (150, 190) if size[1] < 720 else (180, 260)
    plan = groundtruth.schedule(cast.appear, cast.distractors, duration, seed=seed, height=height)
    video = work / f"groundtruth_{int(duration)}s_{size[0]}x{size[1]}_seed{seed}.mp4"
    if not video.is_file():
        t0 = time.perf_counter()
        groundtruth.render(video, plan, duration, size=size)
        print(f"built {video.name} in {time.perf_counter() - t0:.0f}s", flush=True)
    return cast, plan, video


def gallery_photos(cast) -> dict[str, Path]:
    photos = {name: DATA / p for name, p in KNOWN.items()}
    photos.update(cast.enrol)
    return photos


# -- 1. decode only ------------------------------------------------------------------------
def bench_decode(video: Path) -> dict:
    import decord

    t0 = time.perf_counter()
    reader = decord.VideoReader(str(video))
    n, fps = len(reader), float(reader.get_avg_fps())
    for start in range(0, n, 32):
        reader.get_batch(list(range(start, min(n, start + 32)))).asnumpy()
    wall = time.perf_counter() - t0
    return {"frames": n, "video_s": n / fps, "wall_s": wall}


# -- 2. the naive loop ---------------------------------------------------------------------
class Naive:
    """MTCNN (facenet-pytorch defaults) + our dlib-resnet, one frame at a time, no Ray."""

    def __init__(self, photos: dict[str, Path]):
        import torch
        from facenet_pytorch import MTCNN

        from pipelines.engine import FaceEngine

        self.torch_threads = torch.get_num_threads()
        self.mtcnn = MTCNN(keep_all=True, device="cpu")
        self.engine = FaceEngine(device="cpu").load()
        self.embedder = self.engine.embedder
        self.names = list(photos)
        self.gallery = np.stack([self.engine.probe_face(p).embedding for p in photos.values()])
        self.threshold = self.embedder.default_threshold

    def frame(self, frame: np.ndarray) -> list[tuple[str, float]]:
        from pipelines.align import align_faces
        from pipelines.schemas import FaceDetections

        boxes, probs, points = self.mtcnn.detect(frame, landmarks=True)
        if boxes is None:
            return []
        dets = FaceDetections(
            np.zeros(len(boxes), np.int32),
            np.asarray(boxes, np.float32),
            np.asarray(points, np.float32),
            np.asarray(probs, np.float32),
        )
        size = self.embedder.chip_size
        chips, _ = align_faces([frame], dets, self.embedder.template, size)
        scores = self.embedder.embed(chips) @ self.gallery.T
        best = scores.argmax(axis=1)
        return [
            (self.names[b], float(s[b]))
            for b, s in zip(best, scores, strict=True)
            if s[b] >= self.threshold
        ]

    def video(self, video: Path, fps: float, link_gap_s: float = 2.5) -> dict:
        import decord

        t0 = time.perf_counter()
        reader = decord.VideoReader(str(video))
        n, vfps = len(reader), float(reader.get_avg_fps())
        hits: list[tuple[str, float]] = []
        idx = sample_indices(n, vfps, fps)
        for i in idx:
            hits += [(name, i / vfps) for name, _ in self.frame(reader[i].asnumpy())]
        wall = time.perf_counter() - t0
        return {
            "frames": len(idx),
            "video_s": n / vfps,
            "wall_s": wall,
            "sightings": group_hits(hits, link_gap_s),
        }


def group_hits(hits: list[tuple[str, float]], gap: float) -> list[tuple[str, float, float]]:
    """Consecutive hits of one person, less than ``gap`` apart, as one sighting."""
    out: list[list] = []
    for name, t in sorted(hits, key=lambda h: (h[0], h[1])):
        if out and out[-1][0] == name and t - out[-1][2] <= gap:
            out[-1][2] = t
        else:
            out.append([name, t, t])
    return [tuple(s) for s in out]


# -- 3. facewatch search, end to end ---------------------------------------------------------
def facewatch(home: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, FACEWATCH_USER="bench", RAY_NODE_IP_ADDRESS="127.0.0.1")
    options = ["--config", str(config)] if config else []
    cmd = [sys.executable, "-m", "jobs.cli", "--home", str(home), *options, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)


def enrol(home: Path, photos: dict[str, Path]) -> None:
    for name, photo in photos.items():
        proc = facewatch(home, "watchlist", "add", name, str(photo), "--list", "bench")
        if proc.returncode != 0:
            raise SystemExit(f"enrolment of {name} failed:\n{proc.stderr}")


def bench_search(
    home: Path,
    videos: list[Path],
    out: Path,
    fps: float,
    extra: list[str],
    config: Path | None = None,
):
    args = ["search", *map(str, videos), "--list", "bench", "--fps", str(fps)]
    t0 = time.perf_counter()
    proc = facewatch(home, *args, "--out", str(out), "--json", *CASE, *extra, config=config)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"search failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    return wall, summary, rows


# -- scoring and reporting -------------------------------------------------------------------
def score(plan, found: list[tuple[str, float, float]]) -> dict:
    return groundtruth.score_sightings(groundtruth.truth(plan), found, slack_s=1.0)


def score_tiers(plan, rows: list[dict]) -> dict:
    """Both tiers, scored as ``facewatch evaluate archive`` scores them (distractors are the
    non-listed appearances)."""
    from pipelines.evaluation.archive import Appearance, Found
    from pipelines.evaluation.archive import score as archive_score

    truth = [
        Appearance(a.identity or Path(a.image).parent.name, a.start_s, a.end_s, bool(a.identity))
        for a in plan
    ]
    found = [Found(r["person_name"], r["start_s"], r["end_s"], r["tier"]) for r in rows]
    return archive_score(truth, found)


def disagreements(plan, naive_found, search_found) -> list[dict]:
    """The visits only one of the two found, with the photo shown: recall differences on a
    few photos scoring at the threshold's edge are a different thing from missed faces."""
    out = []
    for a in plan:
        if not a.identity:
            continue
        by_naive = score([a], naive_found)["recall"] > 0
        by_search = score([a], search_found)["recall"] > 0
        if by_naive != by_search:
            out.append(
                {
                    "found_by": "naive" if by_naive else "search",
                    "identity": a.identity,
                    "photo": a.image.name,
                    "start_s": round(a.start_s, 1),
                    "end_s": round(a.end_s, 1),
                }
            )
    return out


def speed(video_s: float, wall_s: float) -> float:
    return round(video_s / wall_s, 3) if wall_s > 0 else float("nan")


def print_table(res: dict) -> None:
    print()
    print(f"{'video':34s} {'decode':>9s} {'naive':>9s}   (video-seconds per wall-second)")
    for name, v in res["videos"].items():
        print(f"{name:34s} {v['decode_speed']:9.2f} {v['naive_speed']:9.3f}")
    t = res["totals"]
    print(f"{'all three':34s} {t['decode_speed']:9.2f} {t['naive_speed']:9.3f}")
    s = res["search"]
    print(
        f"\nsearch end to end: {s['speed_end_to_end']:.3f} video-s/s "
        f"(wall {s['wall_s']:.1f}s incl. startup; in-job {s['job_wall_s']:.1f}s -> "
        f"{s['speed_in_job']:.3f} video-s/s)"
    )
    r = res["ratios"]
    print(
        f"search/naive = {r['search_over_naive']:.2f} (in-job {r['search_in_job_over_naive']:.2f})"
        f"   search/decode = {r['search_over_decode']:.3f}"
    )
    gt_n, gt_s = res["groundtruth"]["naive"], res["groundtruth"]["search"]
    print(
        f"ground truth ({res['groundtruth']['visits']} visits): naive recall "
        f"{gt_n['recall']:.2f} precision {gt_n['precision']:.2f} | search recall "
        f"{gt_s['recall']:.2f} precision {gt_s['precision']:.2f}"
    )
    print_disagreements(res["groundtruth"].get("disagreements", []))
    tiers = res["groundtruth"].get("search_tiers")
    if tiers:
        print(
            f"search, both tiers: sightings {tiers['recall_sightings']['k']}, with candidates "
            f"{tiers['recall_with_candidates']['k']} of {tiers['wanted_appearances']}; false "
            f"sightings {tiers['false_sightings']}, false candidates {tiers['false_candidates']} "
            f"per {tiers['distractor_appearances']} non-listed appearances"
        )
    one = res["groundtruth"].get("search_top_n_1")
    if one:
        print(
            f"search with the naive loop's rule (search.top_n 1): recall {one['recall']:.2f} "
            f"precision {one['precision']:.2f}"
        )
        print_disagreements(res["groundtruth"].get("disagreements_top_n_1", []))


def profile_stages(videos: list[Path], photos: dict[str, Path], fps: float, res: dict) -> dict:
    """Per video, the search's and the naive loop's stages in this process, interleaved
    (search, naive, next video), with the in-process ratios beside the decode speed."""
    import archive_stages
    from bench_recall import gallery_for

    from pipelines.config import Settings
    from pipelines.engine import FaceEngine

    settings = Settings()
    engine = FaceEngine(settings, device="cpu").load(warmup=False)
    alert = engine.embedder.default_threshold
    gap = alert - settings_review_threshold(res)
    gallery = gallery_for({n: [p] for n, p in photos.items()}, alert, alert - gap, engine)
    naive, out = Naive(photos), {}
    for v in videos:
        row = res["videos"][v.name]
        s = archive_stages.search_stages(v, fps, gallery, settings)
        n = archive_stages.naive_stages(naive, v, fps)
        out[v.name] = {
            "load_avg": os.getloadavg(),
            "search": s,
            "naive": n,
            "search_over_naive": round(n["wall_s"] / s["wall_s"], 3),
            "search_over_naive_cpu": round(n["cpu_s"] / s["cpu_s"], 3),
            "search_over_decode": round(row["decode_wall_s"] / s["wall_s"], 4),
        }
        print(f"{v.name}: stages {json.dumps(out[v.name])}", flush=True)
    in_process = sum(r["search"]["wall_s"] for r in out.values())
    return {"videos": out, "stages_remainder_s": round(res["search"]["wall_s"] - in_process, 3)}


def settings_review_threshold(res: dict) -> float:
    """The review threshold the search used (its summary), for the profile's gallery."""
    return float(res["search"]["summary"]["review_thresholds"][0])


def print_disagreements(rows: list[dict]) -> None:
    for d in rows:
        print(f"  found only by {d['found_by']:6s}: {d['photo']} at {d['start_s']}-{d['end_s']}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=600.0, help="ground-truth video seconds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--size", default="1280x720", help="ground-truth video WIDTHxHEIGHT")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fw-bench")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/bench_archive.json")
    ap.add_argument("--label", default="", help="a note stored with the results")
    ap.add_argument("--skip-naive", action="store_true", help="reuse naive numbers from --out")
    ap.add_argument("--no-stages", action="store_true", help="skip the per-stage profile")
    ap.add_argument("search_args", nargs="*", help="extra arguments for facewatch search")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    size = tuple(int(x) for x in args.size.split("x"))
    cast, plan, gt_video = build_ground_truth(args.work, args.duration, args.seed, size)
    videos = [DATA / c for c in CLIPS] + [gt_video]
    photos = gallery_photos(cast)
    res: dict = {
        "label": args.label,
        "fps": args.fps,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_avg_before": os.getloadavg(),
        "videos": {},
    }

    previous = json.loads(args.out.read_text()) if args.skip_naive and args.out.is_file() else {}
    naive = None if args.skip_naive else Naive(photos)
    for v in videos:
        d = bench_decode(v)
        row = {"video_s": round(d["video_s"], 2), "decode_speed": speed(d["video_s"], d["wall_s"])}
        if naive is not None:
            nv = naive.video(v, args.fps)
            row.update(naive_speed=speed(nv["video_s"], nv["wall_s"]), naive_wall_s=nv["wall_s"])
            row.update(naive_frames=nv["frames"], naive_sightings=nv["sightings"])
        else:
            old = previous["videos"][v.name]
            row.update({k: old[k] for k in old if k.startswith("naive")})
        row["decode_wall_s"] = d["wall_s"]
        res["videos"][v.name] = row
        print(f"{v.name}: {row['decode_speed']:.1f} decode, {row['naive_speed']:.3f} naive")
    threads = naive.torch_threads if naive else previous.get("naive_torch_threads")
    res["naive_torch_threads"] = threads
    del naive

    rows = res["videos"].values()
    total_video = sum(r["video_s"] for r in rows)
    res["totals"] = {
        "video_s": total_video,
        "decode_speed": speed(total_video, sum(r["decode_wall_s"] for r in rows)),
        "naive_speed": speed(total_video, sum(r["naive_wall_s"] for r in rows)),
    }

    home = Path(tempfile.mkdtemp(prefix="fw-bench-home-", dir=args.work))
    enrol(home, photos)
    wall, summary, found_rows = bench_search(home, videos, home / "out", args.fps, args.search_args)
    res["search"] = {
        "wall_s": wall,
        "job_wall_s": summary["wall_s"],
        "speed_end_to_end": speed(total_video, wall),
        "speed_in_job": speed(total_video, summary["wall_s"]),
        "summary": summary,
        "extra_args": args.search_args,
    }
    t = res["totals"]
    res["ratios"] = {
        "search_over_naive": round(res["search"]["speed_end_to_end"] / t["naive_speed"], 3),
        "search_in_job_over_naive": round(res["search"]["speed_in_job"] / t["naive_speed"], 3),
        "search_over_decode": round(res["search"]["speed_end_to_end"] / t["decode_speed"], 4),
    }
    gt_rows = [r for r in found_rows if Path(r["source_path"]).name == gt_video.name]
    # the alert tier beside the naive loop (which has one threshold); both tiers below
    found = [
        (r["person_name"], r["start_s"], r["end_s"]) for r in gt_rows if r["tier"] == "sighting"
    ]
    naive_found = [tuple(s) for s in res["videos"][gt_video.name]["naive_sightings"]]
    res["groundtruth"] = {
        "video": gt_video.name,
        "visits": len(groundtruth.truth(plan)),
        "naive": score(plan, naive_found),
        "search": score(plan, found),
        "search_sightings": found,
        "search_tiers": score_tiers(plan, gt_rows),
        "disagreements": disagreements(plan, naive_found, found),
    }
    # The same search of the ground-truth video, deciding tracks by their single best frame.
    config = home / "top_n_1.yaml"
    config.write_text("search:\n  top_n: 1\n")
    _, _, one_rows = bench_search(
        home, [gt_video], home / "out-top-n-1", args.fps, args.search_args, config
    )
    one = [
        (r["person_name"], r["start_s"], r["end_s"]) for r in one_rows if r["tier"] == "sighting"
    ]
    res["groundtruth"]["search_top_n_1"] = score(plan, one)
    res["groundtruth"]["disagreements_top_n_1"] = disagreements(plan, naive_found, one)
    res["hamilton_lin_found"] = {
        "search": any(
            r["person_name"] == "Lin-Manuel Miranda" and "hamilton" in r["source_path"]
            for r in found_rows
        ),
        "naive": any(
            s[0] == "Lin-Manuel Miranda"
            for s in res["videos"]["short_hamilton_clip.mp4"]["naive_sightings"]
        ),
    }
    if not args.no_stages:
        res["stages"] = profile_stages(videos, photos, args.fps, res)
    res["load_avg_after"] = os.getloadavg()
    print_table(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
