"""A catalog made by the release before the schema had one owner (schema version 3, with
the live tables made by their stores' constructors and Unix REAL times) opens under
today's code with nothing lost: every row of every table, key fields compared, and the
REAL times now the catalog's ISO text for the same moments. The fixture was made by
tests/fixtures/catalog_v3/make_catalog.py at that release."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from pipelines.catalog import MIGRATIONS, Catalog, unix_time
from pipelines.deployments import Deployments
from pipelines.live.cameras import CameraRegistry
from pipelines.live.review_book import ReviewBook
from pipelines.schemas import ReviewedAlert

pytestmark = pytest.mark.timeout(60)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "catalog_v3" / "catalog.sqlite"
# table -> (key column, columns compared as they were, REAL time columns)
TABLES = {
    "lists": ("name", ["threshold", "threshold_source", "calibration_json", "version"], []),
    "persons": ("person_id", ["list_name", "name", "category", "image_source"], []),
    "entries": ("entry_id", ["person_id", "image_sha256", "embedding_mode", "quality"], []),
    "snapshots": ("snapshot_id", ["list_name", "version", "entry_ids_json"], []),
    "sighting_reviews": ("sighting_id", ["case_ref", "decision", "decided_at"], []),
    "live_alerts": (
        "alert_id",
        ["camera_id", "person_id", "status", "decided_by", "note", "record"],
        ["alerted_at", "decided_at"],
    ),
    "live_cameras": ("id", ["spec", "created_by"], ["created_at"]),
    "deployments": (
        "deployment_id",
        ["purpose", "snapshot_id", "cameras_json", "ended_by", "summary_json"],
        ["started_at", "ended_at"],
    ),
    "live_scanned": ("rowid", ["camera_id", "faces"], ["at"]),
}


def _rows(db: sqlite3.Connection, table: str, key: str) -> dict:
    db.row_factory = sqlite3.Row
    return {r[key]: dict(r) for r in db.execute(f"SELECT rowid, * FROM {table}")}


@pytest.fixture
def upgraded(tmp_path):
    """The fixture's rows as version 3 stored them, and the copy opened by today's code."""
    path = tmp_path / "catalog.sqlite"
    shutil.copyfile(FIXTURE, path)
    old = sqlite3.connect(path)
    assert old.execute("PRAGMA user_version").fetchone()[0] == 3
    before = {t: _rows(old, t, key) for t, (key, _, _) in TABLES.items()}
    old.close()
    catalog = Catalog(path)
    yield before, catalog
    catalog.close()


def test_upgrade_keeps_every_row_and_turns_times_into_iso_text(upgraded):
    before, catalog = upgraded
    assert catalog.row("PRAGMA user_version")["user_version"] == len(MIGRATIONS)
    for table, (key, same, times) in TABLES.items():
        after = {r[key]: r for r in catalog.rows(f"SELECT rowid, * FROM {table}")}
        assert before[table], f"the fixture has no {table} rows: it tests nothing there"
        assert after.keys() == before[table].keys(), table
        for k, old in before[table].items():
            assert {c: after[k][c] for c in same} == {c: old[c] for c in same}, (table, k)
            for c in times:
                if old[c] is None:
                    assert after[k][c] is None, (table, k, c)
                else:
                    assert isinstance(after[k][c], str), (table, k, c)
                    assert unix_time(after[k][c]) == pytest.approx(old[c], abs=0.001)


def test_the_stores_read_the_upgraded_rows(upgraded):
    """The review book, camera registry and deployments work on the upgraded file: the
    report's numbers are those the old release computed when the deployment ended."""
    _, catalog = upgraded
    alerts = ReviewBook(catalog).list("all", None, 10)
    assert sorted(a["status"] for a in alerts) == ["confirmed", "pending"]
    TypeAdapter(list[ReviewedAlert]).validate_python(alerts)  # as GET /v1/alerts answers
    assert [c.id for c in CameraRegistry(catalog).all()] == ["gate-a"]
    (dep,) = Deployments(catalog, audit=None).all()  # reading needs no audit log
    assert dep["started_at"] == "2026-09-21T14:13:20.000+00:00"
    now = Deployments(catalog, audit=None).summarise(dep)
    at_end = dep["summary_at_end"]
    assert now["totals"] == at_end["totals"]
    assert now["totals"]["faces_scanned"] == 200 and now["totals"]["alerts"] == 2


def test_a_new_catalog_has_the_live_tables_empty(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite")
    for table in ("live_alerts", "live_cameras", "deployments", "live_scanned"):
        assert catalog.rows(f"SELECT * FROM {table}") == []
    catalog.close()
