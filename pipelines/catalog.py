"""The catalog: facewatch's metadata in SQLite, beside the vector store in the data home.

Watch lists, people, enrolment photos and list snapshots live here; their embeddings live
in Milvus under the same entry ids. SQLite may be opened by several processes at once
(WAL mode), which milvus-lite may not, so this is the control plane that the CLI and a
running server share.

Schema changes are numbered migrations applied in order (``PRAGMA user_version``).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

MIGRATIONS: list[str] = [
    """
    CREATE TABLE lists (
        name TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        threshold REAL,
        threshold_source TEXT NOT NULL DEFAULT 'default',
        calibration_json TEXT,
        size_cap INTEGER,
        allow_minors INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE persons (
        person_id TEXT PRIMARY KEY,
        list_name TEXT NOT NULL REFERENCES lists(name),
        name TEXT NOT NULL,
        category TEXT NOT NULL,
        reason TEXT NOT NULL,
        authorised_by TEXT,
        added_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_on TEXT,
        minor INTEGER NOT NULL DEFAULT 0,
        removed_at TEXT,
        removed_by TEXT
    );
    CREATE INDEX persons_list ON persons(list_name);
    CREATE TABLE entries (
        entry_id TEXT PRIMARY KEY,
        person_id TEXT NOT NULL REFERENCES persons(person_id),
        image_sha256 TEXT NOT NULL,
        source_name TEXT NOT NULL,
        thumbnail TEXT NOT NULL,
        quality REAL NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX entries_person ON entries(person_id);
    CREATE TABLE snapshots (
        snapshot_id TEXT PRIMARY KEY,
        list_name TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        entry_ids_json TEXT NOT NULL
    );
    """,
    # 2: where each person's photos came from (custody image, CCTV still, ...), for the record
    """
    ALTER TABLE persons ADD COLUMN image_source TEXT;
    """,
    # 3: how each photo was embedded ('single': one pass; 'tta6': 3 scales x mirror), which
    # gates it passed only just; investigators' decisions on sightings and candidates
    """
    ALTER TABLE entries ADD COLUMN embedding_mode TEXT NOT NULL DEFAULT 'single';
    ALTER TABLE entries ADD COLUMN borderline TEXT NOT NULL DEFAULT '';
    CREATE TABLE sighting_reviews (
        sighting_id TEXT PRIMARY KEY,
        case_ref TEXT NOT NULL,
        out_dir TEXT NOT NULL,
        person_id TEXT NOT NULL,
        person_name TEXT NOT NULL,
        tier TEXT NOT NULL,
        source_path TEXT NOT NULL,
        start_s REAL NOT NULL,
        end_s REAL NOT NULL,
        best_score REAL NOT NULL,
        decision TEXT NOT NULL CHECK (decision IN ('confirmed', 'rejected', 'unsure')),
        note TEXT NOT NULL DEFAULT '',
        decided_by TEXT NOT NULL,
        decided_at TEXT NOT NULL
    );
    CREATE INDEX sighting_reviews_case ON sighting_reviews(case_ref);
    """,
    # 6: investigators' cases (pipelines.cases): who opened each, why, who authorised it,
    # which other investigators an admin let in, and the searches started from the browser
    """
    CREATE TABLE cases (
        case_ref TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        authorised_by TEXT NOT NULL,
        owner TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE case_grants (
        case_ref TEXT NOT NULL REFERENCES cases(case_ref),
        grantee TEXT NOT NULL,
        granted_by TEXT NOT NULL,
        granted_at TEXT NOT NULL,
        PRIMARY KEY (case_ref, grantee)
    );
    CREATE TABLE case_searches (
        search_id TEXT PRIMARY KEY,
        case_ref TEXT NOT NULL REFERENCES cases(case_ref),
        started_by TEXT NOT NULL,
        started_at TEXT NOT NULL,
        pid INTEGER NOT NULL,
        out_dir TEXT NOT NULL,
        spec_json TEXT NOT NULL,
        state TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        ended_at TEXT
    );
    CREATE INDEX case_searches_case ON case_searches(case_ref);
    """,
]


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def today() -> date:
    return datetime.now(timezone.utc).date()


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


class Catalog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    @classmethod
    def open(cls, home: Path) -> Catalog:
        home = Path(home)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(home / "catalog.sqlite")

    def close(self) -> None:
        self.db.close()

    def _migrate(self) -> None:
        with self.transaction():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            for i, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {i}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(sql, args).fetchall()]

    def row(self, sql: str, *args: Any) -> dict[str, Any] | None:
        r = self.db.execute(sql, args).fetchone()
        return dict(r) if r is not None else None

    # -- lists ----------------------------------------------------------------------------
    def get_list(self, name: str) -> dict[str, Any] | None:
        row = self.row("SELECT * FROM lists WHERE name = ?", name)
        if row is not None and row["calibration_json"]:
            row["calibration"] = json.loads(row["calibration_json"])
        return row

    def ensure_list(self, name: str, actor: str) -> dict[str, Any]:
        self.db.execute(
            "INSERT OR IGNORE INTO lists(name, created_at, created_by) VALUES (?, ?, ?)",
            (name, utcnow(), actor),
        )
        return self.get_list(name)  # type: ignore[return-value]

    def lists(self) -> list[dict[str, Any]]:
        return [self.get_list(r["name"]) for r in self.rows("SELECT name FROM lists ORDER BY name")]

    def set_threshold(
        self, name: str, threshold: float | None, source: str, calibration: dict | None = None
    ) -> None:
        self.db.execute(
            "UPDATE lists SET threshold = ?, threshold_source = ?, calibration_json = ? "
            "WHERE name = ?",
            (threshold, source, json.dumps(calibration) if calibration else None, name),
        )

    def update_list(self, name: str, **fields: Any) -> None:
        allowed = {"size_cap", "allow_minors"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot set {sorted(bad)} on a list")
        for key, value in fields.items():
            self.db.execute(f"UPDATE lists SET {key} = ? WHERE name = ?", (value, name))

    def bump_version(self, name: str) -> None:
        self.db.execute("UPDATE lists SET version = version + 1 WHERE name = ?", (name,))
