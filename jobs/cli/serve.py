"""``facewatch serve`` (the live server) and ``facewatch camera add|ls|rm``.

Camera commands work two ways:
- with ``--server URL`` (or ``$FACEWATCH_SERVER``) they call the running server's API with an
  admin token from ``--token`` or ``$FACEWATCH_TOKEN``; the server validates, audits and
  starts or stops the camera at once;
- without it they edit the camera registry in the data home (a SQLite table beside the
  catalog) directly, whether or not a server runs: a running server picks the change up
  within ``live.list_refresh_s`` seconds. Both ways are audited.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path

import typer
from rich.table import Table

from jobs.cli.common import console, current_actor, fail, get_context
from pipelines.errors import EXIT_UNEXPECTED

logger = logging.getLogger(__name__)

camera_app = typer.Typer(help="Add, list and remove live cameras.", no_args_is_help=True)

SERVER_ENV = "FACEWATCH_SERVER"
TOKEN_ENV = "FACEWATCH_TOKEN"
DEFAULT_SERVE_CONFIG = Path("conf/serve.yaml")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(camera_app, name="camera")


def serve(
    ctx: typer.Context,
    serve_config: Path | None = typer.Option(
        None,
        "--config",
        "--serve-config",
        help="Serve config file (default: ./conf/serve.yaml if present, else built-in)",
    ),
    host: str | None = typer.Option(None, "--host", help="HTTP bind address (default 127.0.0.1)"),
    port: int | None = typer.Option(None, "--port", min=1, max=65535, help="HTTP port (8000)"),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        min=1,
        max=65535,
        help="port of Ray's Prometheus metrics agent (default: Ray picks one)",
    ),
) -> None:
    """Start the live server (Ray Serve on a local Ray); runs until Ctrl-C or SIGTERM.

    The global --config (before 'serve') is the facewatch settings file; this --config is
    the Serve config (deployments, HTTP address)."""
    from serve.local import (
        METRICS_PORT_ENV,
        metrics_endpoint,
        read_serve_file,
        start_local,
        stop_local,
    )

    c = get_context(ctx)
    if serve_config is None and DEFAULT_SERVE_CONFIG.is_file():
        serve_config = DEFAULT_SERVE_CONFIG
    sf = read_serve_file(serve_config)
    sf.args = _with_cli_settings(sf.args, c)
    if metrics_port is not None:
        os.environ[METRICS_PORT_ENV] = str(metrics_port)
    stop = threading.Event()

    def on_stop_signals() -> None:
        """SIGTERM (systemd, Kubernetes) stops as cleanly as Ctrl-C. Installed again once
        Ray is up: ray.init replaces the SIGTERM handler with an immediate exit."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())

    on_stop_signals()
    try:
        settings = start_local(sf, host, port, after_ray=on_stop_signals)
    except Exception as exc:  # noqa: BLE001 - say why, clean up, exit non-zero
        console.print(f"[bold red]error:[/] the server did not start: {exc}")
        stop_local()
        raise typer.Exit(EXIT_UNEXPECTED) from None
    url = f"http://{host or sf.host}:{port or sf.port}"
    console.print(f"facewatch live server on {url} (home {settings.resolved_home()})")
    console.print(f"review page: {url}/review   health: {url}/healthz   Ctrl-C stops it")
    console.print(f"Prometheus metrics: {metrics_endpoint() or 'not exported'}")
    stop.wait()
    console.print("stopping ...")
    stop_local()
    console.print("stopped")


def _with_cli_settings(args, c):
    """Global --config/--home/--store apply to the server as to every other command."""
    settings = dict(args.settings)
    if c.home is not None:
        settings["home"] = str(c.home.expanduser().resolve())
    if c.store_uri is not None:
        settings["store"] = {**settings.get("store", {}), "uri": c.store_uri}
    if c.allow_shared_home:
        settings["allow_shared_home"] = True
    update = {"settings": settings}
    if c.config_path is not None:
        update["config"] = c.config_path
    return args.model_copy(update=update)


# -- cameras -------------------------------------------------------------------------------
def _server(server: str | None, token: str | None):
    """(base URL, headers) when talking to a server, else None (edit the registry)."""
    if not server:
        return None
    if not token:
        fail(f"--server needs an admin token: --token or ${TOKEN_ENV}")
    return server.rstrip("/"), {"Authorization": f"Bearer {token}"}


def _call(method: str, url: str, headers: dict, **kwargs) -> dict:
    import httpx

    try:
        r = httpx.request(method, url, headers=headers, timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the server at {url}: {type(exc).__name__}")
    try:
        body = r.json()
    except ValueError:
        body = {"error": r.text[:300]}
    if r.status_code >= 400:
        fail(f"the server refused ({r.status_code}): {body.get('error', body)}")
    return body


def _registry(ctx: typer.Context):
    from pipelines.home import Home
    from pipelines.live.cameras import CameraRegistry

    home = Home.open(get_context(ctx).settings())
    return home, CameraRegistry(home.catalog)


ServerOpt = typer.Option(
    None, "--server", envvar=SERVER_ENV, help="server URL, e.g. http://127.0.0.1:8000"
)
TokenOpt = typer.Option(None, "--token", envvar=TOKEN_ENV, help="admin API token")


@camera_app.command("add")
def camera_add(
    ctx: typer.Context,
    camera_id: str = typer.Argument(..., metavar="ID", help="letters, digits, _ and -"),
    url: str = typer.Argument(..., help="rtsp:// or http(s):// stream, video file, or 'push'"),
    fps: float | None = typer.Option(None, "--fps", help="analysed frames per second (5)"),
    list_name: str | None = typer.Option(None, "--list", help="watch list (default: all)"),
    threshold: float | None = typer.Option(None, "--threshold", help="override (audited)"),
    once: bool = typer.Option(False, "--once", help="file sources: play once, do not loop"),
    server: str | None = ServerOpt,
    token: str | None = TokenOpt,
) -> None:
    """Add a camera (to the running server with --server, else to the home's registry)."""
    from pipelines.live.cameras import camera_file_roots, parse_spec

    data = {"id": camera_id, "url": url, "fps": fps, "list": list_name, "threshold": threshold}
    data["loop"] = not once
    remote = _server(server, token)
    if remote is not None:
        base, headers = remote
        body = _call("POST", f"{base}/v1/cameras", headers, json=data)
        console.print(f"camera {body['id']} added: {body['state']}")
        return
    home, registry = _registry(ctx)
    try:  # a video file must be in the folders the server lets registry cameras read
        spec = parse_spec(data, file_roots=camera_file_roots(home.path))
        registry.add_audited(spec, current_actor(), home.audit)
    finally:
        home.close()
    console.print(f"camera {spec.id} added to {home.path} (a running server starts it shortly)")


@camera_app.command("ls")
def camera_ls(
    ctx: typer.Context,
    server: str | None = ServerOpt,
    token: str | None = TokenOpt,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """List cameras: live status from a server, or the registry of the home."""
    remote = _server(server, token)
    if remote is not None:
        base, headers = remote
        cams = _call("GET", f"{base}/v1/cameras", headers)["cameras"]
    else:
        home, registry = _registry(ctx)
        try:
            cams = [s.public() | {"state": "(registry)"} for s in registry.all()]
        finally:
            home.close()
    if as_json:
        print(json.dumps(cams, indent=2))
        return
    table = Table("id", "kind", "url", "fps", "list", "state", "analysed fps", "drops", "error")
    for cam in cams:
        table.add_row(
            cam["id"],
            cam["kind"],
            cam["url"],
            str(cam.get("fps") or "default"),
            cam.get("list") or "(all)",
            str(cam.get("state", "")),
            str(cam.get("analysed_fps", "")),
            str(cam.get("drops", "")),
            str(cam.get("last_error", ""))[:60],
        )
    console.print(table)


@camera_app.command("rm")
def camera_rm(
    ctx: typer.Context,
    camera_id: str = typer.Argument(..., metavar="ID"),
    server: str | None = ServerOpt,
    token: str | None = TokenOpt,
) -> None:
    """Remove a camera (its in-memory faces are dropped at once)."""
    remote = _server(server, token)
    if remote is not None:
        base, headers = remote
        _call("DELETE", f"{base}/v1/cameras/{camera_id}", headers)
        console.print(f"camera {camera_id} removed")
        return
    home, registry = _registry(ctx)
    try:
        registry.remove_audited(camera_id, current_actor(), home.audit)
    finally:
        home.close()
    console.print(f"camera {camera_id} removed from {home.path}")
