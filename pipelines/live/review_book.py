"""The review book: each live alert's workflow state, who decided it, and the statistics.

Milvus (``fw_matches``) keeps the alert as a match record with its embedding and status;
this small SQLite table keeps what the review workflow needs and Milvus cannot do well:
newest-first listing, the note, who decided and when, and grouped counts for ``/v1/stats``.
The hub is its only writer. A decision goes to this book first, in one conditional update
(of two reviewers at once, one wins and the other gets 409), then to Milvus; if Milvus
cannot take it, the book goes back to pending (``adjudicate``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from pipelines.catalog import Catalog, iso_utc
from pipelines.errors import FacewatchError
from pipelines.schemas import AlertRecord, ReviewedAlert

OUTCOMES = ("confirmed", "rejected")


class ReviewError(FacewatchError, ValueError):
    """An adjudication refused; ``status``: the HTTP status (404 unknown, 409 decided)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.http_status = status


class ReviewBook:
    """The ``live_alerts`` table (catalog migration 4). Each call opens its own short
    catalog session: the hub calls from its I/O thread and its event loop."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def add(
        self,
        record: AlertRecord,
        thumbnail: str = "",
        then: Callable[[sqlite3.Connection, ReviewedAlert], None] | None = None,
    ) -> None:
        """Store a new alert (pending); ``thumbnail``: its crop in the home's media.
        ``then(db, alert)`` runs in the same transaction once the alert is in, so what it
        writes (the hub's webhook outbox rows) is kept together with the alert or not at
        all: a process killed in between leaves neither."""
        with self.catalog.session() as db:
            added = db.execute(
                "INSERT OR IGNORE INTO live_alerts (alert_id, camera_id, list_name, person_id,"
                " alerted_at, record) VALUES (?,?,?,?,?,?)",
                (
                    record["alert_id"],
                    record["camera_id"],
                    record["list_name"],
                    record["person_id"],
                    iso_utc(record["alerted_at"]),
                    json.dumps({**record, "thumbnail": thumbnail}),
                ),
            ).rowcount
            if added and then is not None:
                row = db.execute(
                    "SELECT * FROM live_alerts WHERE alert_id = ?", (record["alert_id"],)
                ).fetchone()
                then(db, _public(row))

    def get(self, alert_id: str) -> ReviewedAlert:
        with self.catalog.session(write=False) as db:
            row = db.execute("SELECT * FROM live_alerts WHERE alert_id = ?", (alert_id,)).fetchone()
        if row is None:
            raise ReviewError(f"no alert '{alert_id}'", 404)
        return _public(row)

    def list(self, status: str, camera: str | None, limit: int) -> list[ReviewedAlert]:
        sql, args = "SELECT * FROM live_alerts WHERE 1=1", list[Any]()
        if status != "all":
            sql, args = sql + " AND status = ?", [*args, status]
        if camera:
            sql, args = sql + " AND camera_id = ?", [*args, camera]
        sql += " ORDER BY alerted_at DESC LIMIT ?"
        with self.catalog.session(write=False) as db:
            rows = db.execute(sql, [*args, limit]).fetchall()
        return [_public(r) for r in rows]

    def check_pending(self, alert_id: str) -> ReviewedAlert:
        alert = self.get(alert_id)
        if alert["status"] != "pending":
            raise ReviewError(
                f"alert '{alert_id}' was already {alert['status']} by {alert['decided_by']}", 409
            )
        return alert

    def decide(self, alert_id: str, outcome: str, note: str, actor: str) -> ReviewedAlert:
        if outcome not in OUTCOMES:
            raise ReviewError(f"outcome must be one of {', '.join(OUTCOMES)}", 422)
        with self.catalog.session() as db:
            n = db.execute(
                "UPDATE live_alerts SET status = ?, decided_by = ?, decided_at = ?, note = ?"
                " WHERE alert_id = ? AND status = 'pending'",
                (outcome, actor, iso_utc(time.time()), note, alert_id),
            ).rowcount
        if n == 0:
            self.check_pending(alert_id)  # raises 404 or 409
        return self.get(alert_id)

    def undo(self, alert_id: str, outcome: str, actor: str) -> None:
        """Back to pending: the decision ``actor`` just made could not be stored in Milvus."""
        with self.catalog.session() as db:
            db.execute(
                "UPDATE live_alerts SET status = 'pending', decided_by = NULL,"
                " decided_at = NULL, note = NULL"
                " WHERE alert_id = ? AND status = ? AND decided_by = ?",
                (alert_id, outcome, actor),
            )

    def stats(self) -> dict[str, Any]:
        with self.catalog.session(write=False) as db:
            rows = db.execute(
                "SELECT camera_id, list_name, status, COUNT(*) AS n FROM live_alerts"
                " GROUP BY camera_id, list_name, status"
            ).fetchall()
        total: dict[str, int] = {}
        cams: dict[str, dict[str, int]] = {}
        lists: dict[str, dict[str, int]] = {}
        for r in rows:
            cam = cams.setdefault(r["camera_id"], {})
            lst = lists.setdefault(r["list_name"], {})
            for bucket in (total, cam, lst):
                bucket[r["status"]] = bucket.get(r["status"], 0) + r["n"]
        return {
            **summarise(total),
            "per_camera": {k: summarise(v) for k, v in sorted(cams.items())},
            "per_list": {k: summarise(v) for k, v in sorted(lists.items())},
        }


def summarise(counts: dict[str, int]) -> dict[str, Any]:
    """Alerts by status, and precision = confirmed / adjudicated (None before any decision)."""
    confirmed, rejected = counts.get("confirmed", 0), counts.get("rejected", 0)
    adjudicated = confirmed + rejected
    return {
        "alerts": sum(counts.values()),
        "confirmed": confirmed,
        "rejected": rejected,
        "pending": counts.get("pending", 0),
        "precision": round(confirmed / adjudicated, 4) if adjudicated else None,
    }


def _public(row: sqlite3.Row) -> ReviewedAlert:
    record: AlertRecord = json.loads(row["record"])
    return {
        **record,
        "status": row["status"],
        "decided_by": row["decided_by"],
        "decided_at": row["decided_at"],
        "note": row["note"] or "",
        "crop_url": f"/v1/alerts/{row['alert_id']}/crop",
        "photo_url": f"/v1/alerts/{row['alert_id']}/photo",
    }


def adjudicate(
    book: ReviewBook,
    store_status: Callable[[str, str], None],
    alert_id: str,
    outcome: str,
    note: str,
    actor: str,
) -> ReviewedAlert:
    """Decide a pending alert in the book, then store the status in Milvus
    (``store_status``). Returns the decided alert; ReviewError 404/409/422/503."""
    decided = book.decide(alert_id, outcome, note, actor)
    try:
        store_status(alert_id, outcome)
    except Exception as exc:
        book.undo(alert_id, outcome, actor)
        if isinstance(exc, KeyError):
            raise ReviewError(f"alert '{alert_id}' is not in the match store", 404) from exc
        raise ReviewError(
            f"the decision could not be stored ({type(exc).__name__}: {exc}); the alert is "
            "still pending, try again",
            503,
        ) from exc
    return decided
