"""`facewatch search` as separate processes, for the fault tests (tests/jobs/test_search_
resume.py, tests/jobs/test_store_outage.py): run one, start one in the background, watch
its progress in the catalog, and read back what it wrote."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
from videofiles import remux

ROOT = Path(__file__).resolve().parents[1]
CLIP = "video/short_hamilton_clip.mp4"


def copies_of_the_clip(data: Path, folder: Path, n: int) -> Path:
    """``n`` copies of the Hamilton clip remuxed with different metadata: each its own file
    (its own content hash) with the same frames, so each has the same matches."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        remux(data / CLIP, folder / f"cam{i}.mp4", title=f"c{i}")
    return folder


def cmd(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "jobs.cli", "--home", str(home), *args]


def env(**extra: str) -> dict[str, str]:
    return dict(os.environ, FACEWATCH_USER="tester", PYTHONPATH=str(ROOT), **extra)


def run(home: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd(home, *args), cwd=ROOT, env=env(**extra_env), capture_output=True, text=True,
        timeout=400,
    )  # fmt: skip


def start(home: Path, args: list[str], **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen(
        cmd(home, *args), cwd=ROOT, env=env(**extra_env), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@contextmanager
def killed_on_exit(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """A started search that must not outlive the test: SIGKILLed if still running."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def completed(home: Path) -> int:
    """Completion records in the catalog (all searches), read as another process would."""
    path = home / "catalog.sqlite"
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT count(*) FROM search_files").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not there yet
        return 0
    finally:
        db.close()


def when_a_file_is_done(home: Path, proc: subprocess.Popen) -> None:
    """Return once the search has recorded its first file complete (records of earlier
    searches in this home are counted first)."""
    before, deadline = completed(home), time.monotonic() + 300
    while completed(home) <= before:
        assert proc.poll() is None, f"the search ended too soon: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no file was completed in 300 s"
        time.sleep(0.1)  # another process's progress: nothing to wait on but the catalog


def outputs(out: Path) -> tuple[list[str], list[tuple]]:
    """(sorted match ids, sorted sightings) of a finished search's output folder."""
    ids = sorted(pq.read_table(out / "matches.parquet").column("match_id").to_pylist())
    keys = ("sighting_id", "person_id", "source_id", "start_s", "end_s", "best_score", "tier")
    rows = pq.read_table(out / "sightings.parquet").to_pylist()
    return ids, sorted(tuple(r[k] for k in keys) for r in rows)


def my_ray_processes(title: str) -> list[int]:
    """Processes under this one (the local Ray this test process started) whose Ray title
    contains ``title`` (``ray::ServeReplica:facewatch:FacePool``), read from /proc: no
    dashboard needed, and no other Ray on the machine is ever touched."""
    kids: dict[int, list[int]] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # not a process, or gone meanwhile
        kids.setdefault(ppid, []).append(int(name))
    found, todo = [], list(kids.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo += kids.get(pid, [])
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if argv0.startswith("ray::") and title in argv0:
            found.append(pid)
    return found
