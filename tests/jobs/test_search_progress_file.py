"""``facewatch search --progress-file`` (the workspace's view of a running search) counts
the matches that are stored, file by file, and passes every callback on to the terminal's
progress (the bar, metrics and the status page chain onto the same callbacks)."""

from __future__ import annotations

import json

import pytest

from jobs.archive.search import FileResult
from jobs.archive.search import Progress as SearchProgress
from jobs.archive.search_progress import ProgressFile
from pipelines.video import VideoInfo

pytestmark = pytest.mark.timeout(30)


def test_matches_are_the_stored_ones_and_every_callback_reaches_the_inner_progress(tmp_path):
    seen: dict[str, list] = {"advance": [], "file_result": [], "files_failed": []}
    inner = SearchProgress(
        advance=lambda *a: seen["advance"].append(a),
        file_result=lambda r: seen["file_result"].append(r.path),
        files_failed=lambda n: seen["files_failed"].append(n),
    )
    noted = ProgressFile(tmp_path / "p.json", fps=2.0)
    cb = noted.callbacks(inner)
    cb.total(1, 10)
    cb.advance(10, 7, 5)  # 5 faces close to someone: not yet matches
    info = VideoInfo("a.mp4", 20, 2.0, 64, 64)
    cb.file_result(FileResult("a.mp4", "f1", info, matches=["m1", "m2"]))  # type: ignore[list-item]
    cb.files_failed(1)
    noted.finish("done")
    state = json.loads((tmp_path / "p.json").read_text())
    assert (state["faces"], state["matches"], state["state"]) == (7, 2, "done")
    assert seen == {"advance": [(10, 7, 5)], "file_result": ["a.mp4"], "files_failed": [1]}
