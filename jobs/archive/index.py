"""The retrospective face index: every quality-passing face of an archive, kept in Milvus.

``facewatch index`` runs the archive search's own pipeline (plan -> decode -> FacePool ->
tracking, see jobs/archive/search.py) with an empty watch list, and stores each quality-passing
face in the ``fw_faces`` collection: embedding, box, time, frame and face index, file hash
and path, track id, quality, and a thumbnail in ``<home>/media/faces``. A later
``facewatch search --probe IMAGE --indexed`` (jobs/archive/index_search.py) then finds a person
without decoding the video again.

Ids are stable (file hash, frame, face), so indexing a file twice keeps one copy; a file
indexed again replaces its earlier rows (and thumbnails), since track ids of two runs at
different frame rates would not agree. The driver is the only writer, as in search.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jobs.archive import runtime
from jobs.archive.report import ERROR_SCHEMA, write_table
from jobs.archive.search import ArchiveSearch, FileResult, Progress, SearchResult
from jobs.archive.search_monitor import monitored
from pipelines.config import Settings
from pipelines.home import Home
from pipelines.match import Gallery
from pipelines.paths import resolved
from pipelines.schemas import EmbedderInfo
from pipelines.sightings import FaceTable
from pipelines.store import FACES
from pipelines.track_map import TrackMap, group_by_track

logger = logging.getLogger(__name__)

UPSERT_BATCH = 2000


def face_id(file_id: str, frame_index: int, face_index: int) -> str:
    """Deterministic: the same face of the same file always has the same id."""
    key = f"{file_id}:{int(frame_index)}:{int(face_index)}"
    return "f_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def empty_gallery(info: EmbedderInfo) -> Gallery:
    """No one to match: the search pipeline then only detects, embeds and tracks."""
    return Gallery(
        embeddings=np.zeros((0, info.dim), np.float32),
        entry_ids=[],
        person_ids=[],
        person_names=[],
        list_names=[],
        photos=[],
        embedder=info,
        thresholds=np.zeros(0, np.float32),
    )


@dataclass
class IndexCounts:
    files: int = 0
    faces: int = 0  # quality-passing faces stored
    replaced: int = 0  # rows of an earlier indexing of the same file that are gone now
    per_file: dict[str, int] = field(default_factory=dict)


class FaceIndexWriter:
    """The ``on_faces`` callback of ArchiveSearch: persists one finished file's faces."""

    def __init__(self, home: Home, case: str):
        self.home = home
        self.store = home.vectors()
        self.tracks = TrackMap(home.catalog)
        self.case = case
        self.counts = IndexCounts()

    def __call__(
        self,
        res: FileResult,
        table: FaceTable,
        emb: np.ndarray,
        crops: list,
        track_ids: np.ndarray,
    ) -> None:
        now = int(time.time())
        path = str(resolved(res.path))
        rows = []
        for r in np.flatnonzero(table.passed):
            fid = face_id(res.file_id, table.frame_index[r], table.face_index[r])
            thumb = self.home.media.save("faces", fid, crops[r]) if crops[r] else ""
            rows.append(
                {
                    "id": fid,
                    "embedding": emb[r],
                    "source_id": res.file_id,
                    "source_path": path,
                    "frame_index": int(table.frame_index[r]),
                    "timestamp_s": round(float(table.t[r]), 3),
                    "box": table.boxes[r],
                    "thumbnail": thumb,
                    "case_ref": self.case,
                    "face_index": int(table.face_index[r]),
                    "track_id": int(track_ids[r]),
                    "quality": float(table.quality[r]),
                    "indexed_at": now,
                    "created_at": now,
                }
            )
        # the map goes first and comes back last: a crash in between leaves this file
        # unmapped (read back by filter), never mapped to faces that are not there
        self.tracks.forget(res.file_id)
        if res.complete:  # faces of an earlier indexing that this one did not find again
            self._drop_stale(res.file_id, {r["id"] for r in rows})
        else:  # a part could not be read this time: what an earlier run stored stays
            logger.warning("%s was only partly read; earlier index rows are kept", path)
        for i in range(0, len(rows), UPSERT_BATCH):
            self.store.upsert(FACES, rows[i : i + UPSERT_BATCH])
        if res.complete:  # else old rows' tracks are mixed in: the map would miss them
            by_track = group_by_track((r["id"] for r in rows), (r["track_id"] for r in rows))
            self.tracks.replace(res.file_id, by_track, now)
        self.counts.files += 1
        self.counts.faces += len(rows)
        self.counts.per_file[path] = len(rows)
        logger.info("indexed %d faces of %s", len(rows), path)

    def _drop_stale(self, file_id: str, keep: set[str]) -> None:
        old = self.store.query(
            FACES, filter=f'source_id == "{file_id}"', fields=["id", "thumbnail"]
        )
        stale = [o for o in old if o["id"] not in keep]
        if not stale:
            return
        self.store.delete(FACES, ids=[o["id"] for o in stale])
        for o in stale:
            self.home.media.delete(o.get("thumbnail", ""))
        self.counts.replaced += len(stale)


@dataclass
class IndexRun:
    result: SearchResult
    counts: IndexCounts


def index_archive(
    settings: Settings,
    home: Home,
    info: EmbedderInfo,
    paths: list[Path],
    case: str,
    out: Path,
    fps: float | None = None,
    ray_address: str | None = None,
    progress: Progress | None = None,
) -> IndexRun:
    """Index ``paths`` into the home's face index; returns the run and what was stored.

    Faces are linked into tracks as an archive search links them (by the embedder's own
    similarities, never a threshold), so the tracks stored here are those a search makes.
    """
    writer = FaceIndexWriter(home, case)
    runtime.start_ray(ray_address, settings)
    watched = monitored(home.path, progress or Progress(), kind="index")
    with runtime.face_pool(settings, info) as app, watched as progress:
        job = ArchiveSearch(settings, empty_gallery(info), out, fps, progress, on_faces=writer)
        result = job.run(paths, app)
    return IndexRun(result, writer.counts)


@dataclass(frozen=True)
class Purpose:
    """Who acts, for which case and why (``relaxed``: the purpose check was waived by
    configuration); every archive act records it in the audit log."""

    actor: str
    case: str
    reason: str
    relaxed: bool


def index_and_record(
    settings: Settings,
    home: Home,
    info: EmbedderInfo,
    paths: list[Path],
    purpose: Purpose,
    out: Path,
    fps: float | None = None,
    ray_address: str | None = None,
) -> tuple[IndexRun, dict]:
    """``facewatch index`` as a service: the act audited before it starts and what it
    stored audited after; the summary (returned) and the failed files written to ``out``."""
    home.audit.append(
        purpose.actor,
        "index",
        case=purpose.case,
        reason=purpose.reason,
        purpose_relaxed=purpose.relaxed,
        paths=[str(resolved(p)) for p in paths],
        fps=fps or settings.search.fps,
    )
    out.mkdir(parents=True, exist_ok=True)
    run = index_archive(settings, home, info, paths, purpose.case, out, fps, ray_address)
    errors = [e.row() for e in run.result.errors]
    summary = _index_summary(run, purpose.case, home.vectors().count(FACES), len(errors))
    home.audit.append(
        purpose.actor,
        "index.done",
        case=purpose.case,
        files=run.counts.per_file,
        faces=run.counts.faces,
        replaced=run.counts.replaced,
        errors=errors,
    )
    write_table(errors, ERROR_SCHEMA, out / "errors.parquet")
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return run, summary


def _index_summary(run: IndexRun, case: str, in_index: int, failed: int) -> dict:
    files = run.result.files
    return {
        "case": case or "(none)",
        "files indexed": run.counts.files,
        "files failed": failed,
        "video_s": round(run.result.video_s, 1),
        "frames analysed": sum(f.frames for f in files),
        "faces detected": sum(f.faces for f in files),
        "faces indexed": run.counts.faces,
        "rows replaced from an earlier indexing": run.counts.replaced,
        "faces in the index": in_index,
        "wall_s": round(run.result.wall_s, 1),
        "per_file": run.counts.per_file,
    }
