"""The durable webhook outbox: every delivery of a live alert is a row in the home's catalog
(``webhook_outbox``, migration 5) until its receiver acknowledged it.

An alert's deliveries are written here in the same SQLite transaction as the alert's row
in the review book (``add_rows``), before it is announced, so no crash can keep the alert
and lose its webhooks; ``WebhookDispatcher`` (serve/webhooks.py) sends them from here. A receiver
that is down, or a `facewatch serve` that stops or dies, loses nothing: the next server
finds the pending rows and sends them, with the same idempotency key (the alert id) on
every attempt, so a receiver that saw an attempt whose answer was lost can drop the
repeat. Rows leave in order per camera and hook: a camera's next alert waits until the
one before it was delivered or set aside (refused by the receiver, or given up after
the hook's limits), so a receiver never sees a camera's alerts out of order.

The catalog is SQLite in WAL mode; one connection, used under a lock from the hub's
threads. Times are ISO-8601 UTC text, like the other tables.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pipelines.catalog import Catalog

KEEP_DONE_DAYS = 7  # delivered, refused and failed rows are kept this long, for the record


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def add_rows(
    db: sqlite3.Connection, hook_urls: list[str], key: str, camera_id: str, event: dict[str, Any]
) -> int:
    """``Outbox.add`` on a connection in the caller's transaction (the catalog's file): the
    hub writes an alert and its deliveries in one transaction (ReviewBook.add's ``then``)."""
    now = _iso(_now())
    body = json.dumps(event, separators=(",", ":"))
    added = 0
    for url in hook_urls:
        cur = db.execute(
            "INSERT OR IGNORE INTO webhook_outbox(hook_url, idempotency_key, camera_id, "
            "body_json, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?)",
            (url, key, camera_id, body, now, now),
        )
        added += cur.rowcount
    return added


class Outbox:
    def __init__(self, catalog_path: Path):
        self.catalog = Catalog(catalog_path)  # applies the migrations if needed
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self.catalog.close()

    def add(self, hook_urls: list[str], key: str, camera_id: str, event: dict[str, Any]) -> int:
        """One pending delivery per hook; a key already there for a hook is kept once.
        Returns how many rows were added."""
        with self._lock, self.catalog.transaction() as db:
            return add_rows(db, hook_urls, key, camera_id, event)

    def heads(self, hook_url: str) -> list[dict[str, Any]]:
        """The oldest pending delivery of each camera for this hook (the only ones that may
        go now: order per camera), with ``due_in_s`` and ``age_s``."""
        with self._lock:
            rows = self.catalog.rows(
                "SELECT * FROM webhook_outbox WHERE seq IN (SELECT min(seq) FROM webhook_outbox "
                "WHERE hook_url = ? AND state = 'pending' GROUP BY camera_id) ORDER BY seq",
                hook_url,
            )
        now = _now()
        for r in rows:
            r["due_in_s"] = (datetime.fromisoformat(r["next_attempt_at"]) - now).total_seconds()
            r["age_s"] = (now - datetime.fromisoformat(r["created_at"])).total_seconds()
        return rows

    def retry_later(self, seq: int, attempts: int, delay_s: float, cause: str) -> None:
        due = _iso(_now() + timedelta(seconds=delay_s))
        self._update(
            "UPDATE webhook_outbox SET attempts = ?, next_attempt_at = ?, last_error = ? "
            "WHERE seq = ?",
            attempts,
            due,
            cause,
            seq,
        )

    def finish(self, seq: int, attempts: int, state: str, cause: str = "") -> None:
        """``delivered``, or set aside: ``refused`` (the receiver said no) or ``failed``."""
        self._update(
            "UPDATE webhook_outbox SET attempts = ?, state = ?, last_error = ?, done_at = ? "
            "WHERE seq = ?",
            attempts,
            state,
            cause,
            _iso(_now()),
            seq,
        )

    def _update(self, sql: str, *args: Any) -> None:
        with self._lock:
            self.catalog.db.execute(sql, args)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self.catalog.rows(
                "SELECT state, count(*) AS n FROM webhook_outbox GROUP BY state"
            )
        return {r["state"]: r["n"] for r in rows}

    def prune(self, days: int = KEEP_DONE_DAYS) -> int:
        """Drop finished rows older than ``days``; pending ones are never dropped."""
        cutoff = _iso(_now() - timedelta(days=days))
        with self._lock:
            cur = self.catalog.db.execute(
                "DELETE FROM webhook_outbox WHERE state != 'pending' AND done_at < ?", (cutoff,)
            )
        return cur.rowcount
