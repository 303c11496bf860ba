"""The ``facewatch`` command line. Each command group lives in its own module under jobs/cli/.

Exit codes: 0 success; 2 usage or configuration error, or an act refused because the
audit log is damaged; 3 partial failure (some inputs failed, the rest were processed);
1 anything unexpected.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from jobs.cli import common
from pipelines.privacy import private_umask

app = typer.Typer(
    name="facewatch",
    help="Live and retrospective face recognition against watch lists, accountable by design.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=common.FacewatchGroup,
)


@app.callback()
def main(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="YAML config (default: $FACEWATCH_CONFIG, ./conf/facewatch.yaml)",
    ),
    home: Path | None = typer.Option(
        None, "--home", help="data home (default: $FACEWATCH_HOME or the per-user data dir)"
    ),
    store: str | None = typer.Option(
        None, "--store", help="Milvus server URI; default: milvus-lite inside the home"
    ),
    allow_shared_home: bool = typer.Option(
        False,
        "--allow-shared-home",
        help="use a home other users can read (refused by default: it holds faces)",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log more"),
) -> None:
    private_umask()  # every file and folder facewatch creates: 0600 / 0700
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # milvus-lite's embedded gRPC server logs a harmless "Method not implemented"
    # (AllocTimestamp) traceback whenever pymilvus creates a collection.
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    ctx.obj = common.Context(
        config_path=config, home=home, store_uri=store, allow_shared_home=allow_shared_home
    )


def _register() -> None:
    # Explicit, so a missing module is an import error, not a silently absent command.
    from jobs.cli import (
        audit,
        cluster,
        deployment,
        doctor,
        evaluate,
        evidence,
        index,
        models,
        retention,
        search,
        serve,
        sightings,
        status,
        store,
        watchlist,
    )

    groups = {
        "models": models.app,
        "evaluate": evaluate.app,
        "watchlist": watchlist.app,
        "audit": audit.app,
        "deployment": deployment.app,
        "retention": retention.app,
        "sightings": sightings.app,
        "cluster": cluster.app,
        "store": store.app,
        "case": evidence.case_app,
        "evidence": evidence.evidence_app,
    }
    for name, group in groups.items():
        app.add_typer(group, name=name)
    for module in (search, serve, index, doctor, status):
        module.register(app)


_register()
