"""Running the Serve application on this machine: Ray token auth, Ray, Serve, the app.

``facewatch serve``, the tests and benchmarks/bench_live.py all start the server through
``start_local``, so they run the same code path.

Ray token auth (Ray 2.60 turns it on by default for a new local cluster):
- we keep it ON, also on loopback: anyone who can reach Ray's ports can run code in it,
  and "anyone" includes every other user and process on the same machine;
- Ray would write its token to ``~/.ray/auth_token`` world-readable (0644), which defeats
  it against other local users, and shares one token across all projects and test runs.
  So unless the caller chose (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
  ``RAY_AUTH_MODE`` set), the token lives in ``<home>/ray/auth_token`` (0600, inside the
  0700 home) and ``RAY_AUTH_TOKEN_PATH`` points at it, for this process and its children.
  Tests use a home in tmp_path, so they never touch ``~/.ray``.
- ``RAY_AUTH_MODE=disabled`` is respected, with a warning.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import FacewatchError
from pipelines.privacy import check_private_home
from serve.app import APP_NAME, BuildArgs, build_settings, compose
from serve.memory_env import apply_memory_env
from serve.placement import local_resources
from serve.proxy import PROXY_CALLBACK, PROXY_CALLBACK_ENV

logger = logging.getLogger(__name__)

AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
# Prometheus scrapes Ray's metrics agent on this port (``facewatch serve --metrics-port``);
# unset, Ray picks a free one and lists it in its service-discovery file
METRICS_PORT_ENV = "FACEWATCH_METRICS_PORT"


class ServeConfigError(FacewatchError, ValueError):
    """conf/serve.yaml is unusable; the message says where and why."""

    http_status = 500  # the server's own set-up: not the client's to fix


def ray_token_auth(home: Path, environ: dict[str, str] | None = None) -> str:
    """Set up Ray token auth for a local cluster; returns how (for the log, no secret)."""
    env = os.environ if environ is None else environ
    mode = env.get(AUTH_MODE_ENV, "").lower()
    if mode == "disabled":
        logger.warning(
            "RAY_AUTH_MODE=disabled: Ray token auth is off; any local process can reach Ray"
        )
        return "disabled (RAY_AUTH_MODE)"
    env[AUTH_MODE_ENV] = "token"
    if env.get(TOKEN_ENV) or env.get(TOKEN_PATH_ENV):
        if environ is None:
            refresh_ray_auth_cache()
        return "token from RAY_AUTH_TOKEN" if env.get(TOKEN_ENV) else "RAY_AUTH_TOKEN_PATH"
    path = ensure_token_file(Path(home) / "ray" / "auth_token")
    env[TOKEN_PATH_ENV] = str(path)
    if environ is None:
        refresh_ray_auth_cache()
    return f"token file {path}"


def refresh_ray_auth_cache() -> None:
    """Ray caches its config and token per process; make it see what we just set (Ray's
    own ``_enable_token_auth`` does the same)."""
    # compiled (Cython) names that Ray's stubs for _raylet do not list
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def ensure_token_file(path: Path) -> Path:
    """A random token in ``path`` (mode 0600), created once and reused."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    elif path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return path


@dataclass
class ServeFile:
    """What ``facewatch serve`` takes from conf/serve.yaml (the ``serve deploy`` format)."""

    host: str
    port: int
    app_name: str
    route_prefix: str
    args: BuildArgs
    overrides: dict[str, dict[str, Any]]


def read_serve_file(path: Path | None) -> ServeFile:
    """Parse a Serve config file with Serve's own schema; one application, ours."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    if path is None:
        return ServeFile(DEFAULT_HOST, DEFAULT_PORT, APP_NAME, "/", BuildArgs(), {})
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        schema = ServeDeploySchema.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ServeConfigError(f"{path}: {exc}") from None
    apps = [a for a in schema.applications if a.import_path == "serve.app:build_app"]
    if len(apps) != 1:
        raise ServeConfigError(f"{path}: expected one application with serve.app:build_app")
    app = apps[0]
    try:
        args = BuildArgs.model_validate(app.args or {})
    except ValidationError as exc:
        raise ServeConfigError(f"{path}: args: {exc}") from None
    overrides = {}
    for d in app.deployments:
        opts = d.model_dump(exclude_unset=True)
        opts.pop("name")
        overrides[d.name] = opts
    http = schema.http_options
    return ServeFile(http.host, http.port, app.name, app.route_prefix or "/", args, overrides)


RAY_WORKER_PORTS = (10002, 19999)  # ray start's default --min/--max-worker-port
_HANDED_OUT: set[int] = set()


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port free now, for a server that binds it a little later (tests, benchmarks).

    Picked between Ray's worker ports and the kernel's ephemeral range, where no port is
    handed out to a process that binds port 0 or connects out: Ray starts dozens of such
    processes, and one of them could otherwise be given the port in between. A kernel-chosen
    port where that gap is empty; never the same port twice in one process."""
    low, high = RAY_WORKER_PORTS[1] + 1, ephemeral_port_low() - 1
    tries = 64 if high - low >= 1000 else 0  # a gap too narrow is not tried
    rng = secrets.SystemRandom()
    for _ in range(tries):
        port = rng.randint(low, high)
        if port not in _HANDED_OUT and _bindable(host, port):
            break
    else:  # none found: a port the kernel chooses
        port = 0
        while port == 0 or port in _HANDED_OUT:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
    _HANDED_OUT.add(port)
    return port


def ephemeral_port_low(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> int:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0  # not Linux, or unreadable: no gap known


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# Ray replaces 127.0.0.1 (even when given as the node address) with the machine's outward
# address, unless it treats the host as a single-node OS. This switch makes the local node
# really stay on loopback (jobs.archive.runtime.prepare_env sets the same); a user's value wins.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_ray_on_loopback() -> None:
    """Set ``LOOPBACK_ENV`` (a user's value wins) for this process and the Ray processes it
    starts. Ray reads the variable once, on import, and ray may be imported by now: tell
    this process too (its children read the environment)."""
    if os.environ.setdefault(LOOPBACK_ENV, "0") == "0":
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def ray_temp_dir() -> Path:
    """facewatch's own Ray temp folder, ``<tmp>/facewatch-ray-<uid>`` (0700): Ray's session
    folders, sockets and logs, apart from any other Ray on the machine, so that
    ``facewatch doctor`` can tell the processes facewatch started by their command line.
    Short on purpose: Ray's Unix socket paths must fit in 107 bytes."""
    path = Path(tempfile.gettempdir()) / f"facewatch-ray-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.is_symlink() or path.stat().st_uid != os.getuid():
        raise RuntimeError(f"{path} is not a folder of this user: remove it and try again")
    path.chmod(0o700)
    return path


def start_ray_local(num_cpus: int | None = None, resources: dict[str, float] | None = None) -> bool:
    """A local Ray on 127.0.0.1 (token auth set up by the caller); False if already up.
    ``resources``: the placement resources it offers (serve.placement.local_resources)."""
    import ray

    if ray.is_initialized():
        return False
    keep_ray_on_loopback()
    apply_memory_env()  # glibc settings that keep the replicas' RSS flat (serve.memory_env)
    metrics_port: dict[str, Any] = metrics_port_option()  # ray.init's private keyword
    ray.init(
        address="local",
        num_cpus=num_cpus,
        resources=resources,
        include_dashboard=False,
        **metrics_port,
        _node_ip_address="127.0.0.1",
        _temp_dir=str(ray_temp_dir()),
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    return True


def metrics_port_option(environ: dict[str, str] | None = None) -> dict[str, int]:
    """``ray.init``'s metrics export port from ``METRICS_PORT_ENV``, if set."""
    raw = (os.environ if environ is None else environ).get(METRICS_PORT_ENV, "").strip()
    if not raw:
        return {}
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ServeConfigError(f"{METRICS_PORT_ENV}={raw!r}: expected a port number")
    return {"_metrics_export_port": int(raw)}


def metrics_endpoint() -> str | None:
    """Where Prometheus scrapes this node's metrics agent (Ray's own and facewatch's)."""
    import ray

    me = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == me and node.get("MetricsExportPort"):
            return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    return None


def ray_cpus(settings) -> int:
    """The pool's CPUs plus one for the hub, the API, the proxy and archive stages."""
    pool = settings.pool
    return max(os.cpu_count() or 1, int(pool.num_cpus * pool.num_replicas + 0.999)) + 1


def hide_serve_routes(environ: dict[str, str] | None = None) -> None:
    """Serve's proxy closes its own ``/-/`` routes (``serve.proxy``); the proxy is a Ray
    worker and reads the variable when it starts, so it is set before Ray starts. A
    callback the user chose is kept, with a warning."""
    env = os.environ if environ is None else environ
    current = env.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)
    if current != PROXY_CALLBACK:
        logger.warning(
            "%s=%s: Serve's own /-/ routes stay open unless that callback closes them",
            PROXY_CALLBACK_ENV,
            current,
        )


PROXY_READY_ENV = "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"
PROXY_READY_S = "30"


def patient_proxy_start(environ: dict[str, str] | None = None) -> None:
    """Serve gives its new HTTP proxy three readiness checks of 5 s, then kills it, and
    ``serve.start`` fails. On a busy 2-core machine the proxy's worker can take longer
    than that to start (it imports Serve and its web stack), so facewatch allows 30 s a
    check. Serve's controller, a Ray worker, reads the variable when it starts: set before
    Ray starts. A value the user set is kept."""
    env = os.environ if environ is None else environ
    env.setdefault(PROXY_READY_ENV, PROXY_READY_S)


def start_local(
    serve_file: ServeFile,
    host: str | None = None,
    port: int | None = None,
    after_ray: Callable[[], None] | None = None,
):
    """Ray, Serve's HTTP proxy on ``host:port``, and the facewatch app; returns settings.

    Blocks until the app is RUNNING (models loaded and warm). ``after_ray`` runs once Ray
    is up: ``ray.init`` replaces the SIGTERM handler with one that exits at once (no clean
    shutdown), so ``facewatch serve`` puts its own back there."""
    from ray import serve as ray_serve

    settings = build_settings(serve_file.args)
    check_private_home(settings.resolved_home(), settings.allow_shared_home)
    how = ray_token_auth(settings.resolved_home())
    logger.info("Ray token auth: %s", how)
    hide_serve_routes()
    patient_proxy_start()
    start_ray_local(ray_cpus(settings), local_resources(settings, serve_file.overrides))
    if after_ray is not None:
        after_ray()
    ray_serve.start(
        http_options={"host": host or serve_file.host, "port": port or serve_file.port},
    )
    app = compose(settings, serve_file.overrides)
    ray_serve.run(app, name=serve_file.app_name, route_prefix=serve_file.route_prefix)
    return settings


def stop_local(shutdown_ray: bool = True) -> None:
    import ray
    from ray import serve as ray_serve

    try:
        ray_serve.shutdown()
    finally:
        if shutdown_ray:
            ray.shutdown()
