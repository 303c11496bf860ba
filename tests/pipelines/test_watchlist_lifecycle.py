"""Watch-list lifecycle on real faces and a real milvus-lite store: expiry, snapshots on
matches, size caps with the expected FPIR, minors, and the audit trail of each act."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from pipelines.catalog import today
from pipelines.config import Settings
from pipelines.home import Home
from pipelines.match import Matcher
from pipelines.store import MATCHES
from pipelines.watchlist import WatchlistError, Watchlists, expected_fpir_at_size

pytestmark = pytest.mark.timeout(240)


def _best(lists: Watchlists, face, list_name="wl", at=None) -> str | None:
    gallery = lists.active_gallery(list_name, at=at)
    if len(gallery) == 0:
        return None
    matcher = Matcher(gallery)
    m = matcher.match(face.embedding[None, :], gallery.embedder, k=1)
    if m.person[0, 0] < 0 or m.margin[0, 0] < 0:
        return None
    return matcher.person_names[m.person[0, 0]]


def test_an_expired_entry_is_not_matched(lists, faces):
    tomorrow = today() + timedelta(days=1)
    lists.add("Obama", [faces["obama"]], "officer", "wl", "wanted", "warrant 7", tomorrow, "supt")
    lists.add("Biden", [faces["biden"]], "officer", "wl", "missing", "family report")
    assert _best(lists, faces["obama2"]) == "Obama"  # a second photo of him matches today
    later = tomorrow + timedelta(days=1)
    assert _best(lists, faces["obama2"], at=later) is None  # expired: not in the gallery
    assert _best(lists, faces["biden"], at=later) == "Biden"
    people = {p["name"]: p for p in lists.people("wl")}
    assert people["Obama"]["expires_on"] == tomorrow.isoformat()
    assert lists._status(people["Obama"], later) == "expired"


def test_entries_carry_their_lawful_record_and_are_audited(lists, faces):
    pid = lists.add(
        "Obama",
        [faces["obama"], faces["obama2"]],
        "officer",
        "wl",
        "suspect",
        "PACE s.64A custody image",
        today() + timedelta(days=30),
        "Supt Jones",
        image_source="custody photo 2026-03",
    )
    p = lists.people("wl")[0]
    assert (p["category"], p["reason"], p["authorised_by"], p["image_source"]) == (
        "suspect",
        "PACE s.64A custody image",
        "Supt Jones",
        "custody photo 2026-03",
    )
    assert p["added_by"] == "officer" and p["created_at"] and p["images"] == 2
    lists.remove(pid, "admin")
    add, rm = list(lists.home.audit.records(action="watchlist"))
    assert add["action"] == "watchlist.add" and add["actor"] == "officer"
    assert [i["sha256"] for i in add["details"]["images"]] == [
        faces["obama"].sha256,
        faces["obama2"].sha256,
    ]
    assert rm["details"]["images"] == [i["sha256"] for i in add["details"]["images"]]
    assert lists.home.audit.verify().ok


def test_the_list_snapshot_is_recorded_on_matches(lists, faces, settings, tmp_path):
    """Archive search's own per-file decision and persistence, without Ray: the match rows
    in Milvus name the snapshot, and the snapshot names exactly who was on the list."""
    from jobs.archive.search import ArchiveSearch, FileResult
    from jobs.archive.search_setup import SearchSetup
    from pipelines.sightings import FaceTable
    from pipelines.video import VideoInfo

    lists.add("Obama", [faces["obama"]], "officer", "wl")
    lists.add("Lin", [faces["lin-manuel-miranda"]], "officer", "wl")
    gallery = lists.active_gallery("wl")
    sid = gallery.snapshot_ids["wl"]
    emb = np.stack([faces["obama2"].embedding] * 3)  # one face seen in three frames
    m = Matcher(gallery).match(emb, gallery.embedder, k=2)
    table = FaceTable(
        t=np.array([0.0, 0.5, 1.0]),
        frame_index=np.array([0, 1, 2]),
        face_index=np.zeros(3, int),
        boxes=np.tile([10.0, 10.0, 90.0, 90.0], (3, 1)),
        passed=np.ones(3, bool),
        quality=np.ones(3, np.float32),
        cand_person=m.person,
        cand_score=m.score,
        cand_margin=m.margin,
    )
    res = FileResult("/archive/cam1.mp4", "f" * 64, VideoInfo.__new__(VideoInfo))
    job = ArchiveSearch(settings, gallery, tmp_path / "out")
    job._decide(res, table, emb, [b""] * 3)
    assert {x.person_name for x in res.matches} == {"Obama"} and len(res.matches) == 3
    setup = SearchSetup(settings, [], gallery, lists.home, "officer", "C1", "test", "list:wl")
    setup._store(res, tmp_path / "out")  # the matches to the store (no completion record)
    rows = lists.home.vectors().query(MATCHES, 'source == "archive"', fields=["snapshot_id"])
    assert len(rows) == 3 and {r["snapshot_id"] for r in rows} == {sid}

    # who was on the list when: the snapshot still says so after the list changes
    lists.add("Biden", [faces["biden"]], "officer", "wl")
    assert lists.active_gallery("wl").snapshot_ids["wl"] != sid
    frozen = lists.snapshot_entries(sid)
    assert sorted(frozen["entry_ids"]) == sorted(gallery.entry_ids) and frozen["version"] == 2


def test_a_frozen_snapshot_gallery_adds_nobody_but_honours_removals(lists, faces):
    a = lists.add("Obama", [faces["obama"]], "officer", "wl")
    lists.add("Lin", [faces["lin-manuel-miranda"]], "officer", "wl")
    sid = lists.snapshot("wl")
    lists.add("Biden", [faces["biden"]], "officer", "wl")
    frozen = lists.active_gallery("wl", snapshot_id=sid)
    assert set(frozen.person_names) == {"Obama", "Lin"} and frozen.snapshot_ids == {"wl": sid}
    lists.remove(a, "admin")
    assert set(lists.active_gallery("wl", snapshot_id=sid).person_names) == {"Lin"}


def test_minors_are_refused_unless_the_list_allows_them(lists, faces):
    with pytest.raises(WatchlistError, match="does not allow minors"):
        lists.add("Child", [faces["alex-lacamoire"]], "officer", "missing", minor=True)
    lists.set_policy("missing", "admin", allow_minors=True)
    lists.add("Child", [faces["alex-lacamoire"]], "officer", "missing", "missing", minor=True)
    assert lists.people("missing")[0]["minor"] == 1
    lists.set_policy("missing", "admin", allow_minors=False)
    with pytest.raises(WatchlistError, match="does not allow minors"):
        lists.add("Child2", [faces["biden"]], "officer", "missing", minor=True)
    policy = [r["details"] for r in lists.home.audit.records(action="watchlist.policy")]
    assert [p["after"] for p in policy] == [{"allow_minors": 1}, {"allow_minors": 0}]


def test_the_size_cap_refuses_with_the_expected_fpir(lists, faces):
    lists.set_policy("wl", "admin", size_cap=2)
    calibration = {"curve": [[0.90, 0.02], [0.93, 0.004], [0.96, 0.001]], "list_size": 1}
    lists.catalog.set_threshold("wl", 0.93, "calibrated", calibration)
    warnings: list[str] = []
    lists.add("Obama", [faces["obama"]], "officer", "wl", warn=warnings.append)
    assert warnings == []  # at its calibrated size
    lists.add("Biden", [faces["biden"]], "officer", "wl", warn=warnings.append)
    assert len(warnings) == 1 and "expected FPIR at 2 people: 0.798%" in warnings[0]
    with pytest.raises(WatchlistError, match=r"size cap of 2 .*expected FPIR at 3 people: 1\.19"):
        lists.add("Lin", [faces["lin-manuel-miranda"]], "officer", "wl")
    assert len(lists.people("wl")) == 2  # nothing half-enrolled
    assert lists.home.media.files("watchlist") and len(lists.home.media.files("watchlist")) == 2


@pytest.mark.parametrize(
    ("size", "expected"),
    [(1, 0.006), (10, 1 - 0.994**10), (1000, 1 - 0.994**1000)],
)
def test_expected_fpir_grows_with_list_size(size, expected):
    cal = {"curve": [[0.9, 0.01], [0.95, 0.002]], "list_size": 1}
    assert expected_fpir_at_size(cal, 0.925, size) == pytest.approx(expected)
    assert expected_fpir_at_size({"curve": cal["curve"]}, 0.925, size) == pytest.approx(0.006)
    assert expected_fpir_at_size(None, 0.925, size) is None


def test_the_default_cap_comes_from_config(engine, tmp_path, faces):
    settings = Settings(home=tmp_path / "h", governance={"max_list_size": 1})
    with Home.open(settings, engine.info) as home:
        lists = Watchlists(home, engine.info, 0.93)
        lists.add("Obama", [faces["obama"]], "officer", "wl")
        with pytest.raises(WatchlistError, match="size cap of 1"):
            lists.add("Biden", [faces["biden"]], "officer", "wl")


def test_an_enrolment_the_store_refuses_leaves_no_photo_behind(lists, faces, monkeypatch):
    """The store write fails (a Milvus server gone mid-enrolment; a named fake failure on the
    real store): nobody is enrolled and the photos saved a moment before are removed."""
    media = lists.home.media.root / "watchlist"
    before = sorted(media.glob("*")) if media.exists() else []

    def store_gone(*_args, **_kwargs):
        raise ConnectionError("fake: the Milvus server went away")

    monkeypatch.setattr(lists.home.vectors(), "upsert", store_gone)
    with pytest.raises(ConnectionError):
        lists.add("Obama", [faces["obama"]], "officer", "wl", "wanted", "warrant 8")
    after = sorted(media.glob("*")) if media.exists() else []
    assert after == before
    assert lists.people("wl") == []
