"""The multi-node test cluster itself (jobs/cluster.py): three real Ray nodes on loopback in
a private network namespace, placed by custom resource, reached only from inside."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from jobs.cluster import ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.integration]

SPREAD = textwrap.dedent(
    """
    import json, os, time, ray
    ray.init(address=os.environ["FACEWATCH_RAY_ADDRESS"], log_to_driver=False)

    @ray.remote(num_cpus=0.5, resources={"facewatch_pool": 0.01})
    def where():
        time.sleep(0.3)
        return ray.get_runtime_context().get_node_id()

    print(json.dumps(sorted(set(ray.get([where.remote() for _ in range(8)])))))
    """
)


def _status(handle) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "cluster", "status", "--json"]
        + ["--dir", str(handle.directory)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.timeout(240)
def test_status_shows_a_home_node_and_two_pool_nodes_on_loopback(ray_cluster):
    status = _status(ray_cluster)
    nodes = status["nodes"]
    assert len(nodes) == 3
    assert {n["address"] for n in nodes} == {"127.0.0.1"}
    heads = [n for n in nodes if n["head"]]
    workers = [n for n in nodes if not n["head"]]
    assert len(heads) == 1 and "facewatch_home" in heads[0]["resources"]
    assert len(workers) == 2
    assert all("facewatch_pool" in n["resources"] and n["cpus"] == 2 for n in workers)


@pytest.mark.timeout(240)
def test_pool_tasks_run_on_both_worker_nodes_and_never_on_the_head(ray_cluster):
    nodes = _status(ray_cluster)["nodes"]
    done = ray_cluster.run(
        [sys.executable, "-c", SPREAD], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ran_on = set(json.loads(done.stdout.strip().splitlines()[-1]))
    workers = {n["node_id"] for n in nodes if not n["head"]}
    assert ran_on == workers


@pytest.mark.timeout(60)
def test_the_cluster_cannot_be_reached_from_outside_its_namespace(ray_cluster):
    """Its GCS port listens on the namespace's loopback only: the machine's does not answer."""
    import socket

    host, port = ray_cluster.address.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex((host, int(port))) != 0


UNPLACEABLE = textwrap.dedent(
    """
    import json, os, ray
    from jobs.archive import runtime
    from pipelines.config import Settings
    from serve.app import compose
    from serve.placement import PlacementError

    ray.init(address=os.environ["FACEWATCH_RAY_ADDRESS"], log_to_driver=False)
    said = {}
    gpu = {"ray_actor_options": {"resources": {"facewatch_gpu": 0.01}}}
    try:
        compose(Settings(store={"uri": "http://127.0.0.1:1"}), {"FacePool": gpu})
    except PlacementError as exc:
        said["serve"] = str(exc)
    try:
        with runtime.face_pool(Settings(placement={"pool": {"facewatch_gpu": 0.01}})):
            pass
    except PlacementError as exc:
        said["job_pool"] = str(exc)
    print(json.dumps(said))
    """
)


@pytest.mark.timeout(240)
def test_a_deployment_asking_for_a_resource_no_node_has_fails_clearly_at_once(ray_cluster):
    """Ray would wait for such a node forever; facewatch refuses before deploying."""
    done = ray_cluster.run(
        [sys.executable, "-c", UNPLACEABLE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(said) == {"serve", "job_pool"}
    for message in said.values():
        assert "FacePool asks for" in message and "facewatch_gpu: 0.01" in message
        assert "facewatch_pool: 100" in message  # what the nodes do offer
