"""facewatch on a real multi-node Ray cluster (head + 2 workers, jobs/cluster.py) with a
real Milvus server: a live camera and an archive search at the same time, placed as
conf/serve.yaml and the placement config say. The driver (tests/cluster/scenario.py) runs
inside the cluster's namespace, as on a head node; this test judges what it reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cluster import ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.integration, pytest.mark.slow]

SCENARIO = Path(__file__).with_name("scenario.py")


@pytest.fixture(scope="module")
def cluster_milvus(ray_cluster, tmp_path_factory):
    """A Milvus server inside the cluster's namespace (its URI is for drivers there)."""
    from milvus_loopback import MilvusLoopbackServer

    with MilvusLoopbackServer(
        tmp_path_factory.mktemp("cluster-milvus"), inside=ray_cluster.command([])
    ) as srv:
        yield srv


def _facewatch(handle, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``facewatch ARGS`` from this machine, as a data engineer runs it (outside the
    namespace; ``cluster run`` / ``cluster exec`` enter it)."""
    cmd = [sys.executable, "-m", "jobs.cli", *args[:2], "--dir", str(handle.directory)]
    env = {**os.environ, "FACEWATCH_USER": "cluster-test"}
    cmd += ["--", *args[2:]]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _deploy_as_an_engineer(handle, uri: str, home: Path, data: Path) -> dict:
    """Enrol with `facewatch cluster run`, then Ray's own `serve deploy` of conf/serve.yaml
    (its ``args.config`` pointed at a facewatch config naming the home and the server)."""
    from scenario import write_configs

    config, served = write_configs(home, uri, home.parent)
    photo = str(data / "known" / "lin-manuel-miranda.png")
    enrol = ["cluster", "run", "--config", str(config), "watchlist", "add"]
    enrol += ["Lin-Manuel Miranda", photo, "--list", "watch"]
    enrolled = _facewatch(handle, *enrol)
    assert enrolled.returncode == 0, enrolled.stderr[-2000:]
    # a search before (test_cluster_files.py) may have started Serve without an HTTP
    # proxy for its pool; Serve keeps its first options, so start afresh
    _facewatch(handle, "cluster", "exec", "serve", "shutdown", "-y")
    deploy = _facewatch(handle, "cluster", "exec", "serve", "deploy", str(served))
    return {"rc": deploy.returncode, "out": (deploy.stdout + deploy.stderr)[-2000:]}


@pytest.fixture(scope="module")
def scenario(ray_cluster, cluster_milvus, data, tmp_path_factory):
    home = tmp_path_factory.mktemp("cluster-home") / "home"
    out = tmp_path_factory.mktemp("cluster-out")
    deploy = _deploy_as_an_engineer(ray_cluster, cluster_milvus.uri, home, data)
    assert deploy["rc"] == 0, deploy["out"]
    argv = [sys.executable, str(SCENARIO), str(home), cluster_milvus.uri, str(data), str(out)]
    done = ray_cluster.run(argv, capture_output=True, text=True, timeout=840)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    return {**json.loads(lines[-1][len("RESULT ") :]), "home": home}


def _roles(result) -> tuple[str, set[str]]:
    head = next(n["node_id"] for n in result["nodes"] if n["head"])
    return head, {n["node_id"] for n in result["nodes"] if not n["head"]}


@pytest.mark.timeout(900)
def test_serve_deploy_of_conf_serve_yaml_runs_the_app_and_it_answers_only_with_a_token(scenario):
    """Ray's `serve deploy` (through `facewatch cluster exec`), not facewatch's own deploy."""
    assert scenario["deployed"] == {"app_status": "RUNNING", "authed": 200, "anon": 401}


@pytest.mark.timeout(900)
def test_the_live_camera_raises_its_one_alert_while_the_search_finds_the_sighting(scenario):
    assert scenario["analysed"] == scenario["frames"]
    assert scenario["alerts"] == 1
    assert scenario["search_rc"] == 0, scenario["search_err"]
    names = {s["person_name"] for s in scenario["sightings"]}
    assert names == {"Lin-Manuel Miranda"}
    assert scenario["searches_seen"] == 1  # `cluster status` showed it while it ran


@pytest.mark.timeout(900)
def test_replicas_spread_over_the_workers_and_state_stays_on_the_home_node(scenario):
    """As `serve deploy` placed them from conf/serve.yaml's resources."""
    head, workers = _roles(scenario)
    where = {}
    for r in scenario["replicas"]:
        where.setdefault(r["deployment"], []).append(r["node_id"])
    assert set(where["FacePool"]) == workers and len(workers) == 2  # one replica on each
    assert where["LiveHub"] == [head] and where["Api"] == [head]


@pytest.mark.timeout(900)
def test_decode_tasks_ran_on_worker_nodes_only(scenario):
    head, workers = _roles(scenario)
    assert scenario["decode_nodes"] and set(scenario["decode_nodes"]) <= workers


@pytest.mark.timeout(900)
def test_matches_are_in_the_milvus_server_without_duplicates(scenario):
    ids = [m["id"] for m in scenario["matches"]]
    assert len(ids) == len(set(ids))
    assert {m["source"] for m in scenario["matches"]} == {"live", "archive"}


@pytest.mark.timeout(900)
def test_the_home_holds_one_catalog_and_one_audit_log_that_verifies(scenario):
    home = scenario["home"]
    assert scenario["verify_rc"] == 0, scenario["verify_out"]
    actions = [json.loads(x)["action"] for x in (home / "audit.log").read_text().splitlines()]
    # the search driver and the live hub (home node) write the same log
    assert "export.search" in actions and any(a.startswith("camera.") for a in actions)
    assert not (home / "milvus.db").exists()  # the store is the server, not a lite file


@pytest.mark.timeout(900)
def test_cluster_status_shows_where_the_running_app_is_placed_and_its_camera(ray_cluster, scenario):
    """`facewatch cluster status` from outside the namespace, with the app still deployed."""
    cmd = [sys.executable, "-m", "jobs.cli", "cluster", "status", "--json"]
    cmd += ["--dir", str(ray_cluster.directory)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    status = json.loads(done.stdout)
    head, workers = _roles(status)
    pool = {r["node_id"] for r in status["replicas"] if r["deployment"] == "FacePool"}
    assert pool == workers
    assert [c["id"] for c in status["cameras"]] == ["cam-lin"]
    assert status["searches"] == []  # the search has finished
