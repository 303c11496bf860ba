"""Investigators' cases: who opened a case, why, on whose authority, and who else may see it.

A case is the unit an investigator works in. Its reference is the ``--case`` the CLI has
always carried into the audit log, so everything done under it (searches, exports,
decisions) is found again by that reference. What this module adds is ownership:

- an ``investigator`` creates a case and is its owner; only the owner and investigators an
  ``admin`` granted may open it, search in it or decide in it;
- an ``auditor`` may read every case (never decide, never search);
- an ``admin`` grants access (and so may see a case's details, not its faces).

Every act here is written to the audit log *before* it takes effect, and a refusal is
audited too (with the token's name), so "who looked at which case" is always answerable.
Plain Python over the catalog and the audit log: the API, the CLI and tests share it.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from pipelines.audit import AuditLog
from pipelines.catalog import Catalog, utcnow
from pipelines.errors import FacewatchError
from pipelines.text import UnsafeTextError, check_text

CASE_REF = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_CASE_REF = re.compile(CASE_REF)
TEXT_MAX = 1000
READ, WORK, GRANT = "read", "work", "grant"


class CaseError(FacewatchError, ValueError):
    """A case act that cannot go ahead; ``status`` is its HTTP status (the CLI exits 2)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = self.http_status = status


@dataclass(frozen=True)
class Actor:
    """Who acts: a token's (or a CLI user's) name and role."""

    name: str
    role: str


def check_case_ref(ref: str) -> str:
    if not isinstance(ref, str) or not _CASE_REF.match(ref):
        raise CaseError(
            "a case reference is 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return ref


def _check_text(value: str, what: str) -> str:
    value = (value or "").strip()
    if not value:
        raise CaseError(f"a case needs {what}")
    if len(value) > TEXT_MAX:
        raise CaseError(f"{what} is at most {TEXT_MAX} characters")
    try:
        check_text(value, what, free_text=True)
    except UnsafeTextError as exc:
        raise CaseError(str(exc)) from None
    return value


class CaseBook:
    """Cases in the catalog (migration 6), each act audited first."""

    def __init__(self, catalog: Catalog, audit: AuditLog):
        self.catalog, self.audit = catalog, audit

    def create(self, ref: str, reason: str, authorised_by: str, who: Actor) -> dict[str, Any]:
        if who.role != "investigator":
            raise self._refuse(who, ref, "create", "only an investigator opens a case")
        row = {
            "case_ref": check_case_ref(ref),
            "reason": _check_text(reason, "a reason"),
            "authorised_by": _check_text(authorised_by, "who authorised it"),
            "owner": who.name,
            "created_at": utcnow(),
        }
        with self.catalog.transaction() as db:
            if self._get(ref) is not None:
                raise CaseError(f"case {ref} already exists", 409)
            self.audit.append(
                who.name,
                "case.create",
                case=ref,
                reason=row["reason"],
                authorised_by=row["authorised_by"],
            )
            db.execute(
                "INSERT INTO cases(case_ref, reason, authorised_by, owner, created_at) "
                "VALUES (:case_ref, :reason, :authorised_by, :owner, :created_at)",
                row,
            )
        return {**row, "grants": []}

    def _get(self, ref: str) -> dict[str, Any] | None:
        return self.catalog.row("SELECT * FROM cases WHERE case_ref = ?", ref)

    def _grantees(self, ref: str) -> list[str]:
        rows = self.catalog.rows(
            "SELECT grantee FROM case_grants WHERE case_ref = ? ORDER BY grantee", ref
        )
        return [r["grantee"] for r in rows]

    def may(self, case: dict[str, Any], who: Actor, need: str) -> bool:
        """Whether ``who`` may ``need`` (read, work, grant) in ``case``."""
        member = who.role == "investigator" and (
            case["owner"] == who.name or who.name in self._grantees(case["case_ref"])
        )
        if need == WORK:
            return member
        if need == GRANT:
            return who.role == "admin"
        return member or who.role in ("auditor", "admin")

    def require(self, ref: str, who: Actor, need: str = READ) -> dict[str, Any]:
        """The case, if ``who`` may ``need`` in it; otherwise a 404 or an audited 403."""
        case = self._get(check_case_ref(ref))
        if case is None:
            raise CaseError(f"no case {ref}", 404)
        if not self.may(case, who, need):
            raise self._refuse(who, ref, need, f"{who.name} may not {need} in case {ref}")
        return {**case, "grants": self._grantees(ref)}

    def _refuse(self, who: Actor, ref: str, need: str, message: str) -> CaseError:
        self.audit.append(who.name, "case.refused", case=str(ref)[:64], need=need, role=who.role)
        return CaseError(message, 403)

    def open(self, ref: str, who: Actor) -> dict[str, Any]:
        case = self.require(ref, who, READ)
        self.audit.append(who.name, "case.open", case=ref)
        return case

    def cases(self, who: Actor) -> list[dict[str, Any]]:
        """The cases ``who`` may read: an investigator's own and granted ones; every case
        for an auditor or admin. Listing is audited (it names cases, not faces)."""
        rows = self.catalog.rows("SELECT * FROM cases ORDER BY created_at DESC, case_ref")
        mine = [dict(r, grants=self._grantees(r["case_ref"])) for r in rows]
        mine = [c for c in mine if self.may(c, who, READ)]
        self.audit.append(who.name, "case.list", n=len(mine))
        return mine

    def grant(self, ref: str, grantee: str, who: Actor) -> dict[str, Any]:
        self.require(ref, who, GRANT)
        grantee = check_text(_check_text(grantee, "a grantee"), "a grantee") or ""
        with self.catalog.transaction() as db:
            self.audit.append(who.name, "case.grant", case=ref, grantee=grantee)
            try:
                db.execute(
                    "INSERT INTO case_grants(case_ref, grantee, granted_by, granted_at) "
                    "VALUES (?, ?, ?, ?)",
                    (ref, grantee, who.name, utcnow()),
                )
            except sqlite3.IntegrityError:
                pass  # granted before: the grant stands, and this request is audited
        return {**self._get(ref), "grants": self._grantees(ref)}  # type: ignore[dict-item]
