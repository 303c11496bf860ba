"""``facewatch search --progress-file``: the search's progress as a small JSON file.

A search started from the web workspace runs as its own process, so the page cannot see
its progress bar. This writes what the bar shows (files, frames, faces, video-seconds, an
ETA) to a file, replaced atomically at most every half second and once at the end, which
the workspace reads when the page polls.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from jobs.archive.search import FileResult
from jobs.archive.search import Progress as SearchProgress


class ProgressFile:
    def __init__(self, path: Path, fps: float, every_s: float = 0.5):
        self.path, self.fps, self.every_s = Path(path), fps, every_s
        self.started = time.time()
        self.state: dict[str, Any] = {
            "state": "starting",
            "files_done": 0,
            "files_total": None,
            "frames_done": 0,
            "frames_total": None,
            "faces": 0,
            "matches": 0,
        }
        self._written = 0.0
        self.write(force=True)

    def callbacks(self, inner: SearchProgress) -> SearchProgress:
        """``inner``'s callbacks (the terminal's bar), each also noted here."""

        def total(files: int, frames: int) -> None:
            self.state.update(state="running", files_total=files, frames_total=frames)
            self.write(force=True)
            inner.total(files, frames)

        def advance(frames: int, faces: int, close: int) -> None:
            self.state["frames_done"] += frames
            self.state["faces"] += faces
            self.write()
            inner.advance(frames, faces, close)

        def file_result(result: FileResult) -> None:
            self.state["matches"] += len(result.matches)  # what is stored, file by file
            inner.file_result(result)

        def file_done(path: str) -> None:
            self.state["files_done"] += 1
            self.write(force=True)
            inner.file_done(path)

        return SearchProgress(total, advance, file_done, file_result, inner.files_failed)

    def finish(self, state: str) -> None:
        self.state["state"] = state
        self.write(force=True)

    def write(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._written < self.every_s:
            return
        self._written = now
        done, total = self.state["frames_done"], self.state["frames_total"]
        elapsed = now - self.started
        eta = elapsed * (total - done) / done if done and total else None
        data = {
            **self.state,
            "video_s_done": round(done / self.fps, 1),
            "elapsed_s": round(elapsed, 1),
            "eta_s": None if eta is None else round(eta, 1),
            "updated": now,
        }
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(data) + "\n", encoding="utf-8")
        os.replace(partial, self.path)
