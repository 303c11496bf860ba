"""Ray for the command line: a local instance on loopback, or a cluster by address, and the
shared FacePool, found running or started for the duration of a job."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any

from pipelines.config import Settings
from pipelines.errors import EXIT_UNEXPECTED, FacewatchError
from pipelines.privacy import private_umask
from pipelines.schemas import EmbedderInfo, EmbedderMismatchError
from serve.memory_env import apply_memory_env

logger = logging.getLogger(__name__)

SERVE_APP = "facewatch"  # the app `facewatch serve` deploys; its FacePool is reused
JOB_POOL_APP = "facewatch-pool"  # a pool started by a job when no server is running
POOL_START_TIMEOUT_S = 600.0  # how long a job's stages wait for pool replicas to load
RAY_ADDRESS_ENV = "FACEWATCH_RAY_ADDRESS"  # the cluster to join (jobs/cluster.py sets it)
LOCAL_START_ATTEMPTS = 2  # starts of a local Ray before giving up (see start_ray)


# Set before Ray starts (its processes inherit them); a user's own setting wins.
_QUIET_ENV = {
    # gRPC core logs "fork_posix.cc: Other threads are currently calling into gRPC,
    # skipping fork() handlers" at INFO each time Ray forks a worker.
    "GRPC_VERBOSITY": "ERROR",
    # Ray Data's own logger: its per-dataset "Starting execution" INFO lines.
    "RAY_DATA_LOG_LEVEL": "WARNING",
}
_LOCAL_ENV = {
    # Ray replaces 127.0.0.1 with the machine's outward address unless it treats the host
    # as a single-node OS (this switch); with it, the local node really stays on loopback.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}
# Loggers whose INFO lines are progress chatter; warnings and errors still show.
_CHATTY_LOGGERS = ("ray.serve", "ray.data")


def prepare_env(local: bool) -> None:
    """Environment for the Ray processes we are about to start (they inherit it); call it
    before anything starts gRPC or imports Ray. A user's own setting always wins."""
    if local:
        for key, value in _LOCAL_ENV.items():
            os.environ.setdefault(key, value)
        apply_memory_env()  # the Ray processes we start keep a flat RSS (serve.memory_env)
    if logging.getLogger().getEffectiveLevel() > logging.INFO:  # not -v
        for key, value in _QUIET_ENV.items():
            os.environ.setdefault(key, value)


def quiet_ray() -> None:
    """Keep Ray's progress chatter off the terminal, so the user sees our progress bar and
    table. Warnings and errors still show; ``-v`` (root logger at INFO) keeps everything."""
    if logging.getLogger().getEffectiveLevel() <= logging.INFO:
        return
    import ray.data  # noqa: F401 - it configures its loggers on import; adjust after that
    import ray.serve  # noqa: F401

    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Token auth stays on (Ray's default for a local cluster); only the notice that it is
    # on is dropped. Its warning when auth is *off* still shows.
    auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if _drop_auth_notice not in auth.filters:
        auth.addFilter(_drop_auth_notice)
    # Ray Data says once per process that its own progress bars are off (ours are on).
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def _drop_auth_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled for this")


# what ray.init says when a local Ray did not come up in time (worth one more try)
RAY_START_TIMEOUTS = ("timed out during startup", "Timed out waiting for file")


def start_ray(address: str | None = None, settings: Settings | None = None) -> bool:
    """Connect to ``address``, or start Ray locally bound to 127.0.0.1.

    True when this call started a local Ray: it then ends with this process, and takes
    everything started in it along (``ray.shutdown`` at exit). Without ``address``,
    ``$FACEWATCH_RAY_ADDRESS`` names the cluster (``facewatch cluster run`` sets it).
    """
    address = address or os.environ.get(RAY_ADDRESS_ENV) or None
    prepare_env(local=not address)
    quiet_ray()
    import ray

    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **common)
        return False
    from serve.local import keep_ray_on_loopback, ray_temp_dir, ray_token_auth
    from serve.placement import local_resources

    private_umask()  # Ray's processes, and what they write, stay private too
    if settings is not None:  # as `facewatch serve`: the token in the home, 0600
        logger.info("Ray token auth: %s", ray_token_auth(settings.resolved_home()))
    keep_ray_on_loopback()
    _stop_orphans(ray_temp_dir())
    cores = os.cpu_count() or 1
    pool_cpus = settings.pool.num_cpus * settings.pool.num_replicas if settings else 0
    local: dict[str, Any] = {
        "address": "local",
        # One logical CPU beyond the pool's for the light stages (decode, matching).
        "num_cpus": max(cores, int(pool_cpus + 0.999)) + 1,
        "include_dashboard": False,
        # one node is the home and the pool at once: it offers every placement resource
        "resources": local_resources(settings),
        "_node_ip_address": "127.0.0.1",
        "_temp_dir": str(ray_temp_dir()),  # facewatch doctor finds orphans by it
    }
    for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
        try:
            ray.init(**local, **common)
            return True
        except Exception as exc:
            # Seen a few times a day on this 2-core machine, under load: Ray's raylet never
            # registers with the GCS, or the GCS never writes its port file, and ray.init
            # gives up; running the command again worked each time, so it tries again.
            if attempt == LOCAL_START_ATTEMPTS or not any(
                sign in str(exc) for sign in RAY_START_TIMEOUTS
            ):
                raise
            logger.warning("the local Ray did not start (%s); starting it again", exc)
            ray.shutdown()
    raise AssertionError("unreachable")


def _stop_orphans(temp_root) -> None:
    """Ray processes an earlier facewatch left when it was killed (see jobs/archive/orphans.py)."""
    from jobs.archive.orphans import find_orphans, stop

    orphans = find_orphans(temp_root)
    if orphans:
        left = stop(orphans)
        logger.warning(
            "stopped %d Ray process(es) left by a facewatch run that was killed%s",
            len(orphans) - len(left),
            f"; could not stop {[p.pid for p in left]}" if left else "",
        )


def probe_video(path: str):
    """``pipelines.video.probe``, imported where it runs (a Ray worker)."""
    from pipelines.video import probe

    return probe(path)


def probe_remote(settings: Settings | None = None):
    """``probe`` as a Ray task, on the nodes that decode (``placement.workers``): a decoder
    crash on a hostile file kills a worker, not us."""
    import ray

    resources = dict(settings.placement.workers) if settings is not None else {}
    return ray.remote(num_cpus=0.25, max_retries=0, resources=resources)(probe_video)


def _running_pool_app() -> str | None:
    """A FacePool app that is running, or being started (by a job or test before us)."""
    from ray import serve as ray_serve

    try:
        status = ray_serve.status()
    except Exception:  # noqa: BLE001 - Serve not started in this cluster
        return None
    for name in (SERVE_APP, JOB_POOL_APP):
        app = status.applications.get(name)
        if app is None or app.status not in ("RUNNING", "DEPLOYING"):
            continue
        if app.status == "DEPLOYING" or "FacePool" in app.deployments:
            return name
    return None


@contextmanager
def face_pool(settings: Settings, expect: EmbedderInfo | None = None, cleanup: bool = True):
    """Yield the Serve app name whose FacePool to use; start one if none is running.

    A pool started here is yielded while its replicas still load their models, so the
    job's first stages (probing, decoding) overlap that; the job's pool callers wait for
    it with ``wait_for_pool``, which raises if the replicas fail to start. ``cleanup``
    False leaves a started pool for ``ray.shutdown`` (a local Ray that ends with us).
    """
    import ray
    from ray import serve as ray_serve
    from ray.serve.api import _run as serve_run_async  # serve.run, minus the wait

    from serve.placement import actor_wants, check_device, check_placement
    from serve.pool import POOL_DEPLOYMENT, build_pool, pool_options

    app = _running_pool_app()
    owned = app is None
    if owned:
        if expect is not None:  # the pool will embed with the configured embedder
            check_embedder(_configured_embedder(settings), expect)
        check_device(settings.pool.device)
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        check_placement(
            {POOL_DEPLOYMENT: actor_wants(pool_options(settings, gpus)["ray_actor_options"])}
        )
        ray_serve.start(proxy_location="Disabled")
        pool = build_pool(settings, gpus)
        serve_run_async(pool, _blocking=False, name=JOB_POOL_APP, route_prefix=None)
        app = JOB_POOL_APP
    try:
        if expect is not None and not owned:
            handle = ray_serve.get_deployment_handle(POOL_DEPLOYMENT, app_name=app)
            check_embedder(handle.describe.remote().result()["embedder"], expect)
        yield app
    finally:
        if owned and cleanup:
            ray_serve.delete(JOB_POOL_APP)


def _configured_embedder(settings: Settings) -> str:
    import torch

    from pipelines.embedders.backends import build_embedder

    return build_embedder(settings.embedder, torch.device("cpu")).info.key


def check_embedder(got: str, expect: EmbedderInfo) -> None:
    if got != expect.key:
        raise EmbedderMismatchError(
            f"the FacePool embeds with {got}, the watch list with {expect.key}"
        )


class PoolStartError(FacewatchError, RuntimeError):
    """The FacePool's replicas could not start. The message is the replicas' own error
    (the last line of Serve's report); ``details`` is the whole report, tracebacks included.
    A failure of the machinery, not of the user's input: exit 1."""

    exit_code = EXIT_UNEXPECTED
    http_status = 503

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details or message


def wait_for_pool(app: str, timeout_s: float = POOL_START_TIMEOUT_S, poll_s: float = 0.2) -> None:
    """Return once ``app`` runs; raise PoolStartError if it failed or never came up."""
    import time

    from ray import serve as ray_serve

    deadline = time.monotonic() + timeout_s
    while True:
        status = ray_serve.status().applications.get(app)
        if status is not None and status.status == "RUNNING":
            return
        _raise_if_failed(status)
        if time.monotonic() > deadline:
            state = status.status if status is not None else "absent"
            raise PoolStartError(f"the face pool did not start within {timeout_s:.0f}s ({state})")
        time.sleep(poll_s)


def check_pool_failed(app: str) -> None:
    """Raise PoolStartError, with the replicas' own reason, if ``app`` failed to deploy."""
    from ray import serve as ray_serve

    try:
        status = ray_serve.status().applications.get(app)
    except Exception:  # noqa: BLE001 - Serve itself is gone: nothing to tell
        return
    _raise_if_failed(status)


def _raise_if_failed(status) -> None:
    if status is None or status.status != "DEPLOY_FAILED":
        return
    reasons = [d.message for d in status.deployments.values() if d.message] or [status.message]
    errors = [_last_line(r) for r in reasons]
    raise PoolStartError(
        "the face pool failed to start: " + "; ".join(dict.fromkeys(errors)), "\n".join(reasons)
    )


def _last_line(report: str) -> str:
    """The exception line that ends a traceback (Serve's reports end with the replica's)."""
    lines = [line.strip() for line in report.splitlines() if line.strip()]
    return lines[-1] if lines else report


class _HidePoolFailure(logging.Filter):
    """Drops Ray Data's error records once the pool is known to have failed: Ray Data
    reports a stage whose constructor raised (FaceStage waiting for the pool) as its own
    internal error, with a page of traceback, before the job can say what happened."""

    def __init__(self, app: str):
        super().__init__()
        self.app = app
        self.failed = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if not self.failed:  # asked again on each error: they are rare
            try:
                check_pool_failed(self.app)
            except PoolStartError:
                self.failed = True
        return not self.failed


@contextmanager
def hide_ray_data_noise_if_pool_fails(app: str):
    """While a job runs on ``app``: Ray Data's handlers drop their error records if the
    pool failed (PoolStartError, raised after, says why)."""
    handlers = logging.getLogger("ray.data").handlers
    hide = _HidePoolFailure(app)
    for h in handlers:
        h.addFilter(hide)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(hide)


def local_engine(settings: Settings):
    """A FaceEngine for work in this process (enrolment, probe photos, evaluation): on this
    machine's GPU if it has one, else its CPU. ``pool.device`` is for the pool's replicas,
    which may run on other machines: a CPU-only driver of a GPU cluster must still work."""
    from pipelines.engine import FaceEngine

    return FaceEngine(settings, device="auto")
