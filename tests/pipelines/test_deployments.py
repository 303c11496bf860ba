"""Deployment records after a scripted live run: alerts stored and adjudicated through the
live side's own classes (serve.alerts.AlertRecorder, pipelines.live.review_book.ReviewBook, without
Serve), a real milvus-lite store and real face embeddings; then the report's numbers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import RetentionConfig, Settings
from pipelines.deployments import DeploymentError, Deployments
from pipelines.home import Home
from pipelines.retention import run_retention
from pipelines.store import MATCHES
from pipelines.watchlist import Watchlists

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def live(engine, tmp_path, faces):
    """A home with a list of two people, and the live side's recorder and review book."""
    from pipelines.live.cameras import CameraRegistry, CameraSpec
    from pipelines.live.review_book import ReviewBook
    from serve.alerts import AlertRecorder

    home = Home.open(Settings(home=tmp_path / "home"), engine.info)
    lists = Watchlists(home, engine.info, engine.embedder.default_threshold)
    lists.add("Obama", [faces["obama"]], "officer", "events", "wanted", "warrant")
    lists.add("Biden", [faces["biden"]], "officer", "events", "missing", "family")
    registry = CameraRegistry(home.catalog)  # as the hub
    registry.add(CameraSpec(id="gate-a", url="push", list="events", threshold=0.95), "admin")
    reviews = ReviewBook(home.catalog)
    recorder = AlertRecorder(home.vectors(), home.media, reviews)
    yield home, lists, recorder, reviews
    home.close()


def _alert(lists, recorder, faces, camera_id, n, person, alerted_at=None, snapshot=None):
    """Store one alert the way the hub's sink does (alert_record, then record)."""
    from pipelines.live.alert_record import alert_record
    from pipelines.live.analyser import AlertDraft, Face
    from pipelines.live.cameras import CameraSpec

    who = {p["name"]: p for p in lists.people("events")}[person]
    face = faces["obama2" if person == "Obama" else "biden"]
    f = Face(
        t=float(n),
        seq=n,
        received_at=time.time(),
        face_index=0,
        box=np.array([10.0, 20.0, 90.0, 110.0]),
        quality=1.0,
        embedding=face.embedding,
        crop=face.thumbnail,
    )
    draft = AlertDraft(
        alert_id=f"a_{camera_id}_{n}",
        camera_id=camera_id,
        track_id=n,
        person_id=who["person_id"],
        person_name=person,
        list_name="events",
        photo="",
        snapshot_id=snapshot or lists.snapshot("events"),
        score=0.97,
        margin=0.02,
        threshold=0.95,
        face=f,
        face_score=0.97,
        trigger_seq=n,
        trigger_received_at=f.received_at,
        n_faces=3,
    )
    record = alert_record(draft, CameraSpec(id=camera_id, url="push"))
    if alerted_at is not None:
        record["alerted_at"] = alerted_at
    recorder.record(draft, record)
    return draft.alert_id


def _adjudicate(recorder, reviews, alert_id, outcome):
    """The hub's adjudicate(), less its audit line and SSE push."""
    reviews.check_pending(alert_id)
    recorder.set_status(alert_id, outcome)
    reviews.decide(alert_id, outcome, "", "reviewer")


def _assert_summary_at_end(summary: dict, lists, dep: dict) -> None:
    """The record at the end of the scripted run: 7 alerts, 3 confirmed, 2 rejected."""
    totals = summary["totals"]
    assert totals["alerts"] == 7 and totals["faces_scanned"] == 1250
    assert (totals["confirmed"], totals["rejected"], totals["pending"]) == (3, 2, 2)
    assert totals["precision"] == pytest.approx(0.6)
    assert totals["alerts_not_on_frozen_snapshot"] == 0
    a, b = (summary["per_camera"][c] for c in ("gate-a", "gate-b"))
    keys = ("alerts", "confirmed", "rejected", "pending", "faces_scanned")
    assert [a[k] for k in keys] == [5, 3, 1, 1, 1000] and a["precision"] == 0.75
    assert [b[k] for k in keys] == [2, 0, 1, 1, 250] and b["precision"] == 0.0
    assert a["threshold"] == 0.95 and b["threshold"] == pytest.approx(lists.default_threshold)
    assert a["list_version"] == dep["list_version"] == 2 and a["snapshot_id"] == dep["snapshot_id"]
    assert "threshold_at_end" not in a  # the camera's own override did not change
    assert (b["threshold_at_end"], b["threshold_at_end_how"]) == (0.96, "calibrated")


def _assert_report(home, deps, dep: dict, out: Path, purpose: str, where: str) -> None:
    """The report written after the end (later decisions and retention included), its
    export audited, and the run's alerts in Milvus under the frozen snapshot."""
    json_path, html_path = deps.write_report(dep["deployment_id"], out, "analyst")
    rep = json.loads(json_path.read_text())
    counts = [rep["totals"][k] for k in ("alerts", "confirmed", "rejected", "pending")]
    assert counts == [7, 4, 2, 1]
    assert rep["totals"]["alerts_deleted_since_end"] == 2
    assert rep["summary_at_end"]["totals"]["pending"] == 2
    assert rep["purpose"] == purpose and rep["snapshot_id"] == dep["snapshot_id"]
    page = html_path.read_text()
    assert where in page and "66.7%" in page and "gate-b" in page
    actions = [r["action"] for r in home.audit.records(action="deployment")]
    assert actions == ["deployment.start", "deployment.end"]
    assert [r["details"]["files"] for r in home.audit.records(action="export")] == [
        [str(json_path.resolve()), str(html_path.resolve())]
    ]
    # the alerts really are in Milvus with the frozen snapshot
    gate_a = 'source == "live" and source_id == "gate-a"'
    rows = home.vectors().query(MATCHES, gate_a, fields=["snapshot_id", "status"])
    # the 5 of the run less 1 rejected (deleted), and the one before the start
    assert len(rows) == 5 and {r["snapshot_id"] for r in rows} == {dep["snapshot_id"]}
    assert [r["status"] for r in rows] == ["confirmed"] * 5


def test_deployment_report_counts_a_scripted_live_run(live, faces, tmp_path):
    home, lists, recorder, reviews = live
    deps = Deployments(home.catalog, home.audit)
    before = _alert(lists, recorder, faces, "gate-a", 99, "Obama", alerted_at=time.time() - 60)
    purpose, where = "Operation X: wanted offenders", "Cardiff, Queen St"
    dep = deps.start(lists, purpose, where, ["gate-a", "gate-b"], "events", "supt")
    sid = dep["snapshot_id"]
    assert dep["cameras"]["gate-a"]["threshold"] == 0.95  # the camera's override
    assert dep["cameras"]["gate-a"]["threshold_how"] == "camera override"
    assert dep["cameras"]["gate-b"]["configured"] is False
    assert deps.active_for_camera("gate-a")["deployment_id"] == dep["deployment_id"]
    with pytest.raises(DeploymentError, match="already in a running deployment"):
        deps.start(lists, "again", "there", ["gate-b"], "events", "supt")

    # the run: 5 alerts on gate-a, 2 on gate-b, 1 on a camera outside the deployment
    ids_a = [_alert(lists, recorder, faces, "gate-a", n, "Obama", None, sid) for n in range(5)]
    ids_b = [_alert(lists, recorder, faces, "gate-b", n, "Biden", None, sid) for n in range(2)]
    _alert(lists, recorder, faces, "elsewhere", 30, "Obama")
    deps.record_scanned("gate-a", 700)
    deps.record_scanned("gate-a", 300)
    deps.record_scanned("gate-b", 250)
    deps.record_scanned("elsewhere", 999)
    outcomes = ["confirmed", "confirmed", "confirmed", "rejected"]
    for alert_id, outcome in zip(ids_a[:4], outcomes, strict=True):
        _adjudicate(recorder, reviews, alert_id, outcome)
    _adjudicate(recorder, reviews, ids_b[0], "rejected")
    # an alert on gate-a a minute before the start, confirmed during the run: it is in the
    # same book (6 on gate-a) but outside the deployment's window, so gate-a counts 5 alerts
    # and 3 confirmed, not 6 and 4
    _adjudicate(recorder, reviews, before, "confirmed")
    assert len(reviews.list("all", "gate-a", 99)) == 6

    lists.catalog.set_threshold("events", 0.96, "calibrated")  # changed during the run
    ended = deps.end(dep["deployment_id"], "supt", lists=lists)
    _assert_summary_at_end(ended["summary_at_end"], lists, dep)
    with pytest.raises(DeploymentError, match="already ended"):
        deps.end(dep["deployment_id"], "supt")
    assert deps.active_for_camera("gate-a") is None

    # a pending alert decided after the end shows in the report, not in the record at end;
    # rejected alerts deleted by retention since still count as they stood
    _adjudicate(recorder, reviews, ids_a[4], "confirmed")
    gone = run_retention(lists, RetentionConfig(), "admin", now=time.time() + 40 * 86400)
    assert gone.deleted["rejected_alerts"] == 2 and len(reviews.list("all", None, 99)) == 7
    _assert_report(home, deps, dep, tmp_path / "reports", purpose, where)


def test_alerts_off_the_frozen_snapshot_are_flagged(live, faces):
    home, lists, recorder, _ = live
    deps = Deployments(home.catalog, home.audit)
    dep = deps.start(lists, "p", "here", ["gate-a"], "events", "supt")
    _alert(lists, recorder, faces, "gate-a", 1, "Obama", None, dep["snapshot_id"])
    _alert(lists, recorder, faces, "gate-a", 2, "Obama", None, "s_0123456789abcdef")
    totals = deps.end(dep["deployment_id"], "supt")["summary_at_end"]["totals"]
    assert totals["alerts"] == 2 and totals["alerts_not_on_frozen_snapshot"] == 1


def test_report_html_escapes_what_users_typed(live):
    home, lists, _, _ = live
    deps = Deployments(home.catalog, home.audit)
    dep = deps.start(lists, "<script>alert(1)</script>", "A & B", ["cam1"], "events", "supt")
    page = deps.write_report(dep["deployment_id"], home.path.parent / "r", "x")[1].read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "A &amp; B" in page


@pytest.mark.parametrize(
    ("purpose", "location", "cameras", "list_name", "message"),
    [
        ("", "here", ["c1"], "events", "purpose"),
        ("p", " ", ["c1"], "events", "location"),
        ("p", "here", [], "events", "at least one camera"),
        ("p", "here", ["bad id"], "events", "camera ids"),
        ("p", "here", ["c1", "c1"], "events", "named twice"),
        ("p", "here", ["c1"], "nosuch", "no such list"),
    ],
)
def test_start_refuses_bad_input(live, purpose, location, cameras, list_name, message):
    home, lists, _, _ = live
    deps = Deployments(home.catalog, home.audit)
    with pytest.raises(DeploymentError, match=message):
        deps.start(lists, purpose, location, cameras, list_name, "supt")
    assert deps.all() == []


@pytest.mark.timeout(30)
def test_configured_cameras_read_the_cameras_file_through_the_camera_spec(tmp_path, caplog):
    """The deployment record's per-camera terms come from the same ``CameraSpec`` the live
    server runs: the file's ``list`` alias and threshold, and nothing from a file the
    server would refuse."""
    from pipelines.catalog import Catalog
    from pipelines.deployments import configured_cameras

    catalog = Catalog(tmp_path / "catalog.sqlite")
    good = tmp_path / "cameras.yaml"
    good.write_text("cameras:\n  - {id: gate-b, url: push, list: events, threshold: 0.9}\n")
    assert configured_cameras(catalog, good) == {
        "gate-b": {"list_name": "events", "threshold": 0.9}
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras:\n  - {id: gate-b, url: push, colour: red}\n")
    assert configured_cameras(catalog, bad) == {}
    assert "unusable" in caplog.text
    assert configured_cameras(catalog, None) == {}
