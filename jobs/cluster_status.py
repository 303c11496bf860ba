"""What runs where on a Ray cluster: its nodes with their resources, and the node of every
facewatch Serve replica (FacePool, LiveHub, Api). Read through ``ray.util.state`` by a
driver connected to the cluster; ``facewatch cluster status`` runs it inside the test
cluster's namespace (jobs/cluster.py), and the cluster tests assert on the same rows."""

from __future__ import annotations

import json
import os
import sys

DEPLOYMENTS = ("FacePool", "LiveHub", "Api")
BUILT_IN = ("CPU", "GPU", "memory", "object_store_memory")


def node_rows() -> list[dict]:
    """One row per live node: id, whether it is the head, its CPUs and custom resources."""
    import ray

    rows = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node["Resources"]
        custom = {k: v for k, v in res.items() if not k.startswith("node:") and k not in BUILT_IN}
        rows.append(
            {
                "node_id": node["NodeID"],
                "address": node["NodeManagerAddress"],
                "head": "node:__internal_head__" in res,
                "cpus": res.get("CPU", 0),
                "gpus": res.get("GPU", 0),
                "resources": custom,
            }
        )
    return rows


def replica_rows() -> list[dict]:
    """One row per live Serve replica of a facewatch deployment: which node it runs on."""
    from ray.util.state import list_actors

    rows = []
    for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000):
        name = actor.name or ""
        for deployment in DEPLOYMENTS:
            if f"#{deployment}#" in name:
                rows.append({"deployment": deployment, "name": name, "node_id": actor.node_id})
    return rows


def task_nodes(name_contains: str) -> list[str]:
    """The nodes that ran (or run) tasks whose function name contains ``name_contains``."""
    from ray.util.state import list_tasks

    tasks = list_tasks(limit=10_000, detail=True, raise_on_missing_output=False)
    return sorted({t.node_id for t in tasks if name_contains in (t.name or "") and t.node_id})


def camera_rows(app: str = "facewatch") -> list[dict]:
    """The live server's cameras (id, list, state), if the facewatch app runs; else none."""
    from ray import serve as ray_serve

    try:
        if app not in ray_serve.status().applications:
            return []
        hub = ray_serve.get_deployment_handle("LiveHub", app_name=app)
        cameras = hub.cameras.remote().result(timeout_s=30)
    except Exception:  # noqa: BLE001 - Serve absent or the hub not ready: nothing to show
        return []
    keep = ("id", "list", "connected")
    return [{k: c[k] for k in keep if k in c} for c in cameras]


def search_rows() -> list[dict]:
    """Drivers running a facewatch search now (Ray's jobs list: one row per driver)."""
    from ray.util.state import list_jobs

    rows = []
    for job in list_jobs(limit=1000, raise_on_missing_output=False):
        entry = job.entrypoint or ""
        if job.status == "RUNNING" and " search " in f" {entry} ":
            rows.append({"job_id": job.job_id, "since_ms": job.start_time})
    return rows


def snapshot(address: str | None = None) -> dict:
    import ray

    if not ray.is_initialized():
        ray.init(address=address or os.environ["FACEWATCH_RAY_ADDRESS"], log_to_driver=False)
    return {
        "nodes": node_rows(),
        "replicas": replica_rows(),
        "cameras": camera_rows(),
        "searches": search_rows(),
    }


if __name__ == "__main__":  # run inside the cluster's namespace: one JSON line
    import logging

    logging.basicConfig(level=logging.ERROR)
    print(json.dumps(snapshot(sys.argv[1] if len(sys.argv) > 1 else None)))
