"""``facewatch cluster up|down|status|run``: a real multi-node Ray cluster on this machine,
in a private network namespace that only loopback reaches (see jobs/cluster.py for why).

``run`` is how a data engineer uses it: ``facewatch cluster run -- search ...`` runs that
facewatch command inside the namespace, joined to the cluster (its Ray address and token
come from the cluster's directory, default ``<home>/cluster``); ``exec`` runs any other
command there, e.g. Ray's ``serve deploy conf/serve.yaml``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from jobs import cluster
from jobs.cli.common import console, emit_json, fail, get_context
from pipelines.errors import EXIT_UNEXPECTED

app = typer.Typer(help="A multi-node Ray cluster on this machine (head + worker nodes).")

DIR_HELP = "the cluster's directory (default: <home>/cluster)"


def _directory(ctx: typer.Context, directory: Path | None) -> Path:
    if directory is not None:
        return directory
    return get_context(ctx).settings().resolved_home() / "cluster"


@app.command("up")
def up(
    ctx: typer.Context,
    workers: int = typer.Option(2, "--workers", min=1, max=8, help="worker (pool) nodes"),
    worker_cpus: int = typer.Option(
        2,
        "--worker-cpus",
        min=1,
        max=64,
        help="logical CPUs per worker (a 0.9-CPU replica and the archive stages beside it need 2)",
    ),
    head_cpus: int = typer.Option(1, "--head-cpus", min=1, max=64, help="CPUs of the head"),
    decode_nodes: int = typer.Option(
        0,
        "--decode-nodes",
        min=0,
        max=8,
        help="nodes of 1 CPU offering facewatch_decode, for the archive stages alone "
        "(placement.workers: {facewatch_decode: 0.01}; as benchmarks/bench_cluster.py)",
    ),
    directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP),
) -> None:
    """Start a head (the home node) and N worker nodes on 127.0.0.1, in a private network
    namespace; returns once every node has joined."""
    where = _directory(ctx, directory)
    try:
        cluster.ClusterHandle.read(where)
        fail(f"a cluster already runs from {where}: `facewatch cluster down` first")
    except cluster.ClusterError:
        pass
    spec = cluster.ClusterSpec(
        workers=workers, worker_cpus=worker_cpus, head_cpus=head_cpus, decode_nodes=decode_nodes
    )
    try:
        handle = cluster.up(where, spec)
    except cluster.ClusterError as exc:
        fail(str(exc), EXIT_UNEXPECTED)
    extra = f" + {decode_nodes} decode node(s)" if decode_nodes else ""
    console.print(
        f"cluster up: head + {workers} worker node(s){extra} at {handle.address} "
        f"(namespace of pid {handle.pid}); use `facewatch cluster run -- COMMAND`"
    )


@app.command("down")
def down(
    ctx: typer.Context, directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP)
) -> None:
    """Stop the cluster: every node, and the namespace with them."""
    where = _directory(ctx, directory)
    stopped = cluster.down(where)
    console.print("cluster stopped" if stopped else f"no cluster was running from {where}")


@app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context, directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP)
) -> None:
    """Run ``facewatch ARGS`` (after ``--``) inside the cluster's namespace, on the cluster."""
    handle = _handle(ctx, directory)
    if not ctx.args:
        fail("give the facewatch command to run after --, e.g. -- search ...")
    done = handle.run([sys.executable, "-m", "jobs.cli", *ctx.args])
    raise typer.Exit(done.returncode)


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_(
    ctx: typer.Context, directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP)
) -> None:
    """Run any COMMAND (after ``--``) inside the cluster's namespace, joined to the cluster:
    Ray's own CLI, e.g. ``-- serve deploy conf/serve.yaml`` or ``-- ray status``."""
    handle = _handle(ctx, directory)
    if not ctx.args:
        fail("give the command to run after --, e.g. -- serve deploy conf/serve.yaml")
    try:
        done = handle.run(list(ctx.args))
    except FileNotFoundError as exc:
        fail(f"cannot run {ctx.args[0]}: {exc}")
    raise typer.Exit(done.returncode)


@app.command("status")
def status(
    ctx: typer.Context,
    directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout"),
) -> None:
    """The nodes, their resources, where every FacePool, LiveHub and Api replica runs, the
    live cameras and the searches in progress."""
    handle = _handle(ctx, directory)
    argv = [sys.executable, "-m", "jobs.cluster_status", handle.address]
    done = handle.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        fail(f"could not read the cluster's state: {done.stderr[-2000:]}", EXIT_UNEXPECTED)
    snap = json.loads(done.stdout.strip().splitlines()[-1])
    if as_json:
        emit_json({"address": handle.address, **snap})
        return
    _print_status(handle.address, snap)


def _handle(ctx: typer.Context, directory: Path | None) -> cluster.ClusterHandle:
    try:
        return cluster.ClusterHandle.read(_directory(ctx, directory))
    except cluster.ClusterError as exc:
        fail(f"{exc}; start one with `facewatch cluster up`")
    raise AssertionError("unreachable")


def _print_status(address: str, snap: dict) -> None:
    where: dict[str, list[str]] = {}
    for r in snap["replicas"]:
        where.setdefault(r["node_id"], []).append(r["deployment"])
    table = Table(title=f"Ray cluster at {address}")
    for col in ("node", "role", "CPUs", "GPUs", "custom resources", "facewatch replicas"):
        table.add_column(col)
    for n in snap["nodes"]:
        custom = ", ".join(f"{k}={v:g}" for k, v in sorted(n["resources"].items()))
        table.add_row(
            n["node_id"][:12],
            "head" if n["head"] else "worker",
            f"{n['cpus']:g}",
            f"{n['gpus']:g}",
            custom or "-",
            ", ".join(sorted(where.get(n["node_id"], []))) or "-",
        )
    console.print(table)
    cams = ", ".join(f"{c.get('id')} ({c.get('list', '-')})" for c in snap.get("cameras", []))
    console.print(f"cameras: {cams or 'none'}")
    console.print(f"searches in progress: {len(snap.get('searches', []))}")
