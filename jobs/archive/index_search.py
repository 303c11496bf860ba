"""Probe search over the face index: find a person in indexed archive without decoding.

1. One batched vector search of the ``fw_faces`` collection with the probe photos'
   embeddings (``top_k`` nearest faces per photo).
2. A track can only be matched if one of its faces reaches the review threshold (a track's
   margin is a mean of its best margins), so the tracks with such a hit are the ones read.
3. All faces of those tracks are read back (one query per file) and scored against the
   probe photos (max over photos, as the in-memory Matcher does), and the archive search's
   own rules decide each track and group tracks into sightings (pipelines/sightings.py).

The result has the archive search's shape (matches, sightings), so the same Parquet files
and HTML report are written.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jobs.archive.index import Purpose
from jobs.archive.report import link_media, render_report, write_outputs
from jobs.archive.search import PerFileResults, archive_match, archive_match_id, sighting_id
from pipelines.config import Settings
from pipelines.home import Home
from pipelines.match import Gallery
from pipelines.paths import resolved
from pipelines.schemas import Match, Sighting
from pipelines.sightings import FaceTable, best_row, decide_tracks, group_sightings
from pipelines.store import FACES, VectorStore
from pipelines.track_map import Track, TrackMap

logger = logging.getLogger(__name__)

MAX_TOP_K = 16384  # Milvus's limit per query
FILES_PER_QUERY = 64  # candidate files whose tracks are read back in one query
IDS_PER_QUERY = 2000  # faces read back by id in one query
FACE_FIELDS = [
    "id",
    "source_id",
    "source_path",
    "frame_index",
    "timestamp_s",
    "box",
    "thumbnail",
    "face_index",
    "track_id",
    "quality",
]


@dataclass
class IndexedFile:
    path: str
    file_id: str
    matches: list[Match] = field(default_factory=list)
    sightings: list[Sighting] = field(default_factory=list)


@dataclass
class IndexedSearchResult(PerFileResults):
    files: list[IndexedFile]
    faces_in_index: int
    hits: int  # faces at or above the threshold among the top-k
    saturated: bool  # some probe's top-k were all above the threshold: raise --top-k
    query_s: float
    wall_s: float
    errors: list = field(default_factory=list)  # nothing is decoded, so nothing fails


@dataclass(frozen=True)
class PathScope:
    """Which indexed files an indexed search may return: these files, or files under these
    folders. The files need not exist any more (the index outlives the video), so a path
    that is gone counts as a file if it has a video extension and as a folder otherwise."""

    files: tuple[str, ...]
    folders: tuple[str, ...]  # each ends with "/"

    @classmethod
    def of(cls, paths: list[Path], video_extensions: tuple[str, ...]) -> PathScope:
        files, folders = [], []
        for p in paths:
            text = str(resolved(p))
            folder = p.is_dir() if p.exists() else p.suffix.lower() not in video_extensions
            if folder:
                folders.append(text.rstrip("/") + "/")
            else:
                files.append(text)
        return cls(tuple(files), tuple(folders))

    def filter(self) -> str:
        """The Milvus filter. ``like`` treats ``%`` and ``_`` in a folder's name as wildcards,
        so it may let more through; ``keeps`` decides exactly."""

        def quote(text: str) -> str:
            return text.replace("\\", "\\\\").replace('"', '\\"')

        parts = [f'source_path == "{quote(f)}"' for f in self.files]
        parts += [f'source_path like "{quote(d)}%"' for d in self.folders]
        return " or ".join(parts)

    def keeps(self, path: str) -> bool:
        return path in self.files or any(path.startswith(d) for d in self.folders)


TRACK_FILTER_FIELDS = ("source_id", "track_id")  # what the read-back filters on


def track_filter(tracks: dict[str, set[int]]) -> str:
    """The read-back's filter: these tracks of these files, by equality and ``in`` on
    TRACK_FILTER_FIELDS only, so the store answers it from their scalar indexes (see
    pipelines/store.py INDEXED_FIELDS) instead of scanning the collection."""
    return " or ".join(
        f'(source_id == "{fid}" and track_id in {sorted(int(t) for t in tracks[fid])})'
        for fid in sorted(tracks)
    )


def read_tracks(
    store: VectorStore, track_map: TrackMap | None, tracks: dict[str, set[int]]
) -> dict[str, list[dict]]:
    """Every face of these tracks, by file: by id where the track map knows the tracks and
    the faces read are what it recorded (pipelines/track_map.py), else by filter."""
    out: dict[str, list[dict]] = {fid: [] for fid in tracks}
    fields = [*FACE_FIELDS, "embedding", "indexed_at"]
    by_file: dict[str, dict[int, Track]] = defaultdict(dict)
    for (fid, t), entry in (track_map.lookup(tracks) if track_map else {}).items():
        by_file[fid][t] = entry
    ids = [i for mine in by_file.values() for entry in mine.values() for i in entry.face_ids]
    got: dict[str, list[dict]] = defaultdict(list)
    for i in range(0, len(ids), IDS_PER_QUERY):
        for r in store.query(FACES, ids=ids[i : i + IDS_PER_QUERY], fields=fields):
            got[r["source_id"]].append(r)
    for fid, mine in list(by_file.items()):
        if _map_holds(got[fid], mine):
            out[fid] = got[fid]
        else:  # changed since the map was written: read by filter
            logger.info("the track map of %s is out of date; reading its tracks by filter", fid)
            del by_file[fid]
    rest = {f: {t for t in ts if t not in by_file.get(f, {})} for f, ts in tracks.items()}
    files = sorted(f for f in rest if rest[f])
    for i in range(0, len(files), FILES_PER_QUERY):
        chunk = {fid: rest[fid] for fid in files[i : i + FILES_PER_QUERY]}
        for r in store.query(FACES, filter=track_filter(chunk), fields=fields):
            out[r["source_id"]].append(r)
    return out


def _map_holds(rows: list[dict], mine: dict[int, Track]) -> bool:
    """One file's faces read by id are what its map recorded: as many, each still in its
    track, none stored after the map was written."""
    if len(rows) != sum(len(entry.face_ids) for entry in mine.values()):
        return False
    return all(
        (entry := mine.get(int(r["track_id"]))) is not None and r["indexed_at"] <= entry.indexed_at
        for r in rows
    )


class IndexedSearch:
    def __init__(
        self,
        store: VectorStore,
        gallery: Gallery,
        link_gap_s: float,
        top_n: int = 3,
        case: str = "",
        track_map: TrackMap | None = None,
    ):
        if len(set(gallery.person_ids)) != 1:
            raise ValueError("an indexed search looks for one person (one or more photos)")
        self.store = store
        self.gallery = gallery
        self.threshold = float(np.min(gallery.thresholds))
        review = gallery.review_thresholds
        # the lower bound of any tier: faces below it cannot make a track reach one
        self.review_threshold = float(np.min(review)) if review is not None else self.threshold
        self.link_gap_s = link_gap_s
        self.top_n = top_n
        self.case = case  # part of every match id, as in archive search
        self.track_map = track_map

    def run(self, top_k: int, scope: PathScope | None = None) -> IndexedSearchResult:
        t0 = time.perf_counter()
        top_k = max(1, min(int(top_k), MAX_TOP_K))
        where = scope.filter() if scope else ""
        fields = ["source_id", "track_id", "source_path"]
        hits = self.store.search(FACES, self.gallery.embeddings, top_k, filter=where, fields=fields)
        # before the scope's exact check: faces it drops (``like`` wildcards) still took
        # places in the top-k, so a full top-k must warn even if fewer are left
        saturated = any(len(h) == top_k and h[-1]["score"] >= self.review_threshold for h in hits)
        if scope:  # exactly the files asked for (see PathScope.filter)
            hits = [[h for h in per if scope.keeps(h["source_path"])] for per in hits]
        query_s = time.perf_counter() - t0
        if saturated:
            logger.warning("all %d nearest faces are matches: raise --top-k to see all", top_k)
        tracks: dict[str, set[int]] = defaultdict(set)
        n_hits = 0
        for h in (h for per_probe in hits for h in per_probe):
            if h["score"] >= self.review_threshold:
                n_hits += 1
                tracks[h["source_id"]].add(int(h["track_id"]))
        files = [
            self._file(fid, rows)
            for fid, rows in read_tracks(self.store, self.track_map, tracks).items()
            if rows  # a file removed (retention) between the search and the read
        ]
        files = [f for f in files if f.sightings]
        files.sort(key=lambda f: f.path)
        return IndexedSearchResult(
            files,
            self._faces_in_index(),
            n_hits,
            saturated,
            query_s,
            time.perf_counter() - t0,
        )

    def _faces_in_index(self) -> int:
        """From the track map where it knows any face: counting the store takes 0.6 s at a
        million faces on milvus-lite (the map leaves out live drill faces)."""
        n = self.track_map.faces() if self.track_map else 0
        return n or self.store.count(FACES)

    def _file(self, file_id: str, rows: list[dict]) -> IndexedFile:
        rows.sort(key=lambda r: (r["frame_index"], r["face_index"]))
        table, tids = self._table(rows)
        out = IndexedFile(rows[0]["source_path"], file_id)
        gap = np.array([self.threshold - self.review_threshold])
        verdicts = decide_tracks(table, tids, self.top_n, gap)
        for v in verdicts:
            for r in v.faces:
                m = self._match(out, table, r, rows[r], v.track_id)
                m.extra["tier"] = v.tier
                out.matches.append(m)
        for d in group_sightings(table, verdicts, self.link_gap_s):
            b = best_row(table, d.rows, 0)
            out.sightings.append(
                Sighting(
                    person_id=self.gallery.person_ids[0],
                    person_name=self.gallery.person_names[0],
                    list_name=self.gallery.list_names[0],
                    source_path=out.path,
                    source_id=file_id,
                    start_s=round(d.start_s, 3),
                    end_s=round(d.end_s, 3),
                    best_score=round(float(table.cand_score[b, 0]), 4),
                    best_frame_s=round(float(table.t[b]), 3),
                    n_frames=len({int(table.frame_index[r]) for r in d.rows}),
                    thumbnail=archive_match_id(
                        file_id, table, b, self.gallery.person_ids[0], self.case
                    ),
                    watchlist_photo=self.gallery.photos[0],
                    track_ids=sorted(d.track_ids),
                    tier=d.tier,
                    threshold=round(self.threshold, 4),
                    review_threshold=round(self.review_threshold, 4),
                    sighting_id=sighting_id(
                        self.case, file_id, self.gallery.person_ids[0], d.start_s, d.end_s
                    ),
                )
            )
        return out

    def _table(self, rows: list[dict]) -> tuple[FaceTable, np.ndarray]:
        emb = np.asarray([r["embedding"] for r in rows], np.float32)
        score = (emb @ self.gallery.embeddings.T).max(axis=1)
        n = len(rows)
        table = FaceTable(
            t=np.asarray([r["timestamp_s"] for r in rows], np.float64),
            frame_index=np.asarray([r["frame_index"] for r in rows], np.int64),
            face_index=np.asarray([r["face_index"] for r in rows], np.int64),
            boxes=np.asarray([r["box"] for r in rows], np.float32).reshape(n, 4),
            passed=np.ones(n, bool),  # only quality-passing faces are indexed
            quality=np.asarray([r["quality"] for r in rows], np.float32),
            cand_person=np.zeros((n, 1), np.int32),
            cand_score=score[:, None].astype(np.float32),
            cand_margin=(score - self.threshold)[:, None].astype(np.float32),
        )
        return table, np.asarray([r["track_id"] for r in rows], np.int64)

    def _match(self, f: IndexedFile, table: FaceTable, r: int, row: dict, track_id: int):
        g = self.gallery
        person = (g.person_ids[0], g.person_names[0], g.list_names[0])
        score = table.cand_score[r, 0]
        m = archive_match(f.file_id, f.path, table, r, person, score, track_id, case=self.case)
        m.extra["face_thumbnail"] = row.get("thumbnail", "")
        m.extra["embedding"] = np.asarray(row["embedding"], np.float32)
        return m


@dataclass(frozen=True)
class IndexedRequest:
    """What ``facewatch search --probe IMAGE --indexed`` asks: where (none: everywhere),
    how many nearest faces per photo, and the thresholds overridden (audited)."""

    paths: list[Path]
    top_k: int
    threshold: float | None = None
    review_threshold: float | None = None


def search_index_and_record(
    settings: Settings,
    home: Home,
    gallery: Gallery,
    target: str,
    request: IndexedRequest,
    purpose: Purpose,
    out: Path,
) -> tuple[IndexedSearchResult, dict, Path]:
    """The indexed search as a service: the search audited, run, its results exported to
    ``out`` (audited: retention finds the folder's thumbnails through that record) and
    stored as archive matches. Returns the result, its summary and the report's path."""
    home.audit.append(
        purpose.actor,
        "search",
        mode="indexed",
        case=purpose.case,
        reason=purpose.reason,
        purpose_relaxed=purpose.relaxed,
        target=target,
        paths=[str(resolved(p)) for p in request.paths],
        probe_sha256=list(gallery.entry_ids),
        threshold_override=request.threshold,
        review_threshold_override=request.review_threshold,
        top_k=request.top_k,
    )
    s, store = settings.search, home.vectors()
    # tracks by id where the store's filters scan (milvus-lite); a server's indexed filter
    # is faster than its read by id (bench_index: 30 vs 62 ms a search at a million faces)
    track_map = TrackMap(home.catalog) if store.filters_scan else None
    job = IndexedSearch(store, gallery, s.link_gap_s, s.top_n, purpose.case, track_map)
    scope = PathScope.of(request.paths, s.video_extensions) if request.paths else None
    result = job.run(request.top_k, scope)
    out.mkdir(parents=True, exist_ok=True)
    home.audit.append(
        purpose.actor, "export.search", case=purpose.case, target=target, out=str(out.resolve())
    )
    (out / "thumbs").mkdir(exist_ok=True)
    _persist(home, result, out, purpose.case)
    summary = _indexed_summary(result, purpose.case, target, request.top_k)
    link_media(result.sightings, out)
    write_outputs(out, result.sightings, result.matches, [])
    report = render_report(out, result.sightings, summary, [], title="facewatch indexed search")
    return result, summary, report


def _persist(home: Home, result: IndexedSearchResult, out: Path, case: str) -> None:
    """Thumbnails next to the report, matches into Milvus, as an archive search does."""
    rows = []
    for m in result.matches:
        face_thumb = m.extra.pop("face_thumbnail", "")
        emb = m.extra.pop("embedding")
        if face_thumb and home.media.path(face_thumb).is_file():
            crop = home.media.path(face_thumb).read_bytes()
            (out / "thumbs" / f"{m.match_id}.jpg").write_bytes(crop)
            m.thumbnail = home.media.save("matches", m.match_id, crop)
        row = m.row()
        row["status"] = row.pop("extra").get("tier", "sighting")  # archive: the tier
        row["embedding"] = np.asarray(emb, np.float32)
        row["case_ref"] = case
        rows.append(row)
    if rows:
        home.vectors().upsert_matches(rows)


def _indexed_summary(result: IndexedSearchResult, case, target: str, top_k: int) -> dict:
    return {
        "case": case or "(none)",
        "searched for": target,
        "mode": "indexed (no video decoded)",
        "faces in the index": result.faces_in_index,
        "nearest faces asked": top_k,
        "faces above threshold": result.hits,
        "top-k saturated": result.saturated,
        "files with sightings": len(result.files),
        "matched faces": len(result.matches),
        "sightings": len(result.sightings),
        "query time": f"{result.query_s * 1000:.0f} ms",
        "wall time": f"{result.wall_s:.2f}s",
    }
