"""``facewatch case`` and ``facewatch evidence``: cases and their evidence bundles.

The terminal acts as the local user ($FACEWATCH_USER) in the investigator role: whoever
can read the home is already trusted with it, so the case rules that matter here are the
audit trail and ownership (a bundle is exported by the case's owner or a grantee).
``evidence verify`` needs no home at all: it checks a bundle offline, as a court would.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from jobs.cli.common import console, current_actor, fail, get_context
from pipelines.cases import Actor, CaseBook, CaseError
from pipelines.evidence import EvidenceError, export_bundle, verify_bundle
from pipelines.home import Home

case_app = typer.Typer(help="Investigators' cases: reference, reason, authority (audited).")
evidence_app = typer.Typer(help="Evidence bundles: export a case as one ZIP, verify one.")


def _book(ctx: typer.Context) -> tuple[Home, CaseBook]:
    try:
        home = Home.open(get_context(ctx).settings(), None)
    except ValueError as exc:
        fail(str(exc))
    return home, CaseBook(home.catalog, home.audit)


def _me() -> Actor:
    return Actor(current_actor(), "investigator")


@case_app.command("create")
def create(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="the case reference, e.g. OP-2026-114"),
    reason: str = typer.Option(..., "--reason", help="why the case is opened"),
    authorised_by: str = typer.Option(..., "--authorised-by", help="who authorised it"),
) -> None:
    """Open a case owned by you."""
    home, book = _book(ctx)
    try:
        case = book.create(ref, reason, authorised_by, _me())
    except CaseError as exc:
        fail(str(exc))
    finally:
        home.close()
    console.print(f"case {case['case_ref']} opened by {case['owner']}")


@case_app.command("ls")
def ls(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="JSON on stdout")
) -> None:
    """The cases you own or were granted."""
    home, book = _book(ctx)
    try:
        cases = book.cases(_me())
    finally:
        home.close()
    if as_json:
        sys.stdout.write(json.dumps(cases) + "\n")
        return
    for c in cases:
        console.print(f"{c['case_ref']}  {c['created_at']}  {c['owner']}  {c['reason']}")


@evidence_app.command("export")
def export(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="the case reference"),
    out: Path = typer.Option(..., "--out", help="the bundle to write (a .zip)"),
) -> None:
    """Write the case's evidence bundle: reports, tables, confirmed clips, hashes, audit."""
    home, book = _book(ctx)
    try:
        result = export_bundle(book, ref, _me(), out)
    except (CaseError, EvidenceError) as exc:
        fail(str(exc))
    finally:
        home.close()
    console.print(
        f"bundle {result['bundle']}: {result['files']} files, {result['sources']} sources, "
        f"{result['confirmed_clips']} confirmed clips, {result['audit_records']} audit records"
    )
    console.print(f"sha256 {result['sha256']}")


@evidence_app.command("verify")
def verify(
    bundle: Path = typer.Argument(..., exists=True, dir_okay=False, help="the bundle ZIP"),
) -> None:
    """Check a bundle offline: every hash, the audit chain, a clip per confirmed sighting,
    every byte of the ZIP. Exit 0 intact, 1 not (each problem named)."""
    verdict = verify_bundle(bundle)
    if verdict.ok:
        facts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in verdict.checked.items())
        console.print(f"bundle intact: {facts} ({bundle})")
        return
    console.print(f"[bold red]bundle NOT intact[/] ({bundle}):", highlight=False)
    for problem in verdict.problems[:50]:
        console.print(f"  - {problem}", highlight=False, markup=False)
    raise typer.Exit(1)
