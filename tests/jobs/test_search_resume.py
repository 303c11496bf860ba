"""Fault 3 of issue 16: a `facewatch search` process killed part way (a real SIGKILL of the
CLI process), then rerun with the same arguments.

The rerun must skip the files the killed run completed (their completion records in the
catalog, written after their matches were stored), search the rest, and end with the same
match ids and sightings as an undisturbed run of the same search; the store must hold each
match once. Real Ray, FacePool, MTCNN, dlib-resnet and milvus-lite; the inputs are copies
of the Hamilton clip remuxed with different metadata, so each is its own file (its own
content hash) with the same faces.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from videofiles import remux

from pipelines.config import Settings
from pipelines.engine import FaceEngine
from pipelines.home import Home
from pipelines.store import MATCHES

ROOT = Path(__file__).resolve().parents[2]
N_FILES = 5
CASE = ["--case", "FAULT-3", "--reason", "fault test: search killed and resumed"]

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _cmd(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "jobs.cli", "--home", str(home), *args]


def _env() -> dict[str, str]:
    return dict(os.environ, FACEWATCH_USER="tester", PYTHONPATH=str(ROOT))


def _run(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _cmd(home, *args), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=400
    )


def _completed(home: Path) -> int:
    """Completion records in the catalog, read as another process would (WAL)."""
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


@pytest.fixture(scope="module")
def archive(data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("archive")
    for i in range(N_FILES):
        remux(data / "video" / "short_hamilton_clip.mp4", folder / f"cam{i}.mp4", title=f"c{i}")
    return folder


@pytest.fixture(scope="module")
def enrolled_home(data, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    proc = _run(
        home, "watchlist", "add", "Lin-Manuel Miranda", str(data / "known/lin-manuel-miranda.png")
    )
    assert proc.returncode == 0, proc.stderr
    return home


def _kill_part_way(home: Path, args: list[str]) -> int:
    """Start the search, SIGKILL it once its first file is recorded complete; returns how
    many files were recorded when it died."""
    proc = subprocess.Popen(
        _cmd(home, *args), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while _completed(home) < 1:
            assert proc.poll() is None, f"the search ended before the kill: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no file was completed in 300 s"
            time.sleep(0.1)  # another process's progress: nothing to wait on but the catalog
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    return _completed(home)


def _outputs(out: Path) -> tuple[list[str], list[tuple]]:
    ids = sorted(pq.read_table(out / "matches.parquet").column("match_id").to_pylist())
    keys = ("sighting_id", "person_id", "source_id", "start_s", "end_s", "best_score", "tier")
    rows = pq.read_table(out / "sightings.parquet").to_pylist()
    return ids, sorted(tuple(r[k] for k in keys) for r in rows)


@pytest.mark.timeout(900)
def test_a_killed_search_rerun_skips_finished_files_and_equals_an_undisturbed_run(
    archive, enrolled_home, ray_address, tmp_path
):
    home = enrolled_home
    resumed_out, clean_out = tmp_path / "resumed", tmp_path / "clean"
    args = ["search", str(archive), "--list", "default", *CASE, "--ray-address", ray_address]
    done_at_kill = _kill_part_way(home, [*args, "--out", str(resumed_out)])
    assert 1 <= done_at_kill < N_FILES, "the kill must fall part way through the search"

    rerun = _run(home, *args, "--out", str(resumed_out), "--json")
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((resumed_out / "summary.json").read_text())
    assert summary["files_resumed"] == done_at_kill  # skipped, from their records
    assert summary["files"] == N_FILES and summary["files_failed"] == 0

    clean = _run(home, *args, "--out", str(clean_out), "--json")  # another out: a new key
    assert clean.returncode == 0, clean.stderr
    assert json.loads((clean_out / "summary.json").read_text())["files_resumed"] == 0

    resumed_ids, resumed_sightings = _outputs(resumed_out)
    clean_ids, clean_sightings = _outputs(clean_out)
    assert resumed_ids and len(resumed_ids) == len(set(resumed_ids))  # 0 duplicated
    assert resumed_ids == clean_ids  # 0 lost
    assert resumed_sightings == clean_sightings
    assert len({s[2] for s in clean_sightings}) == N_FILES  # Lin-Manuel found in every copy
    for mid in resumed_ids:
        assert (resumed_out / "thumbs" / f"{mid}.jpg").is_file()

    settings = Settings(home=home)
    with Home.open(settings, FaceEngine(settings).info) as h:
        stored = h.vectors().query(MATCHES, filter='case_ref == "FAULT-3"', fields=["id"])
    assert sorted(r["id"] for r in stored) == clean_ids  # each match stored once
