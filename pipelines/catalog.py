"""The catalog: facewatch's metadata in SQLite, beside the vector store in the data home.

Watch lists, people, enrolment photos and list snapshots live here; their embeddings live
in Milvus under the same entry ids. SQLite may be opened by several processes at once
(WAL mode), which milvus-lite may not, so this is the control plane that the CLI and a
running server share.

Every table in this file is created here, by numbered migrations applied in order
(``PRAGMA user_version``); the stores that keep their rows here (the review book, the camera
registry, deployments) take the ``Catalog`` and never create tables of their own. A new
table is a new migration appended to ``MIGRATIONS``. Times are ISO-8601 UTC text
(``utcnow``, ``iso_utc``): text in that one form sorts in time order, so SQL compares it.

One connection policy: ``connect`` (WAL, a 30 s busy timeout, autocommit, foreign keys,
rows by name). The catalog's own connection is shared; a store called from several
threads opens a short ``session`` of its own with the same policy.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, cast

from pipelines.schemas import CalibrationRecord, ListRow

# A Unix time (REAL seconds) in SQL as ``iso_utc`` writes it; NULL stays NULL.
_ISO = "(strftime('%Y-%m-%dT%H:%M:%f', {0}, 'unixepoch') || '+00:00')"

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
    # 4: the live side's tables, until now made by their stores' constructors with Unix REAL
    # times: the review book (live_alerts), the camera registry (live_cameras), deployments
    # and their scanned-faces counter. A catalog that has them keeps every row, its times
    # turned into ISO text; one that has not gets them empty.
    f"""
    CREATE TABLE IF NOT EXISTS live_alerts (
        alert_id TEXT PRIMARY KEY, camera_id TEXT NOT NULL, list_name TEXT NOT NULL,
        person_id TEXT NOT NULL, alerted_at REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending', decided_by TEXT, decided_at REAL, note TEXT,
        record TEXT NOT NULL
    );
    DROP INDEX IF EXISTS live_alerts_status;
    ALTER TABLE live_alerts RENAME TO live_alerts_v3;
    CREATE TABLE live_alerts (
        alert_id TEXT PRIMARY KEY,
        camera_id TEXT NOT NULL,
        list_name TEXT NOT NULL,
        person_id TEXT NOT NULL,
        alerted_at TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'confirmed', 'rejected')),
        decided_by TEXT,
        decided_at TEXT,
        note TEXT,
        record TEXT NOT NULL
    );
    INSERT INTO live_alerts SELECT alert_id, camera_id, list_name, person_id,
        {_ISO.format("alerted_at")}, status, decided_by, {_ISO.format("decided_at")}, note,
        record FROM live_alerts_v3;
    DROP TABLE live_alerts_v3;
    CREATE INDEX live_alerts_status ON live_alerts(status, alerted_at);
    CREATE INDEX live_alerts_camera ON live_alerts(camera_id, alerted_at);

    CREATE TABLE IF NOT EXISTS live_cameras (
        id TEXT PRIMARY KEY, spec TEXT NOT NULL, created_by TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    ALTER TABLE live_cameras RENAME TO live_cameras_v3;
    CREATE TABLE live_cameras (
        id TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    INSERT INTO live_cameras SELECT id, spec, created_by, {_ISO.format("created_at")}
        FROM live_cameras_v3;
    DROP TABLE live_cameras_v3;

    CREATE TABLE IF NOT EXISTS deployments (
        deployment_id TEXT PRIMARY KEY, purpose TEXT NOT NULL, location TEXT NOT NULL,
        list_name TEXT NOT NULL, snapshot_id TEXT NOT NULL, list_version INTEGER NOT NULL,
        cameras_json TEXT NOT NULL, started_at REAL NOT NULL, started_by TEXT NOT NULL,
        ended_at REAL, ended_by TEXT, summary_json TEXT
    );
    ALTER TABLE deployments RENAME TO deployments_v3;
    CREATE TABLE deployments (
        deployment_id TEXT PRIMARY KEY,
        purpose TEXT NOT NULL,
        location TEXT NOT NULL,
        list_name TEXT NOT NULL,
        snapshot_id TEXT NOT NULL,
        list_version INTEGER NOT NULL,
        cameras_json TEXT NOT NULL,
        started_at TEXT NOT NULL,
        started_by TEXT NOT NULL,
        ended_at TEXT,
        ended_by TEXT,
        summary_json TEXT
    );
    INSERT INTO deployments SELECT deployment_id, purpose, location, list_name, snapshot_id,
        list_version, cameras_json, {_ISO.format("started_at")}, started_by,
        {_ISO.format("ended_at")}, ended_by, summary_json FROM deployments_v3;
    DROP TABLE deployments_v3;

    CREATE TABLE IF NOT EXISTS live_scanned (
        camera_id TEXT NOT NULL, at REAL NOT NULL, faces INTEGER NOT NULL
    );
    DROP INDEX IF EXISTS live_scanned_camera;
    ALTER TABLE live_scanned RENAME TO live_scanned_v3;
    CREATE TABLE live_scanned (
        camera_id TEXT NOT NULL,
        at TEXT NOT NULL,
        faces INTEGER NOT NULL
    );
    INSERT INTO live_scanned SELECT camera_id, {_ISO.format("at")}, faces FROM live_scanned_v3;
    DROP TABLE live_scanned_v3;
    CREATE INDEX live_scanned_camera ON live_scanned(camera_id, at);
    """,
    # 5: nothing lost when parts die (issue 16). A search's per-file completion record,
    # written after that file's matches are stored, so a rerun of the same search skips it;
    # and the durable webhook outbox: a delivery is kept here until its receiver acknowledged
    # it, so it survives a restart of `facewatch serve`.
    """
    CREATE TABLE search_files (
        search_key TEXT NOT NULL,
        file_id TEXT NOT NULL,
        path TEXT NOT NULL,
        completed_at TEXT NOT NULL,
        result_json TEXT NOT NULL,
        PRIMARY KEY (search_key, file_id)
    );
    CREATE TABLE webhook_outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        hook_url TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        camera_id TEXT NOT NULL,
        body_json TEXT NOT NULL,
        created_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'delivered', 'refused', 'failed')),
        done_at TEXT,
        UNIQUE (hook_url, idempotency_key)
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox(state, hook_url, camera_id, seq);
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
    # 7: the face index's track map (pipelines.track_map): the face ids of each indexed
    # track, so an indexed search reads a candidate track's faces back by id
    """
    CREATE TABLE index_tracks (
        source_id TEXT NOT NULL,
        track_id INTEGER NOT NULL,
        face_ids TEXT NOT NULL,
        n_faces INTEGER NOT NULL,
        indexed_at INTEGER NOT NULL,
        PRIMARY KEY (source_id, track_id)
    );
    CREATE INDEX index_tracks_age ON index_tracks(indexed_at);
    """,
]


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def iso_utc(t: float) -> str:
    """Unix seconds as the catalog stores a moment: ISO-8601 UTC text to the millisecond."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def unix_time(text: str) -> float:
    """The Unix seconds of a time the catalog stored (``iso_utc`` or ``utcnow``)."""
    return datetime.fromisoformat(text).timestamp()


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the catalog file under its one policy: WAL (readers and one writer
    across processes), a 30 s busy timeout, autocommit (``BEGIN`` only where asked),
    foreign keys on, rows by column name."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    return db


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def today() -> date:
    return datetime.now(timezone.utc).date()


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


class Catalog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = connect(self.path)
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

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A transaction on the catalog's shared connection."""
        return _transaction(self.db)

    @contextmanager
    def session(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection of its own, closed after; ``write``: in one transaction. For a store
        whose calls come from several threads (the live hub's), which must not share one."""
        db = connect(self.path)
        try:
            if write:
                with _transaction(db):
                    yield db
            else:
                yield db
        finally:
            db.close()

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(sql, args).fetchall()]

    def row(self, sql: str, *args: Any) -> dict[str, Any] | None:
        r = self.db.execute(sql, args).fetchone()
        return dict(r) if r is not None else None

    # -- lists ----------------------------------------------------------------------------
    def get_list(self, name: str) -> ListRow | None:
        row = self.row("SELECT * FROM lists WHERE name = ?", name)
        if row is not None and row["calibration_json"]:
            row["calibration"] = json.loads(row["calibration_json"])
        return cast(ListRow | None, row)

    def ensure_list(self, name: str, actor: str) -> ListRow:
        self.db.execute(
            "INSERT OR IGNORE INTO lists(name, created_at, created_by) VALUES (?, ?, ?)",
            (name, utcnow(), actor),
        )
        row = self.get_list(name)
        assert row is not None  # inserted just now, or there already
        return row

    def lists(self) -> list[ListRow]:
        names = [r["name"] for r in self.rows("SELECT name FROM lists ORDER BY name")]
        return [row for row in map(self.get_list, names) if row is not None]

    def set_threshold(
        self,
        name: str,
        threshold: float | None,
        source: str,
        calibration: CalibrationRecord | None = None,
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
