"""Resuming an archive search that died: per-file completion records in the catalog.

A search whose process is killed (SIGKILL, a lost node, the store down past its deadline)
has stored the matches of the files it finished, and nothing says which those were. So
each file, once its matches are in the store, gets a completion record in the catalog
(``search_files``, migration 5) under the search's key. A rerun with the same arguments
has the same key: it skips the files recorded as complete, restores their results from
the record (frames, faces, matches, sightings) and searches the rest. Match and sighting
ids are deterministic (jobs/search.py), so the resumed result equals an undisturbed run.

The key is a hash of everything that decides a file's result: the case, what is searched
for (the gallery's entries, each person's thresholds, the list snapshots), the sampling
rate, every setting, and the output folder (its thumbnails are part of the result). Any
change gives a new key: a fresh search, never a mix of two.

Only files that were searched whole are recorded: a file that lost frames, or that could
only be read in part, is searched again on a rerun (and fails or succeeds as before).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

from jobs.archive.search import FileResult
from pipelines.catalog import Catalog
from pipelines.config import Settings
from pipelines.handoff import record_completion
from pipelines.match import Gallery
from pipelines.schemas import Match, Sighting
from pipelines.video import VideoInfo

logger = logging.getLogger(__name__)


def search_key(
    settings: Settings, gallery: Gallery, case: str, target: str, fps: float | None, out: Path
) -> str:
    """The same search (same arguments, config and watch-list state): the same key."""
    parts = {
        "case": case,
        "target": target,
        "entries": list(gallery.entry_ids),
        "persons": list(gallery.person_ids),
        "thresholds": _floats(gallery.thresholds),
        "review_thresholds": _floats(gallery.review_thresholds),
        "snapshots": dict(sorted(gallery.snapshot_ids.items())),
        "embedder": gallery.embedder.key,
        "fps": fps,
        "settings": settings.model_dump(mode="json"),
        "out": str(Path(out).resolve()),
    }
    text = json.dumps(parts, sort_keys=True, default=str)
    return "k_" + hashlib.sha256(text.encode()).hexdigest()[:32]


def _floats(values) -> list[float] | None:
    return None if values is None else [round(float(v), 6) for v in values]


class CompletionBook:
    """The completion records of one search key, in the home's catalog."""

    def __init__(self, catalog: Catalog, key: str):
        self.catalog = catalog
        self.key = key
        self.skipped: list[str] = []  # paths restored from a record in this run

    def completed(self) -> dict[str, dict]:
        rows = self.catalog.rows(
            "SELECT file_id, result_json FROM search_files WHERE search_key = ?", self.key
        )
        return {r["file_id"]: json.loads(r["result_json"]) for r in rows}

    def record(self, res: FileResult) -> bool:
        """Record ``res`` as complete; call only after its matches are stored. A file that
        was not searched whole gets no record (a rerun searches it again)."""
        body = completion_body(res)
        if body is None:
            return False
        record_completion(self.catalog, self.key, res.file_id, res.path, body)
        return True

    def restorer(self) -> Callable[[str, str, VideoInfo], FileResult | None]:
        """For ArchiveSearch: the stored result of a file completed by an earlier run of this
        search, or None to search it."""
        done = self.completed()

        def restore(path: str, file_id: str, info: VideoInfo) -> FileResult | None:
            body = done.get(file_id)
            if body is None:
                return None
            self.skipped.append(path)
            return restored(body, path, file_id, info)

        return restore


def completion_body(res: FileResult) -> dict | None:
    """What a completion record keeps of a file (None: it was not searched whole)."""
    if not res.complete:
        return None
    return {
        "frames": res.frames,
        "faces": res.faces,
        "rejected": res.rejected,
        "matches": [_match_row(m) for m in res.matches],
        "sightings": [s.row() for s in res.sightings],
    }


def _match_row(m: Match) -> dict:
    row = m.row()
    row["extra"] = {k: v for k, v in row["extra"].items() if k == "tier"}
    return row


def restored(body: dict, path: str, file_id: str, info: VideoInfo) -> FileResult:
    """A FileResult from its completion record. The path is this run's (the same content
    may have been found under another name); ids inside the record are unchanged."""
    matches = [Match(**dict(m, box=tuple(m["box"]), source_path=path)) for m in body["matches"]]
    sightings = [Sighting(**dict(s, source_path=path)) for s in body["sightings"]]
    return FileResult(
        path,
        file_id,
        info,
        frames=int(body["frames"]),
        faces=int(body["faces"]),
        rejected={str(k): int(v) for k, v in body["rejected"].items()},
        matches=matches,
        sightings=sightings,
    )
