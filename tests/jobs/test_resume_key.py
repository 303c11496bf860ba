"""The search key of jobs/resume.py: the same search gives the same key; any change that
could change a file's result (case, thresholds, list contents, sampling, settings, output
folder) gives another, so a rerun never mixes two searches. Plain Python (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.archive.resume import CompletionBook, search_key
from pipelines.catalog import Catalog
from pipelines.config import Settings
from pipelines.match import Gallery
from pipelines.schemas import EmbedderInfo

INFO = EmbedderInfo("dlib-resnet", "test", 4)


def _gallery(threshold: float = 0.5, entries=("e_1",)) -> Gallery:
    n = len(entries)
    return Gallery(
        embeddings=np.eye(n, 4, dtype=np.float32),
        entry_ids=list(entries),
        person_ids=[f"p_{i}" for i in range(n)],
        person_names=["x"] * n,
        list_names=["wanted"] * n,
        photos=[""] * n,
        embedder=INFO,
        thresholds=np.full(n, threshold, np.float32),
    )


@pytest.mark.timeout(30)
def test_the_same_search_has_the_same_key_and_any_change_another(tmp_path):
    base = dict(settings=Settings(), gallery=_gallery(), case="C-1", target="list:wanted",
                fps=None, out=tmp_path / "out")  # fmt: skip
    key = search_key(**base)
    assert search_key(**base) == key
    changed = [
        {"case": "C-2"},
        {"gallery": _gallery(threshold=0.6)},
        {"gallery": _gallery(entries=("e_1", "e_2"))},
        {"fps": 4.0},
        {"settings": Settings(search={"top_n": 2})},
        {"out": tmp_path / "other"},
        {"target": "all lists"},
    ]
    keys = {search_key(**{**base, **c}) for c in changed}
    assert key not in keys and len(keys) == len(changed)


@pytest.mark.timeout(30)
def test_only_complete_files_are_recorded_and_only_under_their_key(tmp_path):
    from jobs.archive.search import FileResult
    from pipelines.video import VideoInfo

    catalog = Catalog.open(tmp_path / "home")
    info = VideoInfo("a.mp4", 10, 5.0, 64, 48)
    done, partial = FileResult("a.mp4", "f_a", info, frames=10), FileResult("b.mp4", "f_b", info)
    partial.complete = False
    book = CompletionBook(catalog, "k_1")
    assert book.record(done) and not book.record(partial)
    assert set(book.completed()) == {"f_a"}
    assert CompletionBook(catalog, "k_2").completed() == {}
    restore = book.restorer()
    again = restore("a.mp4", "f_a", info)
    assert again is not None and again.frames == 10 and restore("b.mp4", "f_b", info) is None
    assert book.skipped == ["a.mp4"]
