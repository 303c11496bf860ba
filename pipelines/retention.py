"""Retention: delete what is due, per data class, from Milvus and from disk, and say so in
the audit log.

Data classes and what "due" means (periods in ``governance.retention``, in days; None keeps
that class):

- ``confirmed_alerts`` / ``rejected_alerts`` / ``pending_alerts``: live alerts
  (``fw_matches``, ``source == "live"``) by review status, older than the period since
  they were stored; their crops (``media/alerts``) and review-book rows go with them;
- ``archive_matches``: archive-search matches (``source == "archive"``) and their
  thumbnails (``media/matches``, and ``<out>/thumbs/<id>.jpg`` in every search output
  folder: those the audit log's ``export.search`` records name, and any given to ``run``);
- ``face_index``: the retrospective face index (``fw_faces``), by when it was indexed; its
  thumbnails too. A store without that collection is skipped;
- ``expired_entries``: people whose expiry date passed more than the period ago: their
  embeddings and photos are deleted exactly as ``watchlist rm`` does, their metadata kept.

Files are deleted only through ``Media`` (confined to ``<home>/media``) or, for output
folders, by name ``<dir>/thumbs/<id>.jpg`` checked to stay inside that folder. A dry run
counts and deletes nothing. ``facewatch serve`` calls ``run_retention`` on a timer.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pipelines.config import RetentionConfig
from pipelines.media import Media, MediaPathError
from pipelines.observe import emit
from pipelines.paths import resolved
from pipelines.status import write_last_retention
from pipelines.store import FACES, MATCHES, VectorStore
from pipelines.track_map import TrackMap
from pipelines.watchlist import Watchlists

logger = logging.getLogger(__name__)

BATCH = 16000  # rows per query: milvus-lite pays ~1-2 s per filtered query, whatever its size
DAY_S = 86400
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")

# data class -> (config field, collection, Milvus filter without the age condition)
MILVUS_CLASSES: dict[str, tuple[str, str, str]] = {
    "confirmed_alerts": (
        "confirmed_alerts_days",
        MATCHES,
        'source == "live" and status == "confirmed"',
    ),
    "rejected_alerts": (
        "rejected_alerts_days",
        MATCHES,
        'source == "live" and status == "rejected"',
    ),
    "pending_alerts": ("pending_alerts_days", MATCHES, 'source == "live" and status == "pending"'),
    "archive_matches": ("archive_matches_days", MATCHES, 'source == "archive"'),
    "face_index": ("face_index_days", FACES, ""),
}


@dataclass
class RetentionRun:
    dry_run: bool
    now: float
    deleted: dict[str, int] = field(default_factory=dict)  # rows (or people) per class
    files: dict[str, int] = field(default_factory=dict)  # files removed per class
    cutoffs: dict[str, str] = field(default_factory=dict)  # class -> "older than" (UTC date)
    skipped: dict[str, str] = field(default_factory=dict)  # class -> why

    def row(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "deleted": self.deleted,
            "files": self.files,
            "cutoffs": self.cutoffs,
            "skipped": self.skipped,
        }


def run_retention(
    lists: Watchlists,
    policy: RetentionConfig,
    actor: str,
    dry_run: bool = False,
    now: float | None = None,
    out_dirs: tuple[Path, ...] = (),
) -> RetentionRun:
    """Delete (or, dry, count) everything due; audited as ``retention.start`` before the
    first deletion and ``retention.run`` after, with what was deleted (also when the run
    fails part way: then with the error)."""
    run = RetentionRun(dry_run, time.time() if now is None else now)
    audit = lists.home.audit
    audit.check()  # a run that cannot be audited deletes nothing (a dry run counts nothing)
    if not dry_run:
        audit.append(actor, "retention.start", policy=policy.model_dump(mode="json"))
    try:
        _run_classes(lists, policy, actor, run, out_dirs)
    except Exception as exc:
        audit.append(actor, "retention.run", **run.row(), error=f"{type(exc).__name__}: {exc}")
        raise
    audit.append(actor, "retention.run", **run.row())
    if not dry_run:
        for data_class, n in run.deleted.items():
            emit("facewatch_retention_deletions", n, data_class=data_class)
        write_last_retention(lists.home.path, actor, run.row())
    logger.info("retention %s: %s", "dry run" if dry_run else "run", run.deleted)
    return run


def _run_classes(
    lists: Watchlists,
    policy: RetentionConfig,
    actor: str,
    run: RetentionRun,
    out_dirs: tuple[Path, ...],
) -> None:
    dry_run = run.dry_run
    store = lists.home.vectors()
    for name, (key, collection, where) in MILVUS_CLASSES.items():
        days = getattr(policy, key)
        if days is None:
            run.skipped[name] = "kept (no retention period)"
            continue
        if not store.client.has_collection(collection):
            run.skipped[name] = f"no {collection} collection"
            continue
        cutoff = int(run.now - days * DAY_S)
        run.cutoffs[name] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cutoff))
        age = _age_filter(store, collection, cutoff)
        flt = f"({where}) and ({age})" if where else age
        dirs = _export_dirs(lists, out_dirs) if name == "archive_matches" else ()
        run.deleted[name], run.files[name] = _purge(lists, collection, flt, dry_run, dirs)
        if collection == FACES and not dry_run:  # the faces' track map goes with them
            TrackMap(lists.home.catalog).expire(cutoff)
    _expired(lists, policy, actor, run)


def _age_filter(store: VectorStore, collection: str, cutoff: int) -> str:
    """Rows stored before ``cutoff``; the face index counts from ``indexed_at`` if it has it."""
    if collection == FACES:
        fields = {f["name"] for f in store.client.describe_collection(FACES).get("fields", [])}
        if "indexed_at" in fields:
            return (
                f"(indexed_at > 0 and indexed_at < {cutoff}) or "
                f"(indexed_at == 0 and created_at < {cutoff})"
            )
    return f"created_at < {cutoff}"


def _purge(
    lists: Watchlists, collection: str, flt: str, dry_run: bool, out_dirs: tuple[Path, ...]
) -> tuple[int, int]:
    """Delete matching rows batch by batch, their files first; (rows, files)."""
    store, media = lists.home.vectors(), lists.home.media
    if dry_run:  # files: the media files that would go (copies in output folders aside)
        return store.count(collection, flt), store.count(collection, f'({flt}) and thumbnail != ""')
    rows_done = files_done = 0
    seen: set[str] = set()
    emptied: set[Path] = set()  # output folders this run deleted face thumbnails from
    while True:
        rows = store.query(collection, flt, fields=["id", "thumbnail"], limit=BATCH)
        rows = [r for r in rows if r["id"] not in seen]
        if not rows:  # photo copies go where this run took the last face thumbnail away
            return rows_done, files_done + sum(delete_orphan_photos(d) for d in emptied)
        ids = [r["id"] for r in rows]
        for r in rows:
            files_done += _delete_media(media, r.get("thumbnail", ""))
            for d in out_dirs:
                if _delete_out_thumb(d, r["id"]):
                    files_done += 1
                    emptied.add(d)
        store.delete(collection, ids=ids)
        if collection == MATCHES:
            _forget_reviews(lists, ids)
        seen.update(ids)
        rows_done += len(ids)


def _export_dirs(lists: Watchlists, given: tuple[Path, ...]) -> tuple[Path, ...]:
    """Search output folders: those given, and those the audit log says searches wrote."""
    logged = [r["details"].get("out", "") for r in lists.home.audit.records(action="export.search")]
    dirs = {resolved(d) for d in [*given, *logged] if d}
    return tuple(sorted(d for d in dirs if (d / "thumbs").is_dir()))


def _delete_media(media: Media, rel: str) -> int:
    try:
        return int(media.delete(rel))
    except MediaPathError:
        logger.error("retention: refusing to delete %r (outside the media folder)", rel)
        return 0


def _delete_out_thumb(out_dir: Path, match_id: str) -> int:
    """``<out_dir>/thumbs/<id>.jpg``, only if that path stays inside ``out_dir``."""
    if not _SAFE_ID.match(match_id):
        return 0
    root = resolved(out_dir)
    path = resolved(root / "thumbs" / f"{match_id}.jpg")
    if not path.is_relative_to(root):
        return 0
    try:
        path.unlink()
        return 1
    except FileNotFoundError:
        return 0


def delete_orphan_photos(out_dir: Path) -> int:
    """The copies of watch-list and probe photos (``thumbs/list_*``) in a search output
    folder none of whose face thumbnails (``thumbs/m_*.jpg``) is left: they were there to
    be shown beside those faces. Only a real ``thumbs`` folder inside ``out_dir``."""
    root = resolved(out_dir)
    thumbs = root / "thumbs"
    if thumbs.is_symlink() or not resolved(thumbs).is_relative_to(root):
        return 0
    if any(thumbs.glob("m_*.jpg")):
        return 0
    n = 0
    for photo in thumbs.glob("list_*"):
        if photo.is_file() and not photo.is_symlink():
            photo.unlink()
            n += 1
    return n


def _forget_reviews(lists: Watchlists, ids: list[str]) -> None:
    """Drop the review-book rows of deleted alerts."""
    marks = ",".join("?" * len(ids))
    lists.catalog.db.execute(f"DELETE FROM live_alerts WHERE alert_id IN ({marks})", ids)


def _expired(lists: Watchlists, policy: RetentionConfig, actor: str, run: RetentionRun) -> None:
    days = policy.expired_entries_days
    if days is None:
        run.skipped["expired_entries"] = "kept (no retention period)"
        return
    today = time.gmtime(run.now)
    before = date(today.tm_year, today.tm_mon, today.tm_mday) - timedelta(days=days)
    run.cutoffs["expired_entries"] = f"expired before {before.isoformat()}"
    due = lists.catalog.rows(
        "SELECT p.person_id, COUNT(e.entry_id) AS photos FROM persons p "
        "LEFT JOIN entries e ON e.person_id = p.person_id AND e.thumbnail != '' "
        "WHERE p.removed_at IS NULL AND p.expires_on IS NOT NULL AND p.expires_on < ? "
        "GROUP BY p.person_id",
        before.isoformat(),
    )
    run.deleted["expired_entries"] = len(due)
    run.files["expired_entries"] = sum(int(p["photos"]) for p in due)
    if run.dry_run:
        return
    for p in due:
        lists.remove(p["person_id"], actor, reason=f"retention: expired before {before}")
