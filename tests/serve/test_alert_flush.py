"""The hub's recorder flushes what it writes row by row to an embedded store (serve.alerts:
milvus-lite keeps every row in its in-process write buffer otherwise, ~16 KB of the hub's
memory each). Real milvus-lite and a real Milvus server; the embeddings are random unit
vectors (the store does not look at them), the crops random pixels."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import Settings
from pipelines.home import Home
from pipelines.schemas import EmbedderInfo
from pipelines.store import FACES, MATCHES

pytestmark = pytest.mark.timeout(180)
INFO = EmbedderInfo("dlib-resnet", "test-flush", 128)


def _recorder(settings: Settings, flush_every: int):
    from pipelines.live.review_book import ReviewBook
    from serve.alerts import AlertRecorder

    home = Home.open(settings, INFO)
    return home, AlertRecorder(home.vectors(), home.media, ReviewBook(home.catalog), flush_every)


def _alert(recorder, n: int, rng) -> str:
    from pipelines.live.alert_record import alert_record
    from pipelines.live.analyser import AlertDraft, Face
    from pipelines.live.cameras import CameraSpec

    e = rng.normal(size=128).astype(np.float32)
    crop = rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    face = Face(
        0.0, n, time.time(), 0, np.array([1.0, 2, 50, 60]), 1.0, e / np.linalg.norm(e), crop
    )
    draft = AlertDraft(
        f"a_{n}", "cam1", n, "p_x", "X", "wl", "", "s_x", 0.97, 0.02, 0.95, face, 0.97, n, 0.0, 3
    )
    recorder.record(draft, alert_record(draft, CameraSpec(id="cam1", url="push")))
    return draft.alert_id


def _segments(home: Path, collection: str) -> list[Path]:
    """milvus-lite's flushed data files of a collection (its on-disk layout)."""
    return sorted((home / "milvus.db" / "collections" / collection).rglob("data_*.parquet"))


def test_an_embedded_store_is_flushed_every_n_rows_and_loses_none(tmp_path):
    home, recorder = _recorder(Settings(home=tmp_path / "home"), flush_every=5)
    rng = np.random.default_rng(0)
    try:
        assert recorder.store.embedded
        ids = [_alert(recorder, n, rng) for n in range(12)]
        assert recorder.flushes == 2 and recorder.unflushed[MATCHES] == 2
        assert len(_segments(tmp_path / "home", MATCHES)) >= 1
        recorder.set_status(ids[0], "confirmed")  # an adjudication is a row written too
        assert recorder.unflushed[MATCHES] == 3
        assert recorder.flush_counts() == {"done": 2, "failed": 0, "rows_unflushed": 3}
        rows = recorder.store.query(MATCHES, ids=ids, fields=["id", "status"])
        assert sorted(r["id"] for r in rows) == sorted(ids)
        assert {r["id"]: r["status"] for r in rows}[ids[0]] == "confirmed"
        assert FACES not in recorder.unflushed  # only what was written is counted
    finally:
        home.close()
    # reopened (as a restarted hub): the flushed rows and the ones only in the WAL
    again = Home.open(Settings(home=tmp_path / "home"), INFO)
    try:
        assert again.vectors().count(MATCHES) == 12
    finally:
        again.close()


def test_a_milvus_server_is_left_to_flush_its_own(store_settings, tmp_path):
    home, recorder = _recorder(store_settings, flush_every=2)
    rng = np.random.default_rng(1)
    try:
        ids = [_alert(recorder, n, rng) for n in range(5)]
        if store_settings.store.uri is None:  # the lite half of the parametrised fixture
            assert recorder.flushes == 2
            return
        assert not recorder.store.embedded
        assert recorder.flushes == 0 and not recorder.unflushed
        assert len(recorder.store.query(MATCHES, ids=ids, fields=["id"])) == 5
    finally:
        home.close()
