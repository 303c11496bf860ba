"""What an archive search shows while it runs, beyond the CLI's progress bar: Ray metrics
(lane ``archive``) for Prometheus, and a progress file in the home for ``facewatch
status`` and ``GET /v1/status`` (``pipelines.status``).

Why a wrapper around ``jobs.archive.search.Progress``: the search already reports every batch and
every finished file to its progress callbacks; chaining onto them adds no second path
through the search, and a search run without a home to write to (a test) still works.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs.archive.search import FileResult, Progress
from pipelines.status import SearchProgressFile
from serve import metrics

NOT_GATES = {"decode_error"}  # FileResult.rejected also counts frames lost in decoding


class SearchMonitor:
    def __init__(self, home: Path, inner: Progress, kind: str = "search"):
        self.inner = inner
        self.file = SearchProgressFile(home, kind)
        self.t0 = time.monotonic()
        self.frames = 0
        self.remaining = 0

    def progress(self) -> Progress:
        return Progress(
            self.total, self.advance, self.inner.file_done, self.file_result, self.files_failed
        )

    def total(self, files: int, frames: int) -> None:
        self.inner.total(files, frames)
        self.file.total(files, frames)
        self.remaining = files
        metrics.record("facewatch_search_running", 1)
        metrics.record("facewatch_search_files_remaining", files)

    def advance(self, frames: int, faces: int, close: int) -> None:
        self.inner.advance(frames, faces, close)
        self.file.advance(frames)
        self.frames += frames
        metrics.record("facewatch_search_frames", frames)
        metrics.record("facewatch_faces_detected", faces, lane="archive")
        metrics.record("facewatch_faces_matched", close, lane="archive")
        rate = self.frames / max(1e-6, time.monotonic() - self.t0)
        metrics.record("facewatch_search_throughput_fps", rate)

    def file_result(self, res: FileResult) -> None:
        self.inner.file_result(res)
        failed = not res.complete
        self.file.file_done(failed, res.info.duration_s)
        self.remaining = max(0, self.remaining - 1)
        metrics.record("facewatch_search_files", 1, outcome="failed" if failed else "done")
        metrics.record("facewatch_search_files_remaining", self.remaining)
        metrics.record("facewatch_search_video_seconds", res.info.duration_s)
        for gate, n in res.rejected.items():
            if gate not in NOT_GATES:
                metrics.record("facewatch_faces_rejected", n, lane="archive", outcome=gate)

    def files_failed(self, n: int) -> None:
        self.inner.files_failed(n)
        metrics.record("facewatch_search_files", n, outcome="failed")

    def finish(self) -> None:
        self.file.finish()
        metrics.record("facewatch_search_running", 0)
        metrics.record("facewatch_search_files_remaining", 0)
        metrics.record("facewatch_search_throughput_fps", 0)


@contextmanager
def monitored(home: Path, inner: Progress, kind: str = "search") -> Iterator[Progress]:
    """``inner`` plus metrics and a progress file, removed when the search ends."""
    metrics.install()  # the store's and the audit log's emits in this driver, too
    monitor = SearchMonitor(home, inner, kind)
    try:
        yield monitor.progress()
    finally:
        monitor.finish()
