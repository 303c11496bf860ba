"""Everything around a search run: purpose checks, the gallery, thresholds, the audit trail,
and persisting each finished file (matches to Milvus, thumbnails to disk)."""

from __future__ import annotations

import errno
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from jobs.archive import runtime
from jobs.archive.report import link_media, render_report, write_outputs, write_summary
from jobs.archive.resume import CompletionBook, completion_body, search_key
from jobs.archive.search import ArchiveSearch, FileResult, Progress, SearchResult
from jobs.archive.search_monitor import monitored
from pipelines import observe
from pipelines.config import Settings
from pipelines.engine import EnrolmentError, FaceEngine
from pipelines.errors import EXIT_UNEXPECTED, FacewatchError
from pipelines.handoff import HandoffVectors
from pipelines.home import Home
from pipelines.match import Gallery
from pipelines.paths import resolved
from pipelines.schemas import EmbedderMismatchError
from pipelines.store import MATCHES, TEXT_LEN, StoreError, VectorStore
from pipelines.text import UnsafeTextError, check_text
from pipelines.video import find_videos
from pipelines.watchlist import WatchlistError, Watchlists
from serve.placement import check_store_for_cluster

logger = logging.getLogger(__name__)


class SetupError(FacewatchError, ValueError):
    """The search cannot start as asked (exit code 2)."""


class StoreDownError(FacewatchError, RuntimeError):
    """The store stayed unreachable past ``search.store_retry_s``: the search stops (exit
    code 1); ``files`` are those whose matches are not stored (a rerun completes them)."""

    exit_code = EXIT_UNEXPECTED
    http_status = 503

    def __init__(self, cause: str, waited_s: float):
        super().__init__(cause)
        self.cause, self.waited_s = cause, waited_s
        self.files: list[str] = []

    def __str__(self) -> str:
        """Which files' matches are not stored, and how to finish them."""
        names = "\n".join(f"  {p}" for p in self.files) or "  (none)"
        return (
            f"the store was unreachable for {self.waited_s:.0f} s (search.store_retry_s): "
            f"{self.cause}\nthe search stopped; the matches of these files are NOT stored:\n"
            f"{names}\nrerun the same command once the store is back: files already complete "
            "are skipped, these are searched"
        )


class DiskFullError(FacewatchError, RuntimeError):
    """The disk under the home (or the output folder) is full: the search stops (exit code
    1) with the files whose matches are not stored named; a rerun with room completes
    them (the files recorded complete before are skipped)."""

    exit_code = EXIT_UNEXPECTED
    http_status = 507

    def __init__(self, cause: str, path: str):
        super().__init__(cause)
        self.cause, self.files = cause, [path]

    def __str__(self) -> str:
        names = "\n".join(f"  {p}" for p in self.files)
        return (
            f"no space left to store the search's results ({self.cause})\nthe search stopped; "
            f"the matches of these files are NOT stored:\n{names}\nfree space and rerun the "
            "same command: files already complete are skipped, these are searched"
        )


def disk_full(exc: BaseException) -> bool:
    """An OSError for a full disk or quota, or SQLite's "database or disk is full"."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc)


def write_retrying(write, retry_s: float, path: str) -> None:
    """``write()``, retried with capped exponential backoff while the store is unreachable,
    for up to ``retry_s``; then StoreDownError. Writes are upserts by deterministic id, so
    a retried write that had in fact landed adds nothing."""
    import grpc  # imported here: the CLI sets gRPC's environment before anything loads it
    from pymilvus.exceptions import MilvusException

    # what pymilvus raises while a server is unreachable (refused, deadline exceeded)
    down = (MilvusException, grpc.RpcError, ConnectionError, TimeoutError)
    started, delay = time.monotonic(), 0.5
    while True:
        try:
            write()
            return
        except down as exc:
            waited = time.monotonic() - started
            cause = f"{type(exc).__name__}: {str(exc)[:200]}"
            if waited + delay > retry_s:
                raise StoreDownError(cause, waited) from exc
            logger.warning(
                "storing the matches of %s failed (%s); again in %.1f s", path, cause, delay
            )
            observe.emit("facewatch_store_write_retries", 1, collection=MATCHES)
            time.sleep(delay)  # the store is down: nothing to wait on but time
            delay = min(delay * 2, 15.0)


@dataclass
class SearchSetup:
    settings: Settings
    paths: list[Path]
    gallery: Gallery
    home: Home
    actor: str
    case: str
    reason: str
    target: str  # "list:NAME", "all lists" or "probe:HASH,..."
    resumed: list[str] = field(default_factory=list)  # files done by an earlier run
    # set: the server holds the store; matches go to it through this folder
    handoff: HandoffVectors | None = None

    @classmethod
    def prepare(
        cls,
        settings: Settings,
        paths: list[Path],
        list_name: str | None,
        probes: list[Path],
        threshold: float | None,
        case: str | None,
        reason: str | None,
        actor: str,
        warn: Callable[[str], None],
        review_threshold: float | None = None,
        handoff: Path | None = None,
    ) -> SearchSetup:
        relaxed = check_purpose(settings, case, reason)
        if probes and list_name is not None:
            raise SetupError("give either --list or --probe, not both")
        check_numbers(threshold=threshold)
        check_numbers(threshold=review_threshold)
        engine = runtime.local_engine(settings)
        home, vectors = _open_home(settings, engine, handoff)
        try:
            if probes:
                gallery, target = probe_gallery(engine, probes, threshold, review_threshold)
            else:
                e = engine.embedder
                lists = Watchlists(
                    home, engine.info, e.default_threshold, e.default_review_threshold
                )
                gallery, target = _list_gallery(
                    lists, list_name, (threshold, review_threshold), actor, warn
                )
        except Exception:
            home.close()
            raise
        home.audit.append(
            actor,
            "search",
            case=case or "",
            reason=reason or "",
            purpose_relaxed=relaxed,
            target=target,
            paths=[str(resolved(p)) for p in paths],
            snapshots=gallery.snapshot_ids,
            probe_sha256=list(gallery.entry_ids) if probes else [],
            threshold_override=threshold,
            review_threshold_override=review_threshold,
            thresholds=_threshold_range(gallery.thresholds),
            review_thresholds=_threshold_range(gallery.review_thresholds),
        )
        return cls(settings, paths, gallery, home, actor, case or "", reason or "", target,
                   handoff=vectors)  # fmt: skip

    def run(
        self, out: Path, fps: float | None, ray_address: str | None, progress: Progress
    ) -> SearchResult:
        out.mkdir(parents=True, exist_ok=True)
        (out / "thumbs").mkdir(exist_ok=True)
        # results and face thumbnails leave the store for this folder: an export, audited
        self.home.audit.append(
            self.actor, "export.search", case=self.case, target=self.target, out=str(out.resolve())
        )
        key = search_key(self.settings, self.gallery, self.case, self.target, fps, out)
        book = CompletionBook(self.home.catalog, key)
        self.resumed = book.skipped
        local = runtime.start_ray(ray_address, self.settings)
        # this driver writes the store, from the home's node: milvus-lite on a cluster
        # only if the config pins writers there (serve/placement.py)
        logger.info(check_store_for_cluster(self.settings, dict(self.settings.placement.home)))
        # A pool started in a Ray that ends with this process goes with it: no need to
        # wait for Serve to take it down first.
        pool = runtime.face_pool(self.settings, self.gallery.embedder, cleanup=not local)
        with pool as app, monitored(self.home.path, progress) as watched:
            job = ArchiveSearch(
                self.settings,
                self.gallery,
                out,
                fps,
                watched,
                on_file=lambda res, _extra: self._persist(res, out, book),
                case=self.case,
                restore=book.restorer(),
            )
            try:
                return job.run(self.paths, app)
            except StoreDownError as exc:
                exc.files = sorted(p.result.path for p in job.pending.values())
                raise
            except DiskFullError as exc:
                exc.files = sorted({*exc.files, *(p.result.path for p in job.pending.values())})
                raise

    def _persist(self, res: FileResult, out: Path, book: CompletionBook) -> None:
        """The file's matches to the store and thumbnails to disk, then (only then) its
        completion record, so a rerun of this search skips it. Handed off, the server
        stores them and writes the record (pipelines/handoff.py). A full disk stops the
        search (DiskFullError): this file gets no completion record."""
        try:
            if self.handoff is not None:
                rows = self._rows(res, out)
                self.handoff.hand_off(book.key, res.file_id, res.path, rows, completion_body(res))
                return
            self._store(res, out)
            book.record(res)
        except (OSError, sqlite3.OperationalError) as exc:
            if not disk_full(exc):
                raise
            raise DiskFullError(f"{type(exc).__name__}: {exc}", res.path) from exc

    def _store(self, res: FileResult, out: Path) -> None:
        """The file's matches to the store (retried while it is unreachable)."""
        rows = self._rows(res, out)
        if rows:
            write_retrying(
                lambda: self.home.vectors().upsert_matches(rows),
                self.settings.search.store_retry_s,
                res.path,
            )

    def _rows(self, res: FileResult, out: Path) -> list[dict]:
        """The file's matches as store rows; their thumbnails to disk and the home's media."""
        rows = []
        for m in res.matches:
            crop = m.extra.pop("crop", b"")
            emb = m.extra.pop("embedding")
            if crop:
                (out / "thumbs" / f"{m.match_id}.jpg").write_bytes(crop)
                m.thumbnail = self.home.media.save("matches", m.match_id, crop)
            row = m.row()
            row["status"] = row.pop("extra").get("tier", "sighting")  # archive: the tier
            row["embedding"] = np.asarray(emb, np.float32)
            row["case_ref"] = self.case
            rows.append(row)
        return rows

    def summary(self, result: SearchResult) -> dict:
        return {
            "case": self.case or "(none)",
            "searched for": self.target,
            "files searched": len(result.files),
            "files failed": len(result.errors),
            "files resumed": len(self.resumed),
            "video": f"{result.video_s:.1f}s",
            "frames analysed": sum(f.frames for f in result.files),
            "faces": sum(f.faces for f in result.files),
            "faces rejected by quality": sum(sum(f.rejected.values()) for f in result.files),
            "matched faces": len(result.matches),
            **_tier_counts(result),
            "wall time": f"{result.wall_s:.1f}s",
            "speed": f"{result.video_s / max(result.wall_s, 1e-9):.2f} video-s per s",
        }

    def numbers(self, result: SearchResult) -> dict:
        """The summary as numbers (summary.json)."""
        return {
            "case": self.case,
            "target": self.target,
            "files": len(result.files),
            "files_failed": len(result.errors),
            "files_resumed": len(self.resumed),
            "video_s": round(result.video_s, 3),
            "frames": sum(f.frames for f in result.files),
            "faces": sum(f.faces for f in result.files),
            "rejected": sum(sum(f.rejected.values()) for f in result.files),
            "matches": len(result.matches),
            **_tier_counts(result),
            "thresholds": _threshold_range(self.gallery.thresholds),
            "review_thresholds": _threshold_range(self.gallery.review_thresholds),
            "wall_s": round(result.wall_s, 3),
        }

    def write_outputs(self, result: SearchResult, out: Path) -> tuple[dict, Path]:
        """The search's outputs in ``out``: media linked, the sightings, matches and
        errors tables, ``summary.json`` and the HTML report. Returns the summary (for
        people) and the report's path."""
        link_media(result.sightings, out)
        errors = [e.row() for e in result.errors]
        write_outputs(out, result.sightings, result.matches, errors)
        summary = self.summary(result)
        write_summary(out, self.numbers(result))
        return summary, render_report(out, result.sightings, summary, errors)

    def close(self) -> None:
        self.home.close()


def _open_home(
    settings: Settings, engine: FaceEngine, handoff: Path | None
) -> tuple[Home, HandoffVectors | None]:
    """The home with its store; with ``handoff``, the store the server holds is reached
    through that folder instead (pipelines/handoff.py)."""
    try:
        if handoff is None:
            return Home.open(settings, engine.info), None
        home = Home.open(settings)
    except (StoreError, EmbedderMismatchError) as exc:
        raise SetupError(str(exc)) from None
    # duck-typed: the gallery's vector look-up is all the search asks of the store here
    vectors = HandoffVectors(handoff)
    home.store = cast(VectorStore, vectors)
    return home, vectors


def check_numbers(fps: float | None = None, threshold: float | None = None) -> None:
    """--fps and --threshold as numbers a search can use (click lets ``nan`` through)."""
    if fps is not None and not (math.isfinite(fps) and 0 < fps <= 120):
        raise SetupError(f"--fps must be a number of frames per second in (0, 120], not {fps}")
    if threshold is not None and not (math.isfinite(threshold) and -1 <= threshold <= 1):
        raise SetupError(f"--threshold is a cosine similarity between -1 and 1, not {threshold}")


def check_videos(paths: list[Path], settings: Settings) -> None:
    """Something to search: every path exists, and folders that hold no video with a known
    extension are a mistake to say, not an empty success after starting Ray."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SetupError(f"no such file or folder: {', '.join(missing)}")
    if not find_videos(paths, settings.search.video_extensions):
        exts = " ".join(settings.search.video_extensions)
        raise SetupError(
            f"no video files found in {', '.join(map(str, paths))} (looked for {exts}; "
            "set search.video_extensions for others)"
        )


def check_purpose(settings: Settings, case: str | None, reason: str | None) -> bool:
    try:
        check_text(case, "--case")
        check_text(reason, "--reason", free_text=True)
    except UnsafeTextError as exc:
        raise SetupError(str(exc)) from None
    if case is not None and len(case.encode()) > TEXT_LEN:  # the store counts UTF-8 bytes
        raise SetupError(f"--case may have at most {TEXT_LEN} bytes (UTF-8)")
    if settings.governance.require_case:
        if not (case and case.strip()) or not (reason and reason.strip()):
            raise SetupError(
                "a search needs a purpose: give --case REF and --reason TEXT "
                "(governance.require_case is on; drills may relax it in config, and that "
                "is recorded in the audit log)"
            )
        return False
    return True


def _tier_counts(result: SearchResult) -> dict[str, int]:
    tiers = [s.tier for s in result.sightings]
    return {"sightings": tiers.count("sighting"), "candidates": tiers.count("candidate")}


def _threshold_range(values: np.ndarray | None) -> list[float] | None:
    """[lowest, highest] threshold in force (per-person thresholds differ), for the audit."""
    if values is None or len(values) == 0:
        return None
    return [round(float(values.min()), 4), round(float(values.max()), 4)]


def probe_gallery(
    engine: FaceEngine,
    probes: list[Path],
    threshold: float | None,
    review_threshold: float | None = None,
):
    """The gallery of one person from probe photos, with both tiers: the embedder's
    defaults unless overridden (audited with the search)."""
    try:
        faces = engine.load(warmup=False).probe_faces(probes)
    except EnrolmentError as exc:
        raise SetupError(str(exc)) from None
    e = engine.embedder
    thr = threshold if threshold is not None else e.default_threshold
    if review_threshold is not None:
        review = review_threshold
    else:
        review = min(thr, e.default_review_threshold or thr)
    if review > thr:
        raise SetupError(
            f"--review-threshold {review} lies above the alert threshold {thr}; the review "
            "tier is the lower one"
        )
    gallery = Gallery(
        embeddings=np.stack([f.embedding for f in faces]),
        entry_ids=[f.sha256 for f in faces],
        person_ids=["probe"] * len(faces),
        person_names=[Path(faces[0].path).stem] * len(faces),
        list_names=["probe"] * len(faces),
        photos=[str(Path(f.path).resolve()) for f in faces],
        embedder=engine.info,
        thresholds=np.full(len(faces), thr, np.float32),
        review_thresholds=np.full(len(faces), review, np.float32),
    )
    return gallery, "probe:" + ",".join(f.sha256[:12] for f in faces)


def _list_gallery(lists: Watchlists, list_name, overrides, actor, warn):
    threshold, review_threshold = overrides
    try:
        gallery = lists.active_gallery(
            list_name,
            override=threshold,
            actor=actor,
            warn=warn,
            review=True,
            review_override=review_threshold,
        )
    except WatchlistError as exc:
        raise SetupError(str(exc)) from None
    if len(gallery) == 0:
        where = f"list '{list_name}'" if list_name else "any watch list"
        raise SetupError(f"no active entries in {where}; enrol people: facewatch watchlist add")
    return gallery, f"list:{list_name}" if list_name else "all lists"
