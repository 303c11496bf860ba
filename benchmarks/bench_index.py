"""Indexed retrospective search at scale: probe queries on a face index of >= 1 million faces.

Stages (each prints what it does):

1. real: index the two shared videos with the real pipeline (Ray + FacePool, as
   ``facewatch index``), and time, on the same videos, an archive re-search (decoding
   again, as ``facewatch search --probe``) and an indexed search of the small real index.
   Real embeddings also come from LFW photos (one per person). Cached in --work.
2. build: a face index of --rows faces, in "units" (files) of the real faces' size (see
   Replicas). Unit 0 is REAL (the videos as indexed, LFW photos). Units 1..--sightings are
   SYNTHETIC re-sightings: the video faces with Gaussian noise (--noise per dimension,
   renormalised), so the probe person is in a bounded number of files. Every other unit
   is SYNTHETIC OTHER PEOPLE: blends of two LFW faces plus noise, none like the probe.
   The results' ``synthetic`` entry says exactly this with the counts.
3. query: --queries single-probe vector searches (the Lin-Manuel photo and noisy real
   faces), p50/p99 latency; the full indexed search (search + reading back candidate tracks
   + sightings) for the Lin-Manuel photo; one read-back by the indexed filter against an
   unindexed scan; with --ef, latency and recall per HNSW ef; memory (RSS); load averages.

For milvus-lite (in this process: RSS of this process, minus before opening) and for a
Milvus server (the ``milvus`` 2.3.5 standalone package, RSS of its process) by URI. The
server binds its gRPC ports on all interfaces, so it runs in a private network namespace
(``unshare -n``) whose only interface is loopback: nothing can reach it from outside.

    .venv/bin/python benchmarks/bench_index.py             # all, ~30-40 min on 2 cores
    .venv/bin/python benchmarks/bench_index.py --rows 100000 --skip-server   # quicker
    .venv/bin/python benchmarks/bench_index.py --reuse-store  # queries only, stores in --work
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.catalog import Catalog  # noqa: E402
from pipelines.track_map import TrackMap, group_by_track  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
VIDEOS = [DATA / "video" / "short_hamilton_clip.mp4", DATA / "video" / "facenet_pytorch_video.mp4"]
PROBE = DATA / "known" / "lin-manuel-miranda.png"
RESULTS = ROOT / "benchmarks" / "results"
IN_NETNS = "FW_BENCH_IN_NETNS"  # set for the server stage run inside ``unshare -n``
BASE_FIELDS = ("embedding", "frame_index", "timestamp_s", "box", "face_index", "track_id")

logger = logging.getLogger("bench_index")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def settings_for(home: Path, uri: str | None = None):
    from pipelines.config import Settings

    store = {"uri": uri} if uri else {}
    return Settings(home=str(home), store=store)


# -- stage 1: real faces ------------------------------------------------------------------
def probe_gallery(settings):
    from jobs.archive.search_setup import probe_gallery
    from pipelines.engine import FaceEngine

    engine = FaceEngine(settings)
    gallery, _ = probe_gallery(engine, [PROBE], None)
    return engine, gallery


def archive_research(settings, gallery, app: str, out: Path) -> dict:
    from jobs.archive.search import ArchiveSearch

    t0 = time.perf_counter()
    res = ArchiveSearch(settings, gallery, out).run(VIDEOS, app)
    return {
        "wall_s": round(time.perf_counter() - t0, 2),
        "video_s": round(res.video_s, 1),
        "sightings": [(Path(s.source_path).name, s.start_s, s.end_s) for s in res.sightings],
    }


def real_stage(work: Path, n_lfw: int) -> dict:
    """Index the videos, time both searches on them, and collect real embeddings."""
    from jobs.archive import runtime
    from jobs.archive.index import index_archive
    from jobs.archive.index_search import IndexedSearch
    from pipelines.home import Home
    from pipelines.store import FACES

    home = work / "real-home"
    shutil.rmtree(home, ignore_errors=True)
    settings = settings_for(home)
    engine, gallery = probe_gallery(settings)
    runtime.start_ray(None, settings)
    out: dict = {}
    with runtime.face_pool(settings, engine.info) as app:
        out["archive_research"] = archive_research(settings, gallery, app, work / "arch")
        with Home.open(settings, engine.info) as h:
            t0 = time.perf_counter()
            run = index_archive(settings, h, engine.info, VIDEOS, "BENCH", work / "idx")
            out["index"] = {"wall_s": round(time.perf_counter() - t0, 2), "faces": run.counts.faces}
    with Home.open(settings, engine.info) as h:
        t0 = time.perf_counter()
        job = IndexedSearch(
            h.vectors(), gallery, settings.search.link_gap_s, track_map=TrackMap(h.catalog)
        )
        res = job.run(1000)
        out["indexed_search_small"] = {
            "wall_s": round(time.perf_counter() - t0, 3),
            "faces_in_index": res.faces_in_index,
            "sightings": [(Path(s.source_path).name, s.start_s, s.end_s) for s in res.sightings],
        }
        rows = h.vectors().query(FACES, fields=[*BASE_FIELDS, "source_id"])
    base = {k: np.asarray([r[k] for r in rows]) for k in BASE_FIELDS}
    lfw = lfw_embeddings(engine, n_lfw)
    out["real_faces"] = {"video": len(rows), "lfw": len(lfw)}
    np.savez(
        work / "base.npz",
        probe=gallery.embeddings,
        lfw=lfw,
        **{f"video_{k}": v for k, v in base.items()},
    )
    return out


def lfw_embeddings(engine, n: int) -> np.ndarray:
    """One photo per LFW person (the first ``n`` people), through the full pipeline."""
    from pipelines.images import load_image

    engine.load()
    people = sorted(p for p in (DATA / "lfw").iterdir() if p.is_dir())[:n]
    embs = []
    for person in people:
        img = load_image(sorted(person.glob("*.jpg"))[0], engine.settings.detector.max_pixels)
        batch = engine.process([img])
        ok = np.flatnonzero(batch.passed)
        if len(ok):
            best = ok[np.argmax(batch.quality.quality_score[ok])]
            embs.append(batch.embeddings[best])
    return np.asarray(embs, np.float32)


def photos_only_stage(work: Path, n_lfw: int) -> dict:
    """Stage 1 without Ray: real embeddings from LFW photos only (no video faces), for a
    machine too loaded to run the videos' archive search and index (``--no-video``)."""
    settings = settings_for(work / "real-home")
    engine, gallery = probe_gallery(settings)
    lfw = lfw_embeddings(engine, n_lfw)
    empty = {
        "video_embedding": np.zeros((0, lfw.shape[1]), np.float32),
        "video_box": np.zeros((0, 4), np.float32),
        **{f"video_{k}": np.zeros(0, np.int64) for k in ("frame_index", "face_index", "track_id")},
        "video_timestamp_s": np.zeros(0),
    }
    # the probe is the first LFW face: it is in every unit (with noise), the worst case for
    # the read-back of candidate tracks
    np.savez(work / "base.npz", probe=lfw[:1], lfw=lfw, **empty)
    note = "--no-video: LFW photos only; the probe is the first LFW face"
    return {"real_faces": {"video": 0, "lfw": len(lfw)}, "note": note}


# -- stage 2: build a big index ----------------------------------------------------------
class Replicas:
    """The synthetic archive, file by file ("units" of ``n`` faces, file id ``u``):

    - unit 0: the real faces as they are (the two videos as indexed, and the LFW photos);
    - units 1..``sightings``: the real video faces again with Gaussian noise: synthetic
      re-sightings of the people in the videos, the probe person among them, in a bounded
      number of files as in a real archive;
    - every other unit: OTHER PEOPLE: each face a blend of two LFW faces (weights 0.5-0.8)
      plus noise, each its own track; a blend that would reach ``cap`` (the probe's review
      threshold) is replaced by a noisy LFW face that does not.
    """

    def __init__(self, base: dict, noise: tuple[float, float], json_box_object: bool, cap: float,
                 sightings: int = 20):  # fmt: skip
        self.video = base["video_embedding"].astype(np.float32)
        self.n_video = len(self.video)
        lfw = base["lfw"].astype(np.float32)
        # other people only: no LFW face may look like the probe
        self.lfw = lfw[(lfw @ base["probe"].T).max(axis=1) < cap - 0.05]
        self.emb = np.concatenate([self.video, self.lfw])  # unit 0 and the random probes
        self.frame = np.concatenate([base["video_frame_index"], np.zeros(len(self.lfw), int)])
        self.t = np.concatenate([base["video_timestamp_s"], np.zeros(len(self.lfw))])
        self.face = np.concatenate([base["video_face_index"], np.zeros(len(self.lfw), int)])
        self.track = np.concatenate([base["video_track_id"], np.arange(len(self.lfw)) + 100000])
        n_box = len(self.lfw)
        self.box = np.concatenate([base["video_box"], np.tile([[60, 60, 190, 190]], (n_box, 1))])
        self.n = len(self.emb)
        (self.noise, self.sighting_noise), self.cap, self.sightings = noise, cap, sightings
        self.probe = base["probe"].astype(np.float32)
        self.json_box_object = json_box_object
        self.rng = np.random.default_rng(0)

    def describe(self, total: int) -> dict:
        units = -(-total // self.n)
        return {
            "unit_0": f"REAL: {self.n_video} video faces (2 videos) + {len(self.lfw)} LFW "
            "photos of people unlike the probe, as indexed",
            "sighting_units": f"SYNTHETIC: units 1-{self.sightings}: the {self.n_video} real "
            f"video faces with Gaussian noise (sigma {self.sighting_noise}) and their real "
            "tracks and "
            f"times, padded to {self.n} faces with other people",
            "other_units": f"SYNTHETIC: {max(units - 1 - self.sightings, 0)} units of other "
            f"people: each face a blend of two LFW faces (weights 0.5-0.8) + noise (sigma "
            f"{self.noise}), one track "
            f"each; none scores >= {self.cap:.3f} (the probe's review threshold)",
            "faces_per_unit": self.n,
            "units": units,
        }

    def embeddings(self, unit: np.ndarray, i: np.ndarray) -> np.ndarray:
        count = len(unit)
        emb = self.emb[i].copy()
        other = (unit > self.sightings) | ((unit > 0) & (i >= self.n_video))
        a = self.rng.uniform(0.5, 0.8, (count, 1)).astype(np.float32)
        j = self.rng.integers(0, len(self.lfw), count)
        k = self.rng.integers(0, len(self.lfw), count)
        blend = a * self.lfw[j] + (1 - a) * self.lfw[k]
        emb[other] = blend[other]
        sigma = np.where(other, self.noise, self.sighting_noise)[:, None]
        emb += (unit > 0)[:, None] * sigma * self.rng.normal(0, 1, emb.shape)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        near = other & ((emb @ self.probe.T).max(axis=1) >= self.cap)
        if near.any():  # a blend that looks like the probe: a plain (unlike) LFW face
            emb[near] = self.lfw[j[near]]
        return emb

    def rows(self, start: int, count: int) -> list[dict]:
        idx = np.arange(start, start + count)
        unit, i = idx // self.n, idx % self.n
        emb = self.embeddings(unit, i)
        other = (unit > self.sightings) | ((unit > 0) & (i >= self.n_video))
        frame = np.where(other, i, self.frame[i])
        t = np.where(other, i * 0.5, self.t[i])
        track = np.where(other, i + 100000, self.track[i])
        now = int(time.time())
        return [
            {
                "id": f"b{unit[k]}_{i[k]}",
                "embedding": emb[k].tolist(),
                "source_id": f"u{unit[k]:07d}",
                "source_path": f"/archive/unit{unit[k]:07d}.mp4",
                "frame_index": int(frame[k]),
                "timestamp_s": float(t[k]),
                "box": self.box_of(i[k]),
                "thumbnail": "",
                "case_ref": "BENCH",
                "created_at": now,
                "face_index": int(self.face[i[k]]) if not other[k] else 0,
                "track_id": int(track[k]),
                "quality": 1.0,
                "indexed_at": now,
            }
            for k in range(count)
        ]

    def track_keys(self, start: int, count: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Rows ``start..start+count``'s face ids, file ids and track ids, as ``rows`` gives
        them (no embeddings: the track map's input)."""
        idx = np.arange(start, start + count)
        unit, i = idx // self.n, idx % self.n
        other = (unit > self.sightings) | ((unit > 0) & (i >= self.n_video))
        track = np.where(other, i + 100000, self.track[i])
        return [f"b{u}_{j}" for u, j in zip(unit, i, strict=True)], unit, track

    def box_of(self, i: int):
        box = [float(x) for x in self.box[i]]
        return {"xyxy": box} if self.json_box_object else box


def build(store, reps: Replicas, total: int, batch: int) -> dict:
    from pipelines.store import FACES

    t0 = time.perf_counter()
    for start in range(0, total, batch):
        store.client.insert(FACES, reps.rows(start, min(batch, total - start)))
        done = start + batch
        if done % (10 * batch) == 0 or done >= total:
            rate = done / (time.perf_counter() - t0)
            print(f"  inserted {min(done, total):>9,d} rows ({rate:,.0f} rows/s)", flush=True)
    insert_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    if hasattr(store.client, "flush"):
        store.client.flush(FACES)
    wait_index(store)
    store.client.load_collection(FACES)
    return {
        "rows": store.count(FACES),
        "insert_s": round(insert_s, 1),
        "insert_rows_per_s": round(total / insert_s),
        "flush_index_load_s": round(time.perf_counter() - t1, 1),
        "index": store.client.describe_index(FACES, "embedding"),
    }


def write_track_map(track_map, reps: Replicas, total: int) -> dict:
    """What ``facewatch index`` records per file (pipelines/track_map.py), for the
    synthetic archive: each unit is one file."""
    t0 = time.perf_counter()
    for start in range(0, total, reps.n):
        ids, unit, track = reps.track_keys(start, min(reps.n, total - start))
        track_map.replace(f"u{unit[0]:07d}", group_by_track(ids, track), int(time.time()))
    out = {"faces": track_map.faces(), "write_s": round(time.perf_counter() - t0, 1)}
    print(f"  track map: {out}", flush=True)
    return out


def wait_index(store, timeout_s: float = 600) -> None:
    from pipelines.store import FACES

    t0 = last = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        info = store.client.describe_index(FACES, "embedding")
        if not info.get("pending_index_rows", 0) and info.get("state") == "Finished":
            return
        if time.perf_counter() - last > 30:
            last = time.perf_counter()
            print(f"  index: {info.get('indexed_rows')} of {info.get('total_rows')}", flush=True)
        time.sleep(2)  # benchmark-only polling; Milvus offers no index-built event
    print("  index still building after the timeout; querying anyway", flush=True)


# -- stage 3: queries --------------------------------------------------------------------
def pct(xs: list[float]) -> dict:
    a = np.asarray(xs) * 1000
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "n": len(xs),
    }  # noqa: E501


def probe_set(reps: Replicas, probe: np.ndarray, n: int) -> list[np.ndarray]:
    """The probe photo, then noisy real faces (people of the index, as a probe would be)."""
    rng = np.random.default_rng(1)
    probes = [probe[0]]
    for i in rng.integers(0, reps.n, n - 1):
        v = reps.emb[i] + rng.normal(0, reps.noise, reps.emb.shape[1])
        probes.append(v / np.linalg.norm(v))
    return probes


def queries(store, reps: Replicas, probe: np.ndarray, args, gallery, track_map) -> dict:
    from pipelines.store import FACES

    probes = probe_set(reps, probe, args.queries)
    store.search(FACES, probes[0][None], 10)  # warm-up
    out = {}
    for k in (100, 1000):
        lat = []
        for v in probes:
            t0 = time.perf_counter()
            store.search(FACES, v[None], k, fields=["source_id", "track_id"])
            lat.append(time.perf_counter() - t0)
        out[f"search_top{k}"] = pct(lat)
        print(f"  top-{k} vector search: {out[f'search_top{k}']}", flush=True)
    out["indexed_search_top1000"] = full_search(store, gallery, args.full_runs, track_map)
    tracks = out["indexed_search_top1000"].pop("tracks")
    by_filter = full_search(store, gallery, max(3, args.full_runs // 4), None)
    out["indexed_search_top1000_by_filter"] = by_filter
    out["same_result_by_filter"] = by_filter.pop("tracks") == tracks
    out["read_back"] = read_back(store, tracks)
    if args.ef:
        out["ef_curve"] = ef_curve(store, probes[: args.curve_queries], args.ef)
    return out


def full_search(store, gallery, runs: int, track_map) -> dict:
    """The whole indexed search for the probe photo: vector search, read-back, sightings;
    tracks read back by id through the track map, or (``track_map`` None) by filter."""
    from jobs.archive.index_search import IndexedSearch

    job = IndexedSearch(store, gallery, 2.5, track_map=track_map)
    lat, vec, res = [], [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        res = job.run(1000)
        lat.append(time.perf_counter() - t0)
        vec.append(res.query_s)
    out = {
        **pct(lat),
        "vector_search": pct(vec),
        "hits_above_review_threshold": res.hits,
        "files_with_sightings": len(res.files),
        "sightings": len(res.sightings),
        "saturated": res.saturated,
        "tracks": {f.file_id: {int(m.track_id) for m in f.matches} for f in res.files},
    }
    how = "by id (track map)" if track_map else "by filter"
    print(f"  full indexed search, {how}: { {k: v for k, v in out.items() if k != 'tracks'} }")
    return out


def read_back(store, tracks: dict) -> dict:
    """One candidate file's tracks read back by the indexed filter the search uses, against
    a filter on an unindexed field (frame_index), which must scan the collection."""
    from jobs.archive.index_search import track_filter
    from pipelines.store import FACES

    if not tracks:
        return {"error": "the probe search found no file to read back"}
    fid = sorted(tracks)[0]
    out = {}
    for name, where in (
        ("indexed_ms", track_filter({fid: tracks[fid]})),
        ("unindexed_scan_ms", "frame_index == -12345"),
    ):
        lat = []
        for _ in range(5):
            t0 = time.perf_counter()
            store.query(FACES, filter=where, fields=["id", "track_id"])
            lat.append(time.perf_counter() - t0)
        out[name] = round(1000 * float(np.median(lat)), 1)
    out["indexed_filter"] = track_filter({fid: tracks[fid]})
    print(f"  read-back of one file: {out}", flush=True)
    return out


def ef_curve(store, probes: list, efs: list[int]) -> list[dict]:
    """Latency and recall against the largest ef, per HNSW search list length ``ef``."""
    from pipelines.store import FACES, READ_CONSISTENCY

    rows = []
    for k in (100, 1000):
        ref = None
        for ef in sorted((e for e in efs if e >= k), reverse=True):
            lat, found = [], []
            for v in probes:
                t0 = time.perf_counter()
                hits = store.client.search(
                    FACES,
                    data=[v.tolist()],
                    limit=k,
                    search_params={"metric_type": "IP", "params": {"ef": ef}},
                    output_fields=["track_id"],
                    consistency_level=READ_CONSISTENCY[FACES],  # as VectorStore.search
                )
                lat.append(time.perf_counter() - t0)
                found.append({h["id"] for h in hits[0]})
            ref = ref or found
            recall = np.mean([len(a & b) / max(len(b), 1) for a, b in zip(found, ref, strict=True)])
            rows.append({"top_k": k, "ef": ef, **pct(lat), "recall_vs_largest_ef": float(recall)})
            print(f"  ef curve: {rows[-1]}", flush=True)
    return rows


def bench_store(kind: str, work: Path, args, uri: str | None, server_pid: int | None) -> dict:
    from pipelines.store import FACES, VectorStore

    base = dict(np.load(work / "base.npz"))
    gallery = probe_gallery(settings_for(work / "real-home"))[1]
    gallery.embeddings = base["probe"].astype(np.float32)  # the probe stage 1 saved
    home = work / f"{kind}-home"
    if not args.reuse_store:
        shutil.rmtree(home, ignore_errors=True)
    settings = settings_for(home, uri)
    pid = server_pid or os.getpid()
    rss0 = rss_kb(pid)
    t0 = time.perf_counter()
    store = VectorStore.open(settings).bind(gallery.embedder)
    cap = float(np.min(gallery.review_thresholds))
    # Milvus 2.3 servers refuse a JSON array; the benchmark stores the box as an object there
    noise = (args.noise, args.sighting_noise)
    reps = Replicas(base, noise, uri is not None, cap, args.sightings)
    out = {"store": store.where, "synthetic": reps.describe(args.rows), "load_before": load()}
    print(f"{kind}: {json.dumps(out['synthetic'], indent=1)}", flush=True)
    if args.reuse_store:
        store.client.load_collection(FACES)
        out["reused_store"] = {"open_load_s": round(time.perf_counter() - t0, 1)}
        out["reused_store"]["rows"] = store.count(FACES)
    else:
        out["build"] = build(store, reps, args.rows, args.batch)
        print(f"  built: {out['build']}", flush=True)
    out["load_after_build"] = load()
    track_map = TrackMap(Catalog.open(home))
    if track_map.faces() != args.rows:  # a store built before the map: map it now
        out["track_map"] = write_track_map(track_map, reps, args.rows)
    out["queries"] = queries(store, reps, base["probe"], args, gallery, track_map)
    track_map.catalog.close()
    out["load_after_queries"] = load()
    out["rss_mb"] = round(rss_kb(pid) / 1024)
    out["rss_growth_mb"] = round((rss_kb(pid) - rss0) / 1024) if server_pid is None else None
    print(f"  RSS {out['rss_mb']} MB (growth {out['rss_growth_mb']} MB)", flush=True)
    store.close()
    return out


def load() -> list[float]:
    """The machine's 1/5/15-minute load averages (2 cores, shared with other jobs)."""
    return [round(x, 2) for x in os.getloadavg()]


def server_stage(work: Path, args) -> dict:
    """Run inside ``unshare -n``: a Milvus 2.3.5 standalone server on loopback only."""
    from milvus import default_server

    data = work / "server-data"
    if not args.reuse_store:
        shutil.rmtree(data, ignore_errors=True)
    default_server.set_base_dir(str(data))
    t0 = time.perf_counter()
    default_server.start()
    started = time.perf_counter() - t0
    try:
        listen = subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout
        ifaces = subprocess.run(["ip", "-brief", "addr"], capture_output=True, text=True).stdout
        uri = f"http://127.0.0.1:{default_server.listen_port}"
        out = bench_store("server", work, args, uri, default_server.server_proc.pid)
        out["start_s"] = round(started, 1)
        out["network"] = {"interfaces": ifaces.split("\n"), "listening": listen.count("LISTEN")}
    finally:
        default_server.stop()
    return out


def stage_args(args) -> list[str]:
    out = ["--rows", str(args.rows), "--batch", str(args.batch), "--queries", str(args.queries)]
    out += ["--noise", str(args.noise), "--sightings", str(args.sightings)]
    out += ["--sighting-noise", str(args.sighting_noise)]
    out += ["--full-runs", str(args.full_runs), "--curve-queries", str(args.curve_queries)]
    out += ["--ef", ",".join(map(str, args.ef))] if args.ef else []
    return out + (["--reuse-store"] if args.reuse_store else [])


def run_server_isolated(work: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--stage", "server", "--work", str(work), *stage_args(args)]
    shell = "ip link set lo up && exec " + " ".join(cmd)
    env = {**os.environ, IN_NETNS: "1"}
    proc = subprocess.run(["unshare", "-n", "sh", "-c", shell], check=False, env=env)
    path = work / "server.json"
    if proc.returncode != 0 or not path.exists():
        return {"error": f"server stage failed (exit {proc.returncode}); see output above"}
    return json.loads(path.read_text())


# -- report ------------------------------------------------------------------------------
def table(res: dict) -> None:
    print("\nIndexed search on a face index of 1M faces (see 'synthetic' for what is real)")
    print(f"{'store':<8}{'rows':>10}{'insert/s':>10}{'p50 top100':>12}{'p99 top100':>12}"
          f"{'p50 top1k':>11}{'p99 top1k':>11}{'full p50':>10}{'full p99':>10}"
          f"{'RSS MB':>8}")  # fmt: skip
    for kind in ("lite", "server"):
        r = res.get(kind)
        if not r or "error" in r:
            print(f"{kind:<8}{(r or {}).get('error', 'skipped')}")
            continue
        q, full = r["queries"], r["queries"].get("indexed_search_top1000", {})
        build = r.get("build") or {"rows": r["reused_store"]["rows"], "insert_rows_per_s": 0}
        print(
            f"{kind:<8}{build['rows']:>10,d}{build['insert_rows_per_s']:>10,d}"
            f"{q['search_top100']['p50_ms']:>12}{q['search_top100']['p99_ms']:>12}"
            f"{q['search_top1000']['p50_ms']:>11}{q['search_top1000']['p99_ms']:>11}"
            f"{full.get('p50_ms', '-'):>10}{full.get('p99_ms', '-'):>10}"
            f"{r['rss_growth_mb'] if kind == 'lite' else r['rss_mb']:>8}"
        )
    print("RSS: lite = growth of this process from opening the store; server = its process")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--full-runs", type=int, default=20, help="full indexed searches timed")
    ap.add_argument("--lfw", type=int, default=500, help="LFW people for real embeddings")
    ap.add_argument("--noise", type=float, default=0.03, help="per-dimension Gaussian sigma")
    ap.add_argument("--sightings", type=int, default=20, help="synthetic files with the probe")
    ap.add_argument("--sighting-noise", type=float, default=0.005, help="sigma in those files")
    ap.add_argument("--ef", type=lambda t: [int(x) for x in t.split(",") if x], default=[],
                    help="HNSW ef values to measure (e.g. 100,200,400,1000,2000)")  # fmt: skip
    ap.add_argument("--curve-queries", type=int, default=30, help="probes per ef")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fw-bench-index"))
    ap.add_argument(
        "--stage",
        choices=["all", "lite", "server", "merge"],
        default="all",
        help="lite / server: that store only (into --work's lite.json / server.json); "
        "merge: put them into --out",
    )
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument(
        "--reuse-store",
        action="store_true",
        help="query the store(s) --work already holds (built by an earlier run): no build",
    )
    ap.add_argument("--no-video", action="store_true", help="stage 1 from LFW photos only")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_index.json")
    ap.add_argument("--reuse-real", action="store_true", help="reuse base.npz from --work")
    return ap.parse_args()


def real_part(args) -> dict:
    real_json = args.work / "real.json"
    if args.reuse_real and real_json.exists():
        return json.loads(real_json.read_text())
    stage = photos_only_stage if args.no_video else real_stage
    real = stage(args.work, args.lfw)
    real_json.write_text(json.dumps(real))
    return real


# above this 1-minute load average at a checkpoint, the run shared the machine
QUIET_LOAD = 2.5


def merge(args) -> dict:
    """The results file: the earlier one's parts, with the stages --work holds now."""
    res = json.loads(args.out.read_text()) if args.out.exists() else {}
    for part in ("real", "lite", "server"):
        path = args.work / f"{part}.json"
        if path.exists():
            got = json.loads(path.read_text())
            if part != "real" and "build" not in got and "build" in res.get(part, {}):
                # a --reuse-store run keeps the build, from an earlier run (whose load
                # averages were those of that run)
                got["build"] = {**res[part]["build"], "from_an_earlier_run": True}
            for kept in ("strong_consistency_queries",):  # a one-off run's measurement
                if kept not in got and kept in res.get(part, {}):
                    got[kept] = res[part][kept]
            res[part] = got
    for stale in ("lite_reopened", "noise_sigma", "data"):  # the old layout's entries
        res.pop(stale, None)
    res["rows"] = args.rows
    loads = [
        x
        for part in ("lite", "server")
        for key in ("load_before", "load_after_build", "load_after_queries")
        for x in res.get(part, {}).get(key, [])[:1]
    ]
    span = f"{min(loads):g}-{max(loads):g}" if loads else "not recorded"
    quiet = bool(loads) and max(loads) < QUIET_LOAD
    res["machine"] = f"2 cores (1-minute load average {span} at the run's checkpoints)"
    res["note"] = (
        f"Measured on a quiet 2-core machine (1-minute load average {span} at the run's "
        "checkpoints: see load_* in each part)."
        if quiet
        else f"Measured on a 2-core machine shared with other jobs (1-minute load average "
        f"{span} at the run's checkpoints: see load_* in each part), so latencies are upper "
        "bounds; rerun the queries on a quiet machine with --reuse-store."
    ) + " The index is partly synthetic:"
    res["indexes"] = "HNSW (M 16, efConstruction 128) on fw_faces vectors; INVERTED on " \
        "source_id, source_path, case_ref, track_id, timestamp_s, indexed_at"  # fmt: skip
    return res


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage == "server" and os.environ.get(IN_NETNS) == "1":  # run_server_isolated
        (args.work / "server.json").write_text(
            json.dumps(server_stage(args.work, args), default=str)
        )
        return
    if args.stage in ("all", "lite"):
        if not args.reuse_store:
            print(f"real stage: {json.dumps(real_part(args))}", flush=True)
            import ray

            ray.shutdown()  # free the cores for the store
        lite = bench_store("lite", args.work, args, None, None)
        (args.work / "lite.json").write_text(json.dumps(lite, default=str))
    if args.stage == "server" or (args.stage == "all" and not args.skip_server):
        server = run_server_isolated(args.work, args)
        (args.work / "server.json").write_text(json.dumps(server, default=str))
    res = merge(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str))
    table(res)


if __name__ == "__main__":
    main()
