"""``facewatch status``: cameras, pool, searches, store, outbox and retention at a glance.

With ``--api URL`` (and an admin or operator token) it shows the running server's
``GET /v1/status``, the same view the server gives any tool. Without it, it reads the data
home: archive searches in progress (their progress files), the last retention run, the
cameras registered, and the store's rows when no server holds the store; what only a
running server knows (camera state, the pool, the outbox) says so.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from jobs.cli.common import console, fail, get_context

SERVER_ENV = "FACEWATCH_SERVER"  # as the camera commands (jobs.cli.serve)
TOKEN_ENV = "FACEWATCH_TOKEN"
OUTBOX_KEYS = ("depth", "delivered", "failed", "retries")
NEEDS_SERVER = "needs a running server: facewatch status --api URL --token TOKEN"


def register(app: typer.Typer) -> None:
    app.command("status")(status)


def status(
    ctx: typer.Context,
    api: str | None = typer.Option(
        None, "--api", "--server", envvar=SERVER_ENV, help="server URL, e.g. http://127.0.0.1:8000"
    ),
    token: str | None = typer.Option(
        None, "--token", envvar=TOKEN_ENV, help="admin or operator API token"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the status as JSON"),
) -> None:
    """Show cameras, the model pool, searches in progress, the store, the outbox and the
    last retention run (docs/operators.md explains each column)."""
    data = from_server(api, token) if api else from_home(get_context(ctx).settings())
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    for table in tables(data):
        console.print(table)


def from_server(api: str, token: str | None) -> dict[str, Any]:
    import httpx

    if not token:
        fail(f"--api needs an admin or operator token: --token or ${TOKEN_ENV}")
    url = api.rstrip("/") + "/v1/status"
    try:
        r = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the server at {url}: {type(exc).__name__}")
    if r.status_code != 200:
        try:
            why = r.json().get("error", r.text[:300])
        except ValueError:
            why = r.text[:300]
        fail(f"the server refused ({r.status_code}): {why}")
    return r.json()


def from_home(settings) -> dict[str, Any]:
    from pipelines.home import Home
    from pipelines.live.cameras import CameraRegistry
    from pipelines.status import read_last_retention, read_searches, utc_now

    home = Home.open(settings)
    try:
        cameras = [
            {"id": c.id, "state": "(no server)", "fps": c.fps, "list": c.list_name}
            for c in CameraRegistry(home.catalog).all()
        ]
        return {
            "generated_at": utc_now(),
            "cameras": cameras,
            "pool": {"note": NEEDS_SERVER, "replicas": []},
            "searches": read_searches(home.path),
            "store": store_rows(settings),
            "outbox": {"note": NEEDS_SERVER},
            "retention": {
                "interval_h": settings.governance.retention.interval_h,
                "last_run": read_last_retention(home.path),
            },
        }
    finally:
        home.close()


def store_rows(settings) -> dict[str, Any]:
    """Rows per collection, if no other process holds the store."""
    from pipelines.store import FACES, MATCHES, WATCHLIST, StoreError, VectorStore

    try:
        store = VectorStore.open(settings)
    except StoreError as exc:
        return {"backend": "", "note": str(exc)[:200]}
    try:
        rows = {}
        for name in (WATCHLIST, MATCHES, FACES):
            if store.client.has_collection(name):
                res = store.client.query(name, filter="", output_fields=["count(*)"])
                rows[name] = int(res[0]["count(*)"])
        return {"backend": store.where.split(" at /")[0], "rows": rows}
    finally:
        store.close()


def _table(title: str, columns: list[str], rows: list[list[Any]], note: str = "") -> Table:
    table = Table(title=title, caption=note or None, title_justify="left")
    for i, c in enumerate(columns):  # the first column names the row: never cut short
        table.add_column(c, no_wrap=i == 0, min_width=len(c) if i else None)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    return table


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def tables(data: dict[str, Any]) -> list[Table]:
    cams = data.get("cameras", [])
    cam_cols = ["camera", "state", "fps", "analysed fps", "analysed", "dropped", "reconnects"]
    cam_keys = ["id", "state", "fps", "analysed_fps", "frames_analysed", "drops", "reconnects"]
    pool = data.get("pool", {})
    replicas = [
        [r["replica"], r["node_ip"], f"{r['busy_fraction']:.0%}"]
        + [r["queue_live"], r["queue_archive"]]
        for r in pool.get("replicas", [])
    ]
    searches = [
        [s["search_id"], s["state"], f"{s['files_done']}+{s['files_failed']}/{s['files_total']}"]
        + [f"{s['progress']:.0%}", s["frames_per_s"], _eta(s["eta_s"]), s["started_at"]]
        for s in data.get("searches", [])
    ]
    store = data.get("store", {})
    outbox = data.get("outbox", {})
    last = (data.get("retention") or {}).get("last_run") or {}
    return [
        _table("Cameras", cam_cols, [[c.get(k) for k in cam_keys] for c in cams]),
        _table(
            "Pool",
            ["replica", "node", "busy", "live queue", "archive queue"],
            replicas,
            pool.get("note", ""),
        ),
        _table(
            "Searches in progress",
            ["search", "state", "files", "progress", "frames/s", "ETA", "started"],
            searches,
        ),
        _table(
            "Store",
            ["backend", *store.get("rows", {})],
            [[store.get("backend", ""), *store.get("rows", {}).values()]],
            store.get("note", ""),
        ),
        _table(
            "Outbox",
            ["depth", "delivered", "failed", "retries"],
            [] if "note" in outbox else [[outbox.get(k, 0) for k in OUTBOX_KEYS]],
            outbox.get("note", ""),
        ),
        _table(
            "Retention",
            ["last run", "by", "deleted"],
            [[last.get("at", "never"), last.get("actor", ""), last.get("deleted", "")]],
        ),
    ]
