"""Matches handed over to the store's one writer (pipelines/handoff.py), on a real
milvus-lite store and catalog: ingested once, again after a crash without a duplicate, and
a file that was not searched whole gets no completion record."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from pipelines.config import Settings
from pipelines.engine import FaceEngine
from pipelines.handoff import HandoffVectors, export_gallery, handoff_root, ingest, pending
from pipelines.home import Home
from pipelines.schemas import Match
from pipelines.store import MATCHES, WATCHLIST


def _row(i: int, dim: int) -> dict:
    m = Match(f"m_{i:04d}", "probe", "LMM", "probe", 0.9, "archive", "f_abc", "/a.mp4", i, i / 2,
              (10.0, 20.0, 60.0, 90.0))  # fmt: skip
    row = m.row()
    row.pop("extra")
    return dict(row, status="sighting", case_ref="OP-9", embedding=np.full(dim, 0.1, np.float32))


@pytest.fixture
def home(tmp_path):
    settings = Settings(home=tmp_path / "home")
    with Home.open(settings, FaceEngine(settings).info) as h:
        yield h


@pytest.mark.timeout(120)
def test_a_handed_off_file_is_stored_once_and_recorded_even_when_ingested_twice(home):
    dim = FaceEngine(home.settings).info.dim
    folder = handoff_root(home.path) / "sr_000000000001"
    vectors = HandoffVectors(folder)
    rows = [_row(i, dim) for i in range(3)]
    vectors.hand_off("key1", "f_abc", "/a.mp4", rows, {"frames": 3, "faces": 3})
    vectors.hand_off("key1", "f_part", "/b.mp4", [_row(7, dim)], None)  # not searched whole
    assert pending(folder) == 2
    kept = folder.parent / "copy.json"
    shutil.copy(folder / "file-f_abc.json", kept)  # as if the server died before removing it
    assert ingest(home.vectors(), home.catalog, handoff_root(home.path)) == 2
    assert pending(folder) == 0
    shutil.move(kept, folder / "file-f_abc.json")
    assert ingest(home.vectors(), home.catalog, handoff_root(home.path)) == 1
    assert home.vectors().count(MATCHES, 'case_ref == "OP-9"') == 4  # no duplicate
    done = home.catalog.rows("SELECT file_id FROM search_files WHERE search_key = 'key1'")
    assert [r["file_id"] for r in done] == ["f_abc"]  # the partial file gets searched again


@pytest.mark.timeout(120)
def test_a_list_search_reads_the_vectors_the_server_exported_and_a_bad_file_is_set_aside(home):
    dim = FaceEngine(home.settings).info.dim
    home.vectors().upsert(WATCHLIST, [{"id": "e1", "embedding": np.ones(dim, np.float32)}])
    folder = handoff_root(home.path) / "sr_000000000002"
    assert export_gallery(home.vectors(), folder) == 1
    got = HandoffVectors(folder).query(WATCHLIST, ids=["e1", "e2"], fields=["embedding"])
    assert [r["id"] for r in got] == ["e1"] and got[0]["embedding"].shape == (dim,)
    with pytest.raises(RuntimeError, match="only watch-list vectors"):
        HandoffVectors(folder).query(MATCHES, ids=["x"])
    (folder / "file-broken.json").write_text("{not json", encoding="utf-8")
    assert ingest(home.vectors(), home.catalog, handoff_root(home.path)) == 0
    assert (folder / "file-broken.bad").is_file() and pending(folder) == 0
