"""Faults 1 and 3 of issue 16, against an undisturbed run of the same search.

Fault 1: the FacePool replica's worker process is killed (SIGKILL) while a search runs;
the search must complete with the same matches and sightings (Serve replaces the replica;
the calls lost with it are asked again, jobs/search_stages.py).

Fault 3: a `facewatch search` process killed part way (a real SIGKILL of the CLI process),
then rerun with the same arguments. The rerun must skip the files the killed run completed
(their completion records in the catalog, written after their matches were stored), search
the rest, and end with the same match ids and sightings as an undisturbed run of the same
search; the store must hold each match once.

The module's last test opens the store in this process: milvus-lite keeps its lock until
the process exits, so no search of this home may follow it. Real Ray, FacePool, MTCNN,
dlib-resnet and milvus-lite; the inputs are copies of the Hamilton clip remuxed with
different metadata, so each is its own file (its own content hash) with the same faces.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import searchruns as runs

from pipelines.config import Settings
from pipelines.engine import FaceEngine
from pipelines.home import Home
from pipelines.store import MATCHES

N_FILES = 5
CASE = ["--case", "FAULT-3", "--reason", "fault test: search killed and resumed"]

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def archive(data, tmp_path_factory) -> Path:
    return runs.copies_of_the_clip(data, tmp_path_factory.mktemp("archive"), N_FILES)


@pytest.fixture(scope="module")
def enrolled_home(data, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    proc = runs.run(
        home, "watchlist", "add", "Lin-Manuel Miranda", str(data / "known/lin-manuel-miranda.png")
    )
    assert proc.returncode == 0, proc.stderr
    return home


def _kill_part_way(home: Path, args: list[str]) -> int:
    """Start the search, SIGKILL it once its first file is recorded complete; returns how
    many files were recorded when it died."""
    before = runs.completed(home)  # other searches' records in this home
    with runs.killed_on_exit(runs.start(home, args)) as proc:
        runs.when_a_file_is_done(home, proc)
        os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    return runs.completed(home) - before


def _args(archive: Path, ray_address: str, out: Path) -> list[str]:
    return ["search", str(archive), "--list", "default", *CASE, "--ray-address", ray_address,
            "--out", str(out), "--json"]  # fmt: skip


@pytest.fixture(scope="module")
def undisturbed(archive, enrolled_home, ray_address, tmp_path_factory):
    """The same search, run with nothing killed: (match ids, sightings)."""
    out = tmp_path_factory.mktemp("undisturbed")
    proc = runs.run(enrolled_home, *_args(archive, ray_address, out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "summary.json").read_text())["files_resumed"] == 0
    ids, sightings = runs.outputs(out)
    assert ids and len(ids) == len(set(ids))
    assert len({s[2] for s in sightings}) == N_FILES  # Lin-Manuel found in every copy
    return ids, sightings


def _pool_replica_pids(ray_address: str) -> list[int]:
    return runs.my_ray_processes("FacePool")


@pytest.mark.timeout(600)
def test_a_pool_replica_killed_mid_search_loses_nothing(
    archive, enrolled_home, ray_address, undisturbed, tmp_path
):
    out = tmp_path / "out"
    with runs.killed_on_exit(runs.start(enrolled_home, _args(archive, ray_address, out))) as proc:
        runs.when_a_file_is_done(enrolled_home, proc)
        pids = _pool_replica_pids(ray_address)
        assert pids, "no FacePool replica to kill"
        for pid in pids:  # workers of the Ray this module started
            os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=500)
    assert proc.returncode == 0, err[-3000:]
    assert not set(pids) & set(_pool_replica_pids(ray_address))  # the replicas really were replaced
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"] == N_FILES and summary["files_failed"] == 0
    assert runs.outputs(out) == undisturbed


@pytest.mark.timeout(900)
def test_a_killed_search_rerun_skips_finished_files_and_equals_an_undisturbed_run(
    archive, enrolled_home, ray_address, undisturbed, tmp_path
):
    home, out = enrolled_home, tmp_path / "resumed"
    done_at_kill = _kill_part_way(home, _args(archive, ray_address, out))
    assert 1 <= done_at_kill < N_FILES, "the kill must fall part way through the search"

    rerun = runs.run(home, *_args(archive, ray_address, out))
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files_resumed"] == done_at_kill  # skipped, from their records
    assert summary["files"] == N_FILES and summary["files_failed"] == 0
    ids, sightings = runs.outputs(out)
    assert (ids, sightings) == undisturbed  # 0 lost, 0 duplicated, the same sightings
    for mid in ids:
        assert (out / "thumbs" / f"{mid}.jpg").is_file()


def test_the_store_holds_each_match_once(enrolled_home, undisturbed):
    """After every run of this module (killed, resumed, disturbed) on the same case."""
    settings = Settings(home=enrolled_home)
    with Home.open(settings, FaceEngine(settings).info) as h:
        stored = h.vectors().query(MATCHES, filter='case_ref == "FAULT-3"', fields=["id"])
    assert sorted(r["id"] for r in stored) == undisturbed[0]
