"""Indexed retrospective search at scale: probe queries on a face index of >= 1 million faces.

Stages (each prints what it does):

1. real: index the two shared videos with the real pipeline (Ray + FacePool, as
   ``facewatch index``), and time, on the same videos, an archive re-search (decoding
   again, as ``facewatch search --probe``) and an indexed search of the small real index.
   Real embeddings also come from LFW photos (one per person). Cached in --work.
2. build: a face index of --rows faces. The real faces (unit 0) are kept as they are;
   every other unit is a copy of all real faces with Gaussian noise (--noise per
   dimension, then renormalised) under a new file id. So the store holds REAL EMBEDDINGS
   REPLICATED WITH SMALL NOISE, not a real 1M-face archive.
3. query: --queries single-probe vector searches (the Lin-Manuel photo and noisy real
   faces), p50/p99 latency; the full indexed search (search + reading back candidate tracks
   + sightings) for the Lin-Manuel photo; memory (RSS).

For milvus-lite (in this process: RSS of this process, minus before opening) and for a
Milvus server (the ``milvus`` 2.3.5 standalone package, RSS of its process) by URI. The
server binds its gRPC ports on all interfaces, so it runs in a private network namespace
(``unshare -n``) whose only interface is loopback: nothing can reach it from outside.

    .venv/bin/python benchmarks/bench_index.py             # all, ~15-25 min on 2 cores
    .venv/bin/python benchmarks/bench_index.py --rows 100000 --skip-server   # quicker
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

DATA = ROOT.parent / "shared" / "data"
VIDEOS = [DATA / "video" / "short_hamilton_clip.mp4", DATA / "video" / "facenet_pytorch_video.mp4"]
PROBE = DATA / "known" / "lin-manuel-miranda.png"
RESULTS = ROOT / "benchmarks" / "results"
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
        res = IndexedSearch(h.vectors(), gallery, settings.search.link_gap_s).run(1000)
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
    """Rows of unit u: the real faces, noisy after unit 0, under file id ``u``."""

    def __init__(self, base: dict, noise: float, json_box_object: bool, seed: int = 0):
        n_lfw = len(base["lfw"])
        self.emb = np.concatenate([base["video_embedding"], base["lfw"]]).astype(np.float32)
        self.frame = np.concatenate([base["video_frame_index"], np.zeros(n_lfw, np.int64)])
        self.t = np.concatenate([base["video_timestamp_s"], np.zeros(n_lfw)])
        self.face = np.concatenate([base["video_face_index"], np.zeros(n_lfw, np.int64)])
        # LFW photos: each its own "file" inside a unit, one track each
        self.track = np.concatenate([base["video_track_id"], np.arange(n_lfw) + 100000])
        self.box = np.concatenate([base["video_box"], np.tile([[60, 60, 190, 190]], (n_lfw, 1))])
        self.n = len(self.emb)
        self.noise = noise
        self.json_box_object = json_box_object
        self.rng = np.random.default_rng(seed)

    def rows(self, start: int, count: int) -> list[dict]:
        idx = np.arange(start, start + count)
        unit, i = idx // self.n, idx % self.n
        emb = self.emb[i].copy()
        noisy = unit > 0
        emb[noisy] += self.rng.normal(0, self.noise, (int(noisy.sum()), emb.shape[1]))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        now = int(time.time())
        out = []
        for k in range(count):
            box = [float(x) for x in self.box[i[k]]]
            out.append(
                {
                    "id": f"b{unit[k]}_{i[k]}",
                    "embedding": emb[k].tolist(),
                    "source_id": f"u{unit[k]:07d}",
                    "source_path": f"/archive/unit{unit[k]:07d}.mp4",
                    "frame_index": int(self.frame[i[k]]),
                    "timestamp_s": float(self.t[i[k]]),
                    "box": {"xyxy": box} if self.json_box_object else box,
                    "thumbnail": "",
                    "case_ref": "BENCH",
                    "created_at": now,
                    "face_index": int(self.face[i[k]]),
                    "track_id": int(self.track[i[k]]),
                    "quality": 1.0,
                    "indexed_at": now,
                }
            )
        return out


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


def queries(store, reps: Replicas, probe: np.ndarray, n: int, gallery, end_to_end: bool) -> dict:
    from jobs.archive.index_search import IndexedSearch
    from pipelines.store import FACES

    rng = np.random.default_rng(1)
    probes = [probe[0]]
    for i in rng.integers(0, reps.n, n - 1):
        v = reps.emb[i] + rng.normal(0, reps.noise, reps.emb.shape[1])
        probes.append(v / np.linalg.norm(v))
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
    if end_to_end:
        job = IndexedSearch(store, gallery, 2.5)
        lat, res = [], None
        for _ in range(min(20, n)):
            t0 = time.perf_counter()
            res = job.run(1000)
            lat.append(time.perf_counter() - t0)
        out["indexed_search_top1000"] = {
            **pct(lat),
            "hits_above_threshold": res.hits,
            "files_with_sightings": len(res.files),
            "sightings": len(res.sightings),
            "saturated": res.saturated,
        }
        print(f"  full indexed search: {out['indexed_search_top1000']}", flush=True)
    return out


def bench_store(kind: str, work: Path, args, uri: str | None, server_pid: int | None) -> dict:
    from pipelines.store import VectorStore

    base = dict(np.load(work / "base.npz"))
    gallery = probe_gallery(settings_for(work / "real-home"))[1]
    gallery.embeddings = base["probe"].astype(np.float32)  # the probe stage 1 saved
    home = work / f"{kind}-home"
    shutil.rmtree(home, ignore_errors=True)
    settings = settings_for(home, uri)
    pid = server_pid or os.getpid()
    rss0 = rss_kb(pid)
    store = VectorStore.open(settings).bind(gallery.embedder)
    # Milvus 2.3 servers refuse a JSON array; the benchmark stores the box as an object there
    reps = Replicas(base, args.noise, json_box_object=uri is not None)
    print(f"{kind}: {reps.n} real faces, {args.rows:,d} rows, noise {args.noise}", flush=True)
    out = {"store": store.where, "real_faces_per_unit": reps.n}
    out["build"] = build(store, reps, args.rows, args.batch)
    print(f"  built: {out['build']}", flush=True)
    out["queries"] = queries(store, reps, base["probe"], args.queries, gallery, uri is None)
    out["rss_mb"] = round(rss_kb(pid) / 1024)
    out["rss_growth_mb"] = round((rss_kb(pid) - rss0) / 1024) if server_pid is None else None
    print(f"  RSS {out['rss_mb']} MB (growth {out['rss_growth_mb']} MB)", flush=True)
    store.close()
    return out


def reopen_stage(work: Path, args) -> dict:
    """A fresh process opens the built milvus-lite store: RSS it adds, and query latency
    without Ray and the models in the process."""
    from pipelines.store import FACES, VectorStore

    base = dict(np.load(work / "base.npz"))
    gallery = probe_gallery(settings_for(work / "real-home"))[1]
    rss0 = rss_kb(os.getpid())
    t0 = time.perf_counter()
    store = VectorStore.open(settings_for(work / "lite-home")).bind(gallery.embedder)
    out = {"open_load_s": round(time.perf_counter() - t0, 1), "rows": store.count(FACES)}
    reps = Replicas(base, args.noise, json_box_object=False)
    out["queries"] = queries(store, reps, base["probe"], args.queries, gallery, False)
    out["rss_growth_mb"] = round((rss_kb(os.getpid()) - rss0) / 1024)
    out["rss_mb"] = round(rss_kb(os.getpid()) / 1024)
    print(f"  reopened lite store: {out}", flush=True)
    store.close()
    return out


def server_stage(work: Path, args) -> dict:
    """Run inside ``unshare -n``: a Milvus 2.3.5 standalone server on loopback only."""
    from milvus import default_server

    data = work / "server-data"
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


def run_server_isolated(work: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--stage", "server", "--work", str(work)]
    cmd += ["--rows", str(args.rows), "--batch", str(args.batch), "--queries", str(args.queries)]
    cmd += ["--noise", str(args.noise)]
    shell = "ip link set lo up && exec " + " ".join(cmd)
    proc = subprocess.run(["unshare", "-n", "sh", "-c", shell], check=False)
    path = work / "server.json"
    if proc.returncode != 0 or not path.exists():
        return {"error": f"server stage failed (exit {proc.returncode}); see output above"}
    return json.loads(path.read_text())


# -- report ------------------------------------------------------------------------------
def table(res: dict) -> None:
    print("\nIndexed search on a face index of real embeddings replicated with small noise")
    print(f"{'store':<12}{'rows':>10}{'insert/s':>10}{'p50 top100':>12}{'p99 top100':>12}"
          f"{'p50 top1k':>11}{'p99 top1k':>11}{'full p50':>10}{'full p99':>10}"
          f"{'RSS MB':>8}")  # fmt: skip
    for kind in ("lite", "server"):
        r = res.get(kind)
        if not r or "error" in r:
            print(f"{kind:<12}{(r or {}).get('error', 'skipped')}")
            continue
        q, full = r["queries"], r["queries"].get("indexed_search_top1000", {})
        print(
            f"{kind:<12}{r['build']['rows']:>10,d}{r['build']['insert_rows_per_s']:>10,d}"
            f"{q['search_top100']['p50_ms']:>12}{q['search_top100']['p99_ms']:>12}"
            f"{q['search_top1000']['p50_ms']:>11}{q['search_top1000']['p99_ms']:>11}"
            f"{full.get('p50_ms', '-'):>10}{full.get('p99_ms', '-'):>10}"
            f"{r['rss_growth_mb'] if kind == 'lite' else r['rss_mb']:>8}"
        )
    ro = res.get("lite_reopened")
    if ro:
        q = ro["queries"]
        print(
            f"{'lite reopen':<12}{ro['rows']:>10,d}{'-':>10}"
            f"{q['search_top100']['p50_ms']:>12}{q['search_top100']['p99_ms']:>12}"
            f"{q['search_top1000']['p50_ms']:>11}{q['search_top1000']['p99_ms']:>11}"
            f"{'-':>10}{'-':>10}{ro['rss_growth_mb']:>8}"
        )
    print("RSS: lite = growth of this process from opening the store; server = its process")
    real = res.get("real", {})
    if "archive_research" in real:  # not with --no-video
        a, s = real["archive_research"], real["indexed_search_small"]
        print(
            f"\nSame two videos ({a['video_s']} s): archive re-search (decoding) {a['wall_s']} s, "
            f"indexed search {s['wall_s']} s; indexing them took {real['index']['wall_s']} s."
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--lfw", type=int, default=500, help="LFW people for real embeddings")
    ap.add_argument("--noise", type=float, default=0.03, help="per-dimension Gaussian sigma")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fw-bench-index"))
    ap.add_argument(
        "--stage",
        choices=["all", "server", "merge", "reopen"],
        default="all",
        help="reopen: query the built lite store from a fresh process; merge: put --work's "
        "server.json / reopen.json (stages run on their own) into the results",
    )
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument("--no-video", action="store_true", help="stage 1 from LFW photos only")
    ap.add_argument(
        "--out", type=Path, default=RESULTS / "bench_index.json", help="results file (stage all)"
    )
    ap.add_argument("--reuse-real", action="store_true", help="reuse base.npz from --work")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage == "server":
        (args.work / "server.json").write_text(json.dumps(server_stage(args.work, args)))
        return
    if args.stage == "reopen":
        (args.work / "reopen.json").write_text(json.dumps(reopen_stage(args.work, args)))
        return
    if args.stage == "merge":
        res = json.loads((RESULTS / "bench_index.json").read_text())
        for part in ("server", "reopen"):
            if (args.work / f"{part}.json").exists():
                res[part if part == "server" else "lite_reopened"] = json.loads(
                    (args.work / f"{part}.json").read_text()
                )
        (RESULTS / "bench_index.json").write_text(json.dumps(res, indent=2, default=str))
        table(res)
        return
    res: dict = {"rows": args.rows, "noise_sigma": args.noise, "data": "real embeddings "
                 f"({'LFW' if args.no_video else '2 videos + LFW'}) replicated with Gaussian "
                 "noise"}  # fmt: skip
    real_json = args.work / "real.json"
    if args.reuse_real and real_json.exists():
        res["real"] = json.loads(real_json.read_text())
    else:
        stage = photos_only_stage if args.no_video else real_stage
        res["real"] = stage(args.work, args.lfw)
        real_json.write_text(json.dumps(res["real"]))
    print(f"real stage: {json.dumps(res['real'])}", flush=True)
    import ray

    ray.shutdown()  # free the cores for the store
    res["lite"] = bench_store("lite", args.work, args, None, None)
    if not args.skip_server:
        res["server"] = run_server_isolated(args.work, args)
    res["indexes"] = "HNSW (M 16, efConstruction 128) on fw_faces vectors; INVERTED on " \
        "source_id, source_path, case_ref, track_id, timestamp_s, indexed_at"  # fmt: skip
    res["load"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str))
    table(res)


if __name__ == "__main__":
    main()
