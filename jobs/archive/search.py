"""Archive search: the main job. Videos in, sightings out.

The driver plans (find files, hash them, probe them in Ray tasks), runs the Ray Data
pipeline (decode -> FacePool -> match), and, file by file as each completes, links faces
into tracks, decides each track's identity, groups sightings, writes matches to Milvus and
thumbnails to disk. The driver is the store's single writer (milvus-lite allows one).
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jobs.archive import runtime
from jobs.archive.search_stages import FaceStage, decode_segment
from jobs.archive.shared_files import unreadable_on_workers
from pipelines.config import Settings
from pipelines.images import sha256_file
from pipelines.match import Gallery, Matcher
from pipelines.schemas import FACE_ROW_PER_FACE, Match, Sighting
from pipelines.sightings import FaceTable, best_row, decide_tracks, group_sightings
from pipelines.track import Tracker, TrackerConfig
from pipelines.video import VideoError, VideoInfo, find_videos, plan_segments

logger = logging.getLogger(__name__)

# FaceStage actors hold nothing that cannot be rebuilt (the models live in the pool), so an
# actor lost with its node (a worker node killed: fault 2 of issue 16) is started again
# elsewhere and its batch asked again; without this, Ray Data skipped the block
# (max_errored_blocks) and its file ended as "frames lost". A batch is asked again for as
# long as its actor is only unavailable (a dead node is declared dead after Ray's health
# checks, tens of seconds; a few quick retries ran out before that); the restarts are
# bounded, so an actor that dies of its own input does not loop, and frames of a block
# lost after that are reported as lost. Ray 2.60 has no named parameter for this yet and
# calls the keyword form deprecated (see _quiet_ray_warnings).
_RESTARTS: dict[str, Any] = {"max_restarts": 3, "max_task_retries": -1}
FACE_STAGE_MEMORY = 768 * 1024**2  # bytes each FaceStage actor asks Ray for
PROBE_TIMEOUT_S = 1800.0  # opening a file (PyAV counts a damaged file's frames by decoding it)


@dataclass
class FileError:
    path: str
    reason: str
    stage: str  # "open", "decode"
    frames_lost: int = 0

    def row(self) -> dict:
        return {
            "path": self.path,
            "stage": self.stage,
            "reason": self.reason,
            "frames_lost": self.frames_lost,
        }


@dataclass
class FileResult:
    path: str
    file_id: str
    info: VideoInfo
    frames: int = 0
    faces: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    matches: list[Match] = field(default_factory=list)
    sightings: list[Sighting] = field(default_factory=list)
    complete: bool = True  # every sampled frame was decoded and analysed


class PerFileResults:
    """A result made of per-file results (``files``, each with its sightings and
    matches): every sighting and every match, file by file."""

    files: list

    @property
    def sightings(self) -> list[Sighting]:
        return [s for f in self.files for s in f.sightings]

    @property
    def matches(self) -> list[Match]:
        return [m for f in self.files for m in f.matches]


@dataclass
class SearchResult(PerFileResults):
    files: list[FileResult]
    errors: list[FileError]
    wall_s: float
    video_s: float


@dataclass
class Progress:
    """Callbacks the CLI turns into a progress bar; all optional."""

    total: Callable[[int, int], None] = lambda files, frames: None
    advance: Callable[[int, int, int], None] = lambda frames, faces, matches: None
    file_done: Callable[[str], None] = lambda path: None
    # for metrics and the status page (jobs.archive.search_monitor): each finished file, and how
    # many files failed before their search began (could not be opened)
    file_result: Callable[[FileResult], None] = lambda result: None
    files_failed: Callable[[int], None] = lambda n: None


# (file, its faces in time order, their embeddings, JPEG crops, track ids)
FacesCallback = Callable[[FileResult, FaceTable, np.ndarray, list, np.ndarray], None]


STREAM_BLOCK_BYTES = 16 * 1024 * 1024


@dataclass
class _Pending:
    result: FileResult
    expected: int
    seen: int = 0  # frames accounted for: analysed or lost
    analysed: int = 0
    rows: dict[str, list] = field(default_factory=lambda: defaultdict(list))


class ArchiveSearch:
    def __init__(
        self,
        settings: Settings,
        gallery: Gallery,
        out_dir: Path,
        fps: float | None = None,
        progress: Progress | None = None,
        on_file: Callable[[FileResult, dict], None] | None = None,
        on_faces: FacesCallback | None = None,
        case: str = "",
        restore: Callable[[str, str, VideoInfo], FileResult | None] | None = None,
    ):
        self.settings = settings
        self.gallery = gallery
        self.case = case  # part of every match id (see archive_match_id)
        self.matcher = Matcher(gallery)
        self.out_dir = out_dir
        self.fps = fps or settings.search.fps
        self.progress = progress or Progress()
        self.on_file = on_file  # persists a finished file (matches to Milvus, thumbnails)
        # the face index (jobs/archive/index.py): every face of a file, with thumbnails and tracks
        self.on_faces = on_faces
        # a file completed by an earlier run of the same search (jobs/resume.py): its
        # stored result, or None to search it
        self.restore = restore
        self.restored: list[FileResult] = []
        self.pending: dict[str, _Pending] = {}
        # never from the thresholds: the same footage gives the same tracks at any threshold;
        # a track continues from the sampled frame just before (1.5 sampling intervals)
        self.tracker_config = TrackerConfig.for_embedder(
            gallery.embedder.name, near_s=1.5 / self.fps, max_gap_s=max(2.0, 3.0 / self.fps)
        )

    def _searchable(self, paths: list[Path]) -> tuple[list[Path], list[FileError]]:
        """The video files under ``paths`` that can be searched, and one error row for each
        that cannot: a name that is not UTF-8, or a file the decoding nodes cannot read as
        the driver does."""
        files, errors = [], []
        for p in find_videos(paths, self.settings.search.video_extensions):
            if _utf8(str(p)):
                files.append(p)
            else:  # decoders, Parquet and Milvus all need text: say so, search the rest
                shown = str(p).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                reason = "the file name is not valid UTF-8: rename the file to search it"
                errors.append(FileError(shown, reason, "open"))
        for path, reason in unreadable_on_workers(files, self.settings).items():
            files.remove(path)
            errors.append(FileError(str(path), reason, "open"))
        return files, errors

    # -- planning -------------------------------------------------------------------------
    def plan(self, paths: list[Path]) -> tuple[list[dict], dict[str, _Pending], list[FileError]]:
        import ray

        files, errors = self._searchable(paths)
        segments, pending = [], {}
        probes = [runtime.probe_remote(self.settings).remote(str(p)) for p in files]
        for path, ref in zip(files, probes, strict=True):
            try:
                info = ray.get(ref, timeout=PROBE_TIMEOUT_S)
            except VideoError as exc:
                errors.append(FileError(str(path), _reason(exc), "open"))
                continue
            except ray.exceptions.GetTimeoutError:  # a decoder stuck on a damaged file
                ray.cancel(ref, force=True)
                reason = f"opening it took over {PROBE_TIMEOUT_S:.0f} s (a stuck decoder?)"
                errors.append(FileError(str(path), reason, "open"))
                continue
            except ray.exceptions.RayError as exc:
                errors.append(
                    FileError(str(path), f"decoder crashed ({type(exc).__name__})", "open")
                )
                continue
            if info.backend == "pyav":
                lost = max(0, info.frames_declared - info.n_frames)
                errors.append(
                    FileError(
                        str(path),
                        f"damaged or truncated: searched the first {info.n_frames} "
                        f"frames ({info.duration_s:.1f}s) with PyAV",
                        "open",
                        lost,
                    )
                )
            file_id = sha256_file(path)
            if file_id in pending or self._restored(str(path), file_id, info):
                continue  # the same content under two names (searched once), or done before
            segs = plan_segments(info, file_id, self.fps, self.settings.search.segment_s)
            n = sum(len(s.frame_indices) for s in segs)
            pending[file_id] = _Pending(FileResult(str(path), file_id, info), n)
            segments += [
                {
                    "path": s.path,
                    "file_id": s.file_id,
                    "index": s.index,
                    "frame_indices": np.asarray(s.frame_indices, np.int64),
                    "fps": s.fps,
                    "backend": s.backend,  # "pyav" for damaged files decord cannot index
                }
                for s in segs
            ]
        return segments, pending, errors

    # -- running --------------------------------------------------------------------------
    def run(self, paths: list[Path], app_name: str) -> SearchResult:
        import ray.data

        t0 = time.perf_counter()
        segments, pending, errors = self.plan(paths)
        self.pending = pending  # files not finished yet (a failure names them)
        results = [p.result for p in pending.values()] + self.restored
        self.progress.total(len(pending), sum(p.expected for p in pending.values()))
        self.progress.files_failed(len({e.path for e in errors} - {r.path for r in results}))
        if segments:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            ctx.max_errored_blocks = -1  # one broken file must not fail the others
            # Small blocks, so frames stream from decoding to the pool a chunk at a time;
            # with the default (128 MiB) a whole segment is decoded before any face work
            # starts, and decoding and detection never overlap.
            ctx.target_max_block_size = STREAM_BLOCK_BYTES
            with _quiet_ray_warnings():
                ds = self._dataset(segments, app_name)
            try:
                with runtime.hide_ray_data_noise_if_pool_fails(app_name):
                    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                        self._consume(batch, pending)
            except Exception:
                # the pool may still have been loading when the job began (see
                # runtime.face_pool): if it failed, say so rather than how Ray Data broke
                runtime.check_pool_failed(app_name)
                raise
        for p in list(pending.values()):  # segments lost to crashed workers
            if p.seen < p.expected:
                p.result.complete = False
                errors.append(
                    FileError(
                        p.result.path, "frames lost in decoding", "decode", p.expected - p.seen
                    )
                )
            self._finish(p)
        files = sorted(results, key=lambda f: f.path)
        video_s = sum(f.info.duration_s for f in files)
        return SearchResult(files, errors, time.perf_counter() - t0, video_s)

    def _dataset(self, segments: list[dict], app_name: str):
        import ray.data

        chunk = self.settings.pool.archive_chunk_frames
        workers = dict(self.settings.placement.workers)
        return (
            ray.data.from_items(segments, override_num_blocks=len(segments))
            # One decoder by default: it reads a 720p segment's sampled frames many times
            # faster than a CPU pool analyses them, and more ran ahead, buffering up to
            # 4 GiB each and taking CPU from the pool (a 600 s 720p search: 72 s in-job,
            # 57 s with one). A GPU pool may need more (search.decoders).
            .map_batches(
                decode_segment,
                batch_size=1,
                num_cpus=0.25,
                resources=workers,  # decode on worker nodes, near the pool
                compute=ray.data.TaskPoolStrategy(size=self.settings.search.decoders),
            )
            .map_batches(
                FaceStage,
                fn_constructor_kwargs={
                    "app_name": app_name,
                    "gallery": self.gallery,
                    "crop_all": self.on_faces is not None,
                    "chunk": chunk,
                },
                batch_size=chunk * self.settings.pool.num_replicas,
                compute=ray.data.ActorPoolStrategy(size=self._stage_actors(len(segments))),
                num_cpus=0.1,
                resources=workers,
                # measured: up to about 440 MiB each (Python, Ray, numpy, the list in
                # memory); said up front with Ray's 25% headroom, so Ray places them
                # knowingly and does not warn mid-job
                memory=FACE_STAGE_MEMORY,
                **_RESTARTS,
            )
        )

    def _restored(self, path: str, file_id: str, info: VideoInfo) -> bool:
        if any(r.file_id == file_id for r in self.restored):
            return True
        res = self.restore(path, file_id, info) if self.restore is not None else None
        if res is not None:
            self.restored.append(res)
        return res is not None

    @staticmethod
    def _stage_actors(n_segments: int) -> int:
        """Two FaceStage actors, so one matches and encodes while the other waits on the
        pool (each keeps every replica busy by itself: it sends all its chunks at once);
        never more than there are segments, or Ray Data warns that some stay idle."""
        return max(1, min(2, n_segments))

    def _consume(self, batch: dict[str, np.ndarray], pending: dict[str, _Pending]) -> None:
        frames = faces = close = 0
        for i, kind in enumerate(batch["kind"]):
            p = pending[str(batch["file_id"][i])]
            if kind == "error":
                p.seen += int(batch["n_missing"][i])
                p.rows["errors"].append(str(batch["error"][i]))
                continue
            if kind == "frame":
                p.seen += 1
                p.analysed += 1
                frames += 1
                continue
            faces += 1
            close += int(batch["cand_margin"][i][0] >= 0)
            for k in FACE_ROW_PER_FACE:
                p.rows[k].append(batch[k][i])
        self.progress.advance(frames, faces, close)
        for fid in {str(f) for f in batch["file_id"]}:
            done = pending.get(fid)
            if done is not None and done.seen >= done.expected:
                self._finish(done)
                del pending[fid]

    # -- per file -------------------------------------------------------------------------
    def _finish(self, p: _Pending) -> None:
        res, rows = p.result, p.rows
        res.frames = p.analysed
        if rows.get("errors"):
            res.rejected["decode_error"] = len(rows["errors"])
            res.complete = False
        n = len(rows.get("t", []))
        res.faces = n
        if n:
            table, emb, crops = self._table(rows)
            reasons = np.asarray(rows["reason"], dtype=object)
            for r, c in zip(
                *np.unique(reasons[reasons != ""].astype(str), return_counts=True), strict=True
            ):
                res.rejected[str(r)] = int(c)
            self._decide(res, table, emb, crops)
        if self.on_file is not None:
            self.on_file(res, {"errors": rows.get("errors", [])})
        self.progress.file_done(res.path)
        self.progress.file_result(res)

    def _table(self, rows: dict[str, list]) -> tuple[FaceTable, np.ndarray, list[bytes]]:
        order = np.lexsort((np.asarray(rows["face_index"]), np.asarray(rows["frame_index"])))
        arr = {k: np.asarray(v) for k, v in rows.items() if k not in ("crop", "errors")}
        table = FaceTable(
            t=arr["t"][order],
            frame_index=arr["frame_index"][order],
            face_index=arr["face_index"][order],
            boxes=np.stack(rows["box"])[order],
            passed=arr["passed"][order].astype(bool),
            quality=arr["quality"][order],
            cand_person=np.stack(rows["cand_person"])[order],
            cand_score=np.stack(rows["cand_score"])[order],
            cand_margin=np.stack(rows["cand_margin"])[order],
        )
        emb = np.stack(rows["embedding"])[order]
        crops = [rows["crop"][i] for i in order]
        return table, emb, crops

    def _decide(self, res: FileResult, table: FaceTable, emb: np.ndarray, crops: list) -> None:
        tracker = Tracker(self.tracker_config)
        track_ids = np.zeros(len(table), np.int64)
        for f in np.unique(table.frame_index):
            rows = np.flatnonzero(table.frame_index == f)
            track_ids[rows] = tracker.update(
                float(table.t[rows[0]]), table.boxes[rows], emb[rows], table.passed[rows]
            )
        if self.on_faces is not None:
            self.on_faces(res, table, emb, crops, track_ids)
        verdicts = decide_tracks(
            table, track_ids, self.settings.search.top_n, self.matcher.review_gap
        )
        snapshot = self.gallery.snapshot_ids
        for v in verdicts:
            for r in v.faces:
                if not table.passed[r]:
                    continue
                m = self._match(res, table, r, v.person, v.track_id, crops[r], snapshot, emb[r])
                m.extra["tier"] = v.tier
                res.matches.append(m)
        for d in group_sightings(table, verdicts, self.settings.search.link_gap_s):
            b = best_row(table, d.rows, d.person)
            best = self._margin_score(table, b, d.person)
            person_id = self.matcher.person_ids[d.person]
            res.sightings.append(
                Sighting(
                    person_id=person_id,
                    person_name=self.matcher.person_names[d.person],
                    list_name=self.matcher.person_lists[d.person],
                    source_path=res.path,
                    source_id=res.file_id,
                    start_s=round(d.start_s, 3),
                    end_s=round(d.end_s, 3),
                    best_score=round(best, 4),
                    best_frame_s=round(float(table.t[b]), 3),
                    n_frames=len({int(table.frame_index[r]) for r in d.rows}),
                    thumbnail=archive_match_id(res.file_id, table, b, person_id, self.case),
                    watchlist_photo=self.matcher.person_photo[d.person],
                    track_ids=sorted(d.track_ids),
                    tier=d.tier,
                    threshold=round(float(self.matcher.person_threshold[d.person]), 4),
                    review_threshold=round(
                        float(self.matcher.person_review_threshold[d.person]), 4
                    ),
                    sighting_id=sighting_id(self.case, res.file_id, person_id, d.start_s, d.end_s),
                )
            )

    def _margin_score(self, table: FaceTable, r: int, person: int) -> float:
        hit = table.cand_person[r] == person
        return float(table.cand_score[r][hit][0]) if hit.any() else float("nan")

    def _match(self, res, table, r, person, track_id, crop, snapshot, emb) -> Match:
        list_name = self.matcher.person_lists[person]
        m = archive_match(
            res.file_id,
            res.path,
            table,
            r,
            (self.matcher.person_ids[person], self.matcher.person_names[person], list_name),
            self._margin_score(table, r, person),
            track_id,
            snapshot.get(list_name, ""),
            self.case,
        )
        m.extra["crop"] = crop
        m.extra["embedding"] = emb
        return m


@contextmanager
def _quiet_ray_warnings():
    """Only Ray's deprecation notice for the keyword form of ``_RESTARTS``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        yield


def archive_match(
    file_id: str,
    path: str,
    table: FaceTable,
    r: int,
    person: tuple[str, str, str],  # (person id, name, list)
    score: float,
    track_id: int,
    snapshot_id: str = "",
    case: str = "",
) -> Match:
    """The match of face ``r`` of ``table`` (a file's faces) with ``person``, with its
    deterministic id: a rerun of the same search produces the same rows."""
    person_id, person_name, list_name = person
    return Match(
        match_id=archive_match_id(file_id, table, r, person_id, case),
        person_id=person_id,
        person_name=person_name,
        list_name=list_name,
        score=round(float(score), 4),
        source="archive",
        source_id=file_id,
        source_path=path,
        frame_index=int(table.frame_index[r]),
        timestamp_s=round(float(table.t[r]), 3),
        box=_box(table.boxes[r]),
        track_id=int(track_id),
        face_index=int(table.face_index[r]),
        snapshot_id=snapshot_id,
    )


def sighting_id(case: str, file_id: str, person_id: str, start_s: float, end_s: float) -> str:
    """Deterministic: a rerun of the same search gives the same id, so a review decision
    stays attached to its sighting."""
    key = f"{case}:{file_id}:{person_id}:{start_s:.3f}:{end_s:.3f}"
    return "s_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a name os.fsdecode could only carry as surrogates
        return False
    return True


def archive_match_id(file_id: str, table: FaceTable, r: int, person_id: str, case: str) -> str:
    """Deterministic: the same face of the same file matched to the same person in the same
    case, same id. Another case gets its own row: it must not take over this case's record
    (its case reference, its retention clock)."""
    key = f"{file_id}:{int(table.frame_index[r])}:{int(table.face_index[r])}:{person_id}"
    if case:
        key += f":case={case}"
    return "m_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _reason(exc: VideoError) -> str:
    return exc.reason + (f": {exc.detail}" if exc.detail else "")


def _box(row: np.ndarray) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in row)
    return x1, y1, x2, y2
