"""Retention deletes what is due and keeps the rest, in Milvus and on disk (real
milvus-lite, real face embeddings, live alerts stored through serve.alerts' recorder)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from pipelines.catalog import today
from pipelines.config import RetentionConfig
from pipelines.images import encode_jpeg
from pipelines.retention import run_retention
from pipelines.store import FACES, MATCHES, WATCHLIST
from pipelines.track_map import TrackMap

pytestmark = pytest.mark.timeout(240)
DAY = 86400


def _live_alert(lists, face, n, status):
    from pipelines.live.alert_record import alert_record
    from pipelines.live.analyser import AlertDraft, Face
    from pipelines.live.cameras import CameraSpec
    from pipelines.live.review_book import ReviewBook
    from serve.alerts import AlertRecorder

    reviews = ReviewBook(lists.home.catalog)
    recorder = AlertRecorder(lists.home.vectors(), lists.home.media, reviews)
    f = Face(
        0.0, n, time.time(), 0, np.array([1.0, 2, 50, 60]), 1.0, face.embedding, face.thumbnail
    )
    draft = AlertDraft(
        f"a_{n}", "cam1", n, "p_x", "X", "wl", "", "s_x", 0.97, 0.02, 0.95, f, 0.97, n, 0.0, 3
    )
    recorder.record(draft, alert_record(draft, CameraSpec(id="cam1", url="push")))
    if status != "pending":
        recorder.set_status(draft.alert_id, status)
        reviews.decide(draft.alert_id, status, "", "reviewer")
    return draft.alert_id, reviews


def _archive_match(lists, face, n, out: Path):
    jpeg = encode_jpeg(face.thumbnail)
    mid = f"m_{n}"
    (out / "thumbs").mkdir(parents=True, exist_ok=True)
    (out / "thumbs" / f"{mid}.jpg").write_bytes(jpeg)
    thumb = lists.home.media.save("matches", mid, jpeg)
    lists.home.vectors().upsert_matches(
        [{"match_id": mid, "embedding": face.embedding, "source": "archive", "thumbnail": thumb}]
    )
    return mid


def _indexed_face(lists, face, n):
    thumb = lists.home.media.save("faces", f"f_{n}", encode_jpeg(face.thumbnail))
    lists.home.vectors().upsert(
        FACES, [{"id": f"f_{n}", "embedding": face.embedding, "thumbnail": thumb}]
    )
    return f"f_{n}"


def _ids(lists, collection):
    return sorted(r["id"] for r in lists.home.vectors().query(collection, fields=["id"]))


def _files(lists, kind):
    return sorted(p.stem for p in lists.home.media.files(kind))


def test_retention_deletes_what_is_due_and_keeps_the_rest(lists, faces, tmp_path):
    out = tmp_path / "search-out"
    ob, bi = faces["obama"], faces["biden"]
    lists.add("Obama", [ob], "officer", "wl", expires_on=today() + timedelta(days=1))
    lists.add("Biden", [bi], "officer", "wl")
    _, reviews = _live_alert(lists, ob, 1, "confirmed")
    _live_alert(lists, ob, 2, "rejected")
    _live_alert(lists, bi, 3, "pending")
    _archive_match(lists, ob, 1, out)
    photo_copy = out / "thumbs" / "list_e_obama_0123456789ab.jpg"  # shown beside m_1
    photo_copy.write_bytes(encode_jpeg(ob.thumbnail))
    _indexed_face(lists, bi, 1)
    _indexed_face(lists, ob, 2)
    tracks = TrackMap(lists.home.catalog)  # what `facewatch index` records beside them
    tracks.replace("src1", {0: ["f_1", "f_2"]}, int(time.time()))
    policy = RetentionConfig()  # confirmed 365 d, rejected 30, pending 90, archive 180, ...
    snapshot = (_ids(lists, MATCHES), _ids(lists, FACES), _files(lists, None))

    later = time.time() + 40 * DAY
    dry = run_retention(lists, policy, "admin", dry_run=True, now=later)
    assert dry.deleted == {
        "confirmed_alerts": 0,
        "rejected_alerts": 1,
        "pending_alerts": 0,
        "archive_matches": 0,
        "face_index": 2,
        "expired_entries": 1,
    }
    assert dry.files["rejected_alerts"] == 1 and dry.files["face_index"] == 2  # not 0
    assert (_ids(lists, MATCHES), _ids(lists, FACES), _files(lists, None)) == snapshot
    assert tracks.faces() == 2

    run = run_retention(lists, policy, "admin", now=later, out_dirs=(out,))
    assert run.deleted == dry.deleted
    assert run.files["rejected_alerts"] == 1 and run.files["face_index"] == 2
    assert _ids(lists, MATCHES) == ["a_1", "a_3", "m_1"]
    assert _ids(lists, FACES) == [] and tracks.faces() == 0
    assert _files(lists, "alerts") == ["a_1", "a_3"] and _files(lists, "faces") == []
    assert photo_copy.exists()  # its face thumbnail is still kept
    assert [a["alert_id"] for a in reviews.list("all", None, 10)] == ["a_3", "a_1"]
    # the expired person: vectors and photo gone, the record kept
    people = {p["name"]: p for p in lists.people("wl", include_removed=True)}
    assert people["Obama"]["status"] == "removed" and people["Obama"]["removed_by"] == "admin"
    assert people["Biden"]["status"] == "active"
    assert len(_ids(lists, WATCHLIST)) == 1 and len(_files(lists, "watchlist")) == 1

    much_later = time.time() + 200 * DAY  # the search's output folder is found in the log
    lists.home.audit.append("officer", "export.search", case="C1", out=str(out))
    run = run_retention(lists, policy, "admin", now=much_later)
    assert run.deleted["pending_alerts"] == 1 and run.deleted["archive_matches"] == 1
    assert _ids(lists, MATCHES) == ["a_1"]  # confirmed alerts are kept a year
    assert _files(lists, "matches") == [] and not (out / "thumbs" / "m_1.jpg").exists()
    assert _files(lists, "alerts") == ["a_1"]

    audited = [r["details"] for r in lists.home.audit.records(action="retention.run")]
    assert [a["dry_run"] for a in audited] == [True, False, False]
    # media/matches, <out>/thumbs, and the photo copy that no face there needs any more
    assert run.files["archive_matches"] == 3 and not photo_copy.exists()
    assert audited[1]["deleted"]["rejected_alerts"] == 1
    assert lists.home.audit.verify().ok


def test_no_period_keeps_and_a_missing_face_index_is_skipped(lists, faces):
    _live_alert(lists, faces["obama"], 1, "rejected")
    lists.home.vectors().client.drop_collection(FACES)
    policy = RetentionConfig(rejected_alerts_days=None)
    run = run_retention(lists, policy, "admin", now=time.time() + 1000 * DAY)
    assert (
        "rejected_alerts" not in run.deleted
        and run.skipped["face_index"] == "no fw_faces collection"
    )
    assert _ids(lists, MATCHES) == ["a_1"]


def test_a_stored_path_outside_the_media_folder_is_never_deleted(lists, faces, tmp_path):
    victim = lists.home.path / "catalog.sqlite"
    lists.home.vectors().upsert_matches(
        [
            {
                "match_id": "m_evil",
                "embedding": faces["obama"].embedding,
                "source": "archive",
                "thumbnail": "media/../catalog.sqlite",
            }
        ]
    )
    run = run_retention(lists, RetentionConfig(), "admin", now=time.time() + 1000 * DAY)
    assert run.deleted["archive_matches"] == 1 and run.files["archive_matches"] == 0
    assert victim.exists()


def test_a_run_that_fails_part_way_is_audited_with_what_it_deleted(lists, faces, monkeypatch):
    """Retention writes its start before the first deletion and, when a later class fails,
    its record with what was deleted so far and the error (a named fake failure in the
    expired-entries step, after the Milvus classes were purged)."""
    import pipelines.retention as retention

    _live_alert(lists, faces["obama"], 1, "rejected")

    def expired_step_fails(*_args, **_kwargs):
        raise RuntimeError("fake: the catalog is locked")

    monkeypatch.setattr(retention, "_expired", expired_step_fails)
    with pytest.raises(RuntimeError):
        run_retention(lists, RetentionConfig(), "admin", now=time.time() + 1000 * DAY)
    actions = [r["action"] for r in lists.home.audit.records()]
    assert actions[-2:] == ["retention.start", "retention.run"]
    record = list(lists.home.audit.records())[-1]["details"]
    assert record["deleted"]["rejected_alerts"] == 1
    assert record["error"] == "RuntimeError: fake: the catalog is locked"
    assert _ids(lists, MATCHES) == []  # the alert is gone, and the record says so


def test_photo_copies_are_deleted_only_inside_a_real_output_folder(tmp_path):
    """A ``thumbs`` that is a symlink to somewhere else is left alone: the glob would follow
    it and delete that folder's files."""
    from pipelines.retention import delete_orphan_photos

    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    (elsewhere / "list_keep.jpg").write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    (out / "thumbs").symlink_to(elsewhere, target_is_directory=True)
    assert delete_orphan_photos(out) == 0 and (elsewhere / "list_keep.jpg").exists()
    real = tmp_path / "real"
    (real / "thumbs").mkdir(parents=True)
    (real / "thumbs" / "list_a.jpg").write_bytes(b"x")
    assert delete_orphan_photos(real) == 1
