"""Ray for the command line: a local instance on loopback, or a cluster by address, and the
shared FacePool, found running or started for the duration of a job."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

from pipelines.config import Settings
from pipelines.schemas import EmbedderInfo, EmbedderMismatchError

logger = logging.getLogger(__name__)

SERVE_APP = "facewatch"  # the app `facewatch serve` deploys; its FacePool is reused
JOB_POOL_APP = "facewatch-pool"  # a pool started by a job when no server is running


def start_ray(address: str | None = None, settings: Settings | None = None) -> None:
    """Connect to ``address``, or start Ray locally bound to 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    common = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **common)
        return
    cores = os.cpu_count() or 1
    pool_cpus = settings.pool.num_cpus * settings.pool.num_replicas if settings else 0
    # One logical CPU beyond the pool's for the light stages (decode, matching).
    ray.init(
        address="local",
        num_cpus=max(cores, int(pool_cpus + 0.999)) + 1,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        **common,
    )


def _probe(path: str):
    from pipelines.video import probe

    return probe(path)


def probe_remote():
    """``probe`` as a Ray task: a decoder crash on a hostile file kills a worker, not us."""
    import ray

    return ray.remote(num_cpus=0.25, max_retries=0)(_probe)


def _running_pool_app() -> str | None:
    from ray import serve as ray_serve

    try:
        status = ray_serve.status()
    except Exception:  # noqa: BLE001 - Serve not started in this cluster
        return None
    for name in (SERVE_APP, JOB_POOL_APP):
        app = status.applications.get(name)
        if app is not None and "FacePool" in app.deployments and app.status == "RUNNING":
            return name
    return None


@contextmanager
def face_pool(settings: Settings, expect: EmbedderInfo | None = None):
    """Yield the Serve app name whose FacePool to use; start one if none is running."""
    import ray
    from ray import serve as ray_serve

    from serve.pool import POOL_DEPLOYMENT, build_pool

    app = _running_pool_app()
    owned = app is None
    if owned:
        ray_serve.start(proxy_location="Disabled")
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        ray_serve.run(build_pool(settings, gpus), name=JOB_POOL_APP, route_prefix=None)
        app = JOB_POOL_APP
    try:
        if expect is not None:
            handle = ray_serve.get_deployment_handle(POOL_DEPLOYMENT, app_name=app)
            got = handle.describe.remote().result()["embedder"]
            if got != expect.key:
                raise EmbedderMismatchError(
                    f"the running FacePool embeds with {got}, the watch list with {expect.key}"
                )
        yield app
    finally:
        if owned:
            ray_serve.delete(JOB_POOL_APP)
