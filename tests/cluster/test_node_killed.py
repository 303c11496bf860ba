"""Fault 2 of issue 16: a worker node dies (its raylet SIGKILLed) while an archive search
runs on the multi-node test cluster. The search must complete with the same match ids and
sightings as an undisturbed run of the same search, only slower.

The cluster is this module's own (jobs/cluster.py: a head and two worker nodes on
127.0.0.1 in a private network namespace), not the session's ``ray_cluster``: a node is
killed here and the cluster is not whole afterwards. The raylet to kill is found in /proc
by the node's own temp folder (each node has one, recorded in the cluster's state file),
so no other Ray on the machine is touched. milvus-lite with every writer on the home node
(placement.lite_writers_on_home), as in test_cluster_files.py. Marked ``faults`` (make
test-faults): a cluster start and two searches cost minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import searchruns as runs

from jobs.cluster import ROOT, ClusterError, ClusterSpec, down, up

N_FILES = 4
CASE = ["--case", "FAULT-2", "--reason", "fault test: a worker node killed"]
ENV = {"FACEWATCH_USER": "officer-2", "FACEWATCH__PLACEMENT__LITE_WRITERS_ON_HOME": "true"}

pytestmark = [pytest.mark.cluster, pytest.mark.integration, pytest.mark.faults]


def _raylet_of(temp_dir: str) -> int:
    """The pid of the raylet whose command line names ``temp_dir`` (one node's)."""
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue  # gone meanwhile
        if argv and argv[0].endswith("/raylet") and any(temp_dir in a for a in argv):
            return int(name)
    raise AssertionError(f"no raylet runs from {temp_dir}")


def _search(cluster, home, archive, out) -> list[str]:
    cmd = [sys.executable, "-m", "jobs.cli", "--home", str(home), "search", str(archive)]
    return cluster.command([*cmd, "--list", "default", *CASE, "--out", str(out), "--json"])


def _up(where):
    try:
        return up(where, ClusterSpec(workers=2, worker_cpus=3))
    except ClusterError as exc:
        pytest.fail(f"this test needs the multi-node test cluster: {exc}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """This module's own cluster (pytest runs the teardown after a failed test too)."""
    where = tmp_path_factory.mktemp("cluster-killed")
    yield _up(where)
    down(where)


@pytest.mark.timeout(900)
def test_a_worker_node_killed_mid_search_loses_nothing(cluster, data, tmp_path):
    archive = runs.copies_of_the_clip(data, tmp_path / "archive", N_FILES)
    home = tmp_path / "home"
    enrol = runs.run(
        home, "watchlist", "add", "Lin-Manuel Miranda", str(data / "known/lin-manuel-miranda.png")
    )
    assert enrol.returncode == 0, enrol.stderr
    env = cluster.env({**os.environ, **ENV})
    t0 = time.monotonic()
    calm = subprocess.run(
        _search(cluster, home, archive, tmp_path / "calm"), cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert calm.returncode == 0, calm.stderr[-3000:]
    calm_s = time.monotonic() - t0
    raylet = _raylet_of(cluster.temp_dirs[1])
    t0 = time.monotonic()
    proc = subprocess.Popen(
        _search(cluster, home, archive, tmp_path / "killed"), cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with runs.killed_on_exit(proc):
        runs.when_a_file_is_done(home, proc)
        os.kill(raylet, signal.SIGKILL)
        _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    killed_s = time.monotonic() - t0
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["files_failed"] == 0, summary
    ids, sightings = runs.outputs(tmp_path / "calm")
    assert ids and len({s[2] for s in sightings}) == N_FILES  # Lin-Manuel in every copy
    assert runs.outputs(tmp_path / "killed") == (ids, sightings)  # 0 lost, 0 duplicated
    print(f"undisturbed {calm_s:.0f} s, with a node killed {killed_s:.0f} s")
