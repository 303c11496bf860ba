"""Soak: 4 cameras at 5 fps on the real live server for a long while, with an archive search
started every few minutes on the same pool; does anything grow or slow down?

The server, cameras and searches are bench_live.py's (local Ray Serve on 127.0.0.1, MTCNN +
dlib-resnet in the FacePool, real frames of short_hamilton_clip.mp4 pushed as JPEG, an
archive search as its own `facewatch search` process with ``--ray-address``). Measured per
window (5 minutes by default):
- RSS of every process of the server (this driver and every Ray process under it, named by
  its Ray title: FacePool replicas, LiveHub, Api, raylet, ...), from /proc;
- open file descriptors of the same processes, by kind (socket, pipe, eventfd, file, ...)
  and per process (a leak in one process is told apart from Ray starting more workers);
- frames sent, dropped, and p99 frame-to-result latency;
- errors: answers other than analysed/dropped/skipped (an "error", an HTTP status), and
  archive searches that failed;
- live alerts in the store (the hub's /v1/stats). The server runs with the shipped
  ``live.alert_window_s`` (``--alert-window-s``): at most one alert per person per camera
  in that window. With 0 every track of the watch-listed face alerts (thousands an hour
  from the looping clip), and on milvus-lite each alert is a row the embedded store keeps
  inside the LiveHub: its RSS then grows with the data (benchmarks/hub_alert_memory.py).

Between windows, every process group's RSS is also read every ``--sample-s`` seconds (30 by
default): the slopes are fitted to these samples, since one value a window moves by a few MB
with what a process happens to hold at that moment.

At the end: each process group's RSS slope in % per hour after the first window (warm-up),
the FD growth after warm-up, and the p99 of the last window over the first.
Targets (issue 16): RSS slope below 1%/h, no FD growth, last p99 within 1.2x of the first,
0 errors. Prints a table, writes benchmarks/results/soak_live.json (``--out``).

Run: ``.venv/bin/python benchmarks/soak_live.py --minutes 30``; ``--minutes 2`` is the short
version tests/test_soak.py runs (windows of a quarter of the run when that is under 5 min).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_live as bl  # noqa: E402 - the live benchmark's server, cameras and search
from procs import group_of, server_processes  # noqa: E402 - the server's processes

from pipelines.config import LiveConfig  # noqa: E402 - the shipped alert window
from serve.memprobe import rss_parts  # noqa: E402 - VmRSS and its parts, from /proc

OUT = bl.ROOT / "benchmarks" / "results" / "soak_live.json"
# answers that are not errors: analysed, replaced by a newer frame (dropped), or over the
# camera's analysed rate (skipped); anything else ("error", an HTTP status) is an error
GOOD = {"analysed", "dropped", "skipped"}
OWN = ":facewatch:"  # in the title of the facewatch application's Serve replicas


# -- processes, from /proc ------------------------------------------------------------------
def fd_kinds(pid: int) -> dict[str, int]:
    """The process's open descriptors by kind: socket, pipe, eventfd (or another
    anon_inode's name), dev, file."""
    kinds: dict[str, int] = defaultdict(int)
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith(("socket:", "pipe:")):
            kinds[target.split(":")[0]] += 1
        elif target.startswith("anon_inode:"):
            kinds[target[len("anon_inode:") :].strip("[]")] += 1
        else:
            kinds["dev" if target.startswith("/dev/") else "file"] += 1
    return dict(kinds)


def sample() -> tuple[dict[str, dict], dict[str, int]]:
    """({group: {"rss_kb", "fds", "n", "fd_kinds"}}, {pid: fds}) over the server's
    processes now. The per-pid counts tell a process that leaks descriptors from a group
    that grows by processes (Ray starting workers)."""
    out: dict[str, dict] = defaultdict(
        lambda: {
            "rss_kb": 0,
            "anon_kb": 0,
            "file_kb": 0,
            "shmem_kb": 0,
            "threads": 0,
            "fds": 0,
            "n": 0,
            "fd_kinds": {},
        }  # fmt: skip
    )
    per_pid: dict[str, int] = {}
    for pid in server_processes():
        try:
            parts = rss_parts(pid)
            kinds = fd_kinds(pid)
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        g = out[group_of(pid)]
        for key, kb in parts.items():
            g[key] += kb
        g["fds"] += sum(kinds.values())
        g["n"] += 1
        for kind, n in kinds.items():
            g["fd_kinds"][kind] = g["fd_kinds"].get(kind, 0) + n
        per_pid[str(pid)] = sum(kinds.values())
    return dict(out), per_pid


# -- the run ----------------------------------------------------------------------------------
def slope_pct_per_hour(t_s: list[float], values: list[float]) -> float | None:
    """Least-squares slope of ``values`` over time, as % of their mean per hour."""
    if len(values) < 2 or not np.mean(values):
        return None
    slope = np.polyfit(np.asarray(t_s) / 3600.0, np.asarray(values, float), 1)[0]
    return round(float(slope / np.mean(values) * 100), 2)


def rss_by_group() -> dict[str, int]:
    """RSS in KiB per process group now (a light read: no descriptors)."""
    out: dict[str, int] = defaultdict(int)
    for pid in server_processes():
        try:
            out[group_of(pid)] += rss_parts(pid)["rss_kb"]
        except (OSError, IndexError, ValueError, KeyError):
            continue  # gone meanwhile
    return dict(out)


class RssSamples:
    """Every group's RSS every ``every_s`` seconds, timed from the soak's start."""

    def __init__(self, t0: float, every_s: float):
        self.t0, self.every_s, self.next_at = t0, every_s, 0.0
        self.rows: list[dict] = []

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self.next_at:
            self.rows.append({"t_s": round(now - self.t0, 1), "rss_kb": rss_by_group()})
            self.next_at = now + self.every_s


def series(run: dict, g: str, after: list[dict]) -> tuple[list[float], list[float]]:
    """(times, RSS KiB) of group ``g`` after warm-up: the dense samples where the run has
    them and ``g`` is in each one; else one value a window."""
    start = run["windows"][0]["t_s"] if len(after) < len(run["windows"]) else 0.0
    dense = [r for r in run.get("rss_samples", []) if r["t_s"] >= start]
    if len(dense) >= 4 and all(g in r["rss_kb"] for r in dense):
        return [r["t_s"] for r in dense], [r["rss_kb"][g] for r in dense]
    return [r["t_s"] for r in after], [r["processes"][g]["rss_kb"] for r in after]


def second_half(t_s: list[float], values: list[float]) -> tuple[list[float], list[float]]:
    """The samples of the second half of the time after warm-up: a process still settling
    shows a smaller slope there than over the whole, one that leaks the same slope."""
    mid = (t_s[0] + t_s[-1]) / 2 if t_s else 0.0
    keep = [i for i, t in enumerate(t_s) if t >= mid]
    return [t_s[i] for i in keep], [values[i] for i in keep]


class Searches:
    """An archive search started every ``every_s`` (never two at once); failures counted."""

    def __init__(self, work: Path, every_s: float):
        import ray

        self.work, self.every_s = work, every_s
        self.address = ray.get_runtime_context().gcs_address
        self.current: bl.ArchiveSearch | None = None
        self.next_at, self.started, self.failed = 0.0, 0, 0

    def tick(self) -> None:
        cur = self.current
        if cur is not None and not cur.running():
            self.failed += int(cur.proc.returncode != 0)
            self.current = None
        if self.current is None and time.monotonic() >= self.next_at:
            n = self.started = self.started + 1
            out = self.work / f"search-{n}"
            home = self.work / "archive-home"
            self.current = s = bl.ArchiveSearch(home, out, 2.0, bl.CLIP, self.address)
            s.log.parent.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ, FACEWATCH_USER="soak")
            with s.log.open("w") as log:  # started, not waited on: a short clip
                s.proc = subprocess.Popen(
                    s.cmd, cwd=bl.ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log
                )
            self.next_at = time.monotonic() + self.every_s

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()


async def window(base, cams, frames, fps, seconds, searches: Searches, rss: RssSamples):
    ph = bl.Phase()
    run = asyncio.ensure_future(bl.run_phase(base, cams, frames, fps, seconds, ph))
    while not run.done():
        await asyncio.to_thread(searches.tick)
        await asyncio.to_thread(rss.tick)
        await asyncio.wait([run], timeout=5.0)
    await run
    return ph


def alerts_stored(base: str) -> int | None:
    """Live alerts in the store now (the hub's /v1/stats), or None if it did not answer."""
    try:
        r = httpx.get(f"{base}/v1/stats", headers=bl.bearer("bench-op"), timeout=60)
        return int(r.json()["stored"]["live_matches"]) if r.status_code == 200 else None
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def soak(args, base: str, cams: list[str], frames: list[bytes], work: Path) -> dict:
    window_s = args.window_min * 60
    n = max(1, round(args.minutes / args.window_min))
    searches = Searches(work, args.search_every_min * 60)
    t0, rows = time.monotonic(), []
    rss = RssSamples(t0, args.sample_s)
    try:
        for i in range(n):
            pool_before, started = bl.pool_stats(), time.monotonic()
            ph = asyncio.run(window(base, cams, frames, args.fps, window_s, searches, rss))
            pool = bl.pool_delta(pool_before, bl.pool_stats(), time.monotonic() - started)
            s = bl.summarise(ph, cams, window_s, args.fps)
            errors = sum(v for k, v in ph.status.items() if k not in GOOD)
            rows.append({"t_s": round(time.monotonic() - t0, 1), "window": i + 1,
                         "frames_sent": s["frames_sent"], "drop_rate": s["drop_rate"],
                         "p99_ms": s["frame_to_result_ms"]["p99"], "errors": errors,
                         "statuses": dict(ph.status), "pool": pool,
                         "searches_started": searches.started, "alerts_stored": alerts_stored(base),
                         **dict(zip(("processes", "pid_fds"), sample(), strict=True))})  # fmt: skip
            print(_line(rows[-1]), flush=True)
    finally:
        searches.stop()
    return {"windows": rows, "rss_samples": rss.rows, "searches_started": searches.started,
            "searches_failed": searches.failed}  # fmt: skip


def _line(r: dict) -> str:
    rss = sum(g["rss_kb"] for g in r["processes"].values()) / 1024
    fds = sum(g["fds"] for g in r["processes"].values())
    return (f"window {r['window']:>2}  t={r['t_s']:>7.0f}s  sent {r['frames_sent']:>5}  "
            f"drops {r['drop_rate']:.3f}  p99 {r['p99_ms']} ms  RSS {rss:,.0f} MiB  "
            f"FDs {fds}  errors {r['errors']}  model {r['pool']['model_ms_per_frame']} ms/frame  "
            f"trims {r['pool']['trims']} ({r['pool']['trim_ms_total']} ms, max "
            f"{r['pool']['trim_ms_max_so_far']})")  # fmt: skip


def fd_detail(first: dict, last: dict, steady: list[str]) -> dict:
    """Where descriptors grew between two windows: in the same processes (by pid: a leak
    in a process shows here, Ray starting more workers does not), by kind over the groups
    alive throughout, and how many processes each of those groups had."""
    same = set(first.get("pid_fds", {})) & set(last.get("pid_fds", {}))
    kinds_first, kinds_last = _kinds(first, steady), _kinds(last, steady)
    return {
        "fd_growth_same_processes": sum(last["pid_fds"][p] - first["pid_fds"][p] for p in same),
        "fd_growth_by_kind": {
            k: kinds_last.get(k, 0) - kinds_first.get(k, 0)
            for k in sorted(set(kinds_first) | set(kinds_last))
        },
        "processes_after_warmup": {
            g: [first["processes"][g]["n"], last["processes"][g]["n"]] for g in steady
        },
    }


def _kinds(row: dict, groups: list[str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for g in groups:
        for kind, n in row["processes"][g].get("fd_kinds", {}).items():
            out[kind] += n
    return dict(out)


def growth_per_frame(rows: list[dict], after: list[dict], steady: list[str]) -> dict:
    """RSS growth per 1,000 analysed frames after warm-up (least-squares slope of RSS over
    the running count of analysed frames): unlike %/hour it does not depend on how many
    frames a loaded machine managed to analyse. And the growth of each part of RSS
    (anonymous, file-backed, shared memory: Ray's object store) from the first window
    after warm-up to the last, which tells heap growth from pages merely touched."""
    done = np.cumsum([r["statuses"].get("analysed", 0) for r in rows])[-len(after) :]
    per_1k, parts = {}, {}
    for g in steady:
        rss = [r["processes"][g]["rss_kb"] for r in after]
        if len(after) > 1 and done[-1] > done[0]:
            per_1k[g] = round(float(np.polyfit(done / 1000.0, rss, 1)[0]), 1)
        first, last = after[0]["processes"][g], after[-1]["processes"][g]
        parts[g] = {k: last.get(k, 0) - first.get(k, 0) for k in ("anon_kb", "file_kb", "shmem_kb")}
    return {"rss_kb_per_1k_analysed_frames": per_1k, "rss_part_growth_kb": parts}


def own_and_ray(run: dict, after: list[dict], steady: list[str]) -> dict:
    """facewatch's own processes (the facewatch application's Serve replicas) apart from
    Ray's (its daemons, Serve's controller and proxy, Ray Data's actors), whose growth is
    given per archive search started after warm-up: each search is a new Ray job, and Ray
    keeps some of every finished job (benchmarks/ray_per_search.py measures it alone). And
    each group's thread count growth after warm-up (a thread's stack is anonymous memory)."""
    own = [g for g in steady if OWN in g]
    searches = after[-1].get("searches_started", 0) - after[0].get("searches_started", 0)
    first, last = after[0]["processes"], after[-1]["processes"]
    ray = [g for g in steady if OWN not in g and g != "driver"]
    return {
        "facewatch_groups": own,
        "facewatch_rss_slope_pct_per_hour": {
            g: slope_pct_per_hour(*series(run, g, after)) for g in own
        },
        "searches_after_warmup": searches,
        "ray_rss_kib_per_search_after_warmup": {
            g: round((last[g]["rss_kb"] - first[g]["rss_kb"]) / searches, 1) for g in ray
        } if searches else {},
        "thread_growth_after_warmup": {
            g: last[g].get("threads", 0) - first[g].get("threads", 0) for g in steady
        },
    }  # fmt: skip


def _grew(after: list[dict], key: str) -> int | None:
    """How much a per-window count grew after warm-up (None where a window lacks it)."""
    first, last = after[0].get(key), after[-1].get(key)
    return last - first if first is not None and last is not None else None


def verdict(run: dict) -> dict:
    """Slopes and growth after the first window (warm-up), and the targets met or not."""
    rows = run["windows"]
    after = rows[1:] if len(rows) > 2 else rows
    groups = sorted({g for r in after for g in r["processes"]})
    # processes alive in every window after warm-up: a search's driver and its workers come
    # and go with the search (their descriptors are not a leak of the server's)
    steady = [g for g in groups if all(g in r["processes"] for r in after)]
    slopes = {g: slope_pct_per_hour(*series(run, g, after)) for g in steady}
    late = {g: slope_pct_per_hour(*second_half(*series(run, g, after))) for g in steady}
    fds = [sum(r["processes"][g]["fds"] for g in steady) for r in after]
    p99s = [r["p99_ms"] for r in rows if r["p99_ms"] is not None]
    errors = sum(r["errors"] for r in rows) + run["searches_failed"]
    out = {
        "rss_slope_pct_per_hour": slopes,
        "rss_slope_pct_per_hour_second_half": late,
        **growth_per_frame(rows, after, steady),
        "fd_growth_after_warmup": fds[-1] - fds[0],
        **fd_detail(after[0], after[-1], steady),
        **own_and_ray(run, after, steady),
        "rss_samples_after_warmup": len(series(run, "driver", after)[0]),
        "alerts_stored_after_warmup": _grew(after, "alerts_stored"),
        "p99_last_over_first": round(p99s[-1] / p99s[0], 2) if len(p99s) > 1 else None,
        "errors": errors,
    }
    out["targets_met"] = {
        "rss_slope_below_1pct_per_hour": all(v is not None and v < 1 for v in slopes.values()),
        "facewatch_rss_slope_below_1pct_per_hour": all(
            v is not None and v < 1 for v in out["facewatch_rss_slope_pct_per_hour"].values()
        ),
        "no_fd_growth": out["fd_growth_after_warmup"] <= 0,
        "p99_within_1.2x": out["p99_last_over_first"] is not None
        and out["p99_last_over_first"] <= 1.2,
        "no_errors": errors == 0,
    }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--window-min", type=float, default=None, help="default: min(5, minutes/4)")
    ap.add_argument("--search-every-min", type=float, default=None, help="default: a window")
    ap.add_argument("--sample-s", type=float, default=30.0, help="RSS read between windows")
    ap.add_argument(
        "--alert-window-s", type=float, default=LiveConfig().alert_window_s,
        help="the server's live.alert_window_s (default: the shipped default; 0: every track "
        "of the watch-listed face alerts, thousands an hour, each a row the embedded store "
        "keeps in the LiveHub's memory)",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.window_min = args.window_min or min(5.0, args.minutes / 4)
    args.search_every_min = args.search_every_min or args.window_min
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    from pipelines.video import video_jpegs
    from serve.local import free_port, stop_local

    work = Path(tempfile.mkdtemp(prefix="soak-live-"))
    bl.enrol(work / "live-home")
    frames = video_jpegs(bl.CLIP, every=6)
    port, cams = free_port(), [f"cam{i + 1}" for i in range(args.cameras)]
    bl.start_server(work / "live-home", port, cams, args.alert_window_s)
    base = f"http://127.0.0.1:{port}"
    try:
        for c in cams:
            spec = {"id": c, "url": "push", "fps": args.fps, "list": "watch"}
            admin = bl.bearer("bench-admin")
            r = httpx.post(f"{base}/v1/cameras", json=spec, headers=admin, timeout=60)
            r.raise_for_status()
        run = soak(args, base, cams, frames, work)
    finally:
        stop_local()
    result = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              **run, "verdict": verdict(run)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["verdict"], indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
