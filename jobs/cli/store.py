"""``facewatch store migrate --to URI``: move the current store (milvus-lite in the home,
or a server) onto a Milvus server, verified by counts (pipelines/store_migrate.py).

The copy holds faces, so it is an audited act, recorded before any row moves (fail
closed). Afterwards point ``store.uri`` (or ``--store``) at the server."""

from __future__ import annotations

import typer

from jobs.cli.common import console, current_actor, emit_json, fail, get_context
from pipelines.config import redact_userinfo
from pipelines.errors import EXIT_UNEXPECTED
from pipelines.home import Home
from pipelines.store import StoreError, VectorStore
from pipelines.store_migrate import migrate

app = typer.Typer(help="The vector store: move it to a Milvus server.")


@app.command("migrate")
def migrate_cmd(
    ctx: typer.Context,
    to: str = typer.Option(..., "--to", help="Milvus server URI, e.g. http://milvus:19530"),
    token: str | None = typer.Option(None, "--token", help="the server's token, if any"),
    db_name: str = typer.Option("default", "--db-name", help="database on the server"),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout"),
) -> None:
    """Copy every collection of the current store to an empty Milvus server database."""
    if not to.startswith(("http://", "https://", "tcp://", "grpc://")):
        fail(f"--to must be a Milvus server URI (http://host:19530), not {to!r}")
    settings = get_context(ctx).settings()
    target = settings.model_copy(
        update={
            "store": settings.store.model_copy(
                update={"uri": to, "token": token, "db_name": db_name}
            )
        }
    )
    with Home.open(settings) as home:
        home.audit.append(current_actor(), "store.migrate", to=redact_userinfo(to), db=db_name)
        try:
            src = VectorStore.open(settings)
            try:
                dst = VectorStore.open(target)
                try:
                    copied = migrate(src, dst)
                finally:
                    dst.close()
            finally:
                src.close()
        except StoreError as exc:
            fail(str(exc))
    _report(copied, as_json)


def _report(copied, as_json: bool) -> None:
    rows = [
        {"collection": c.collection, "source": c.source, "destination": c.destination}
        for c in copied
    ]
    if as_json:
        emit_json({"collections": rows, "ok": all(c.ok for c in copied)})
    else:
        for c in copied:
            mark = "ok" if c.ok else "[red]COUNTS DIFFER[/]"
            console.print(f"{c.collection}: {c.source} -> {c.destination} rows {mark}")
    if not all(c.ok for c in copied):
        fail("the copy is incomplete: the counts differ (the source is untouched)", EXIT_UNEXPECTED)
