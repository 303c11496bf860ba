"""Watch lists: enrolment, removal, snapshots, and the in-memory gallery for matching.

Rules:
- enrolment is all or nothing: every photo must hold exactly one usable face (the engine
  checks; see ``FaceEngine.probe_faces``), and each entry records who added it, when, and
  the photo's content hash;
- expired and removed people are never in a gallery; a removed person's embeddings and
  photos are deleted at once, their metadata kept for the record;
- every membership change bumps the list's version; a snapshot id names exactly who was on
  the list, and is recorded with every match and alert.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, cast

import numpy as np

from pipelines.catalog import new_id, today, utcnow
from pipelines.engine import ProbeFace
from pipelines.errors import FacewatchError
from pipelines.home import Home
from pipelines.images import encode_jpeg
from pipelines.match import Gallery
from pipelines.schemas import (
    CalibrationRecord,
    EmbedderInfo,
    ListRow,
    ListView,
    PersonRow,
    ReviewTierRecord,
)
from pipelines.store import TEXT_LEN, WATCHLIST
from pipelines.text import UnsafeTextError, check_text

CATEGORIES = ("wanted", "missing", "suspect", "other")


class WatchlistError(FacewatchError, ValueError):
    """A watch-list operation was refused; the message says why."""


def check_list_name(list_name: str) -> None:
    """A list name is non-empty printable text of at most TEXT_LEN bytes in UTF-8."""
    if not list_name or not list_name.strip():
        raise WatchlistError("a watch list needs a name (--list NAME)")
    checked(list_name, "a list name")
    if len(list_name.encode()) > TEXT_LEN or not list_name.isprintable():
        raise WatchlistError(f"a list name is printable text of at most {TEXT_LEN} bytes (UTF-8)")


def checked(value: str | None, what: str, free_text: bool = False) -> str | None:
    """``pipelines.text.check_text`` as a WatchlistError."""
    try:
        return check_text(value, what, free_text)
    except UnsafeTextError as exc:
        raise WatchlistError(str(exc)) from None


def _calibration(row: ListRow | None) -> CalibrationRecord | None:
    return row.get("calibration") if row else None


def _review_tier(row: ListRow | None) -> ReviewTierRecord | None:
    calibration = _calibration(row)
    return calibration.get("review") if calibration else None


def _images(faces: list[ProbeFace]) -> list[dict[str, str]]:
    """The photos of an enrolment as the audit log records them."""
    return [{"file": f.path.rsplit("/", 1)[-1], "sha256": f.sha256} for f in faces]


def expected_fpir(calibration: CalibrationRecord | None, threshold: float) -> float | None:
    """FPIR the calibration measured at ``threshold`` (interpolated), if it recorded a curve."""
    curve = calibration.get("curve") if calibration else None
    if not curve:
        return None
    t, f = np.asarray(curve, float).T
    order = np.argsort(t)
    return float(np.interp(threshold, t[order], f[order]))


def expected_fpir_at_size(
    calibration: CalibrationRecord | None, threshold: float, size: int
) -> float | None:
    """FPIR expected at ``threshold`` for a list of ``size`` people.

    A calibration measures FPIR on a list of ``list_size`` people. With independent false
    matches each person adds the same small chance p, FPIR(n) = 1 - (1 - p)^n, so
    FPIR(size) = 1 - (1 - FPIR(list_size))^(size / list_size). None without a calibration
    curve; the measured value unscaled when the calibration did not record its list size.
    """
    fpir = expected_fpir(calibration, threshold)
    n0 = calibration.get("list_size") if calibration else None
    if fpir is None or not n0 or size <= 0:
        return fpir
    return float(1.0 - (1.0 - min(fpir, 1.0)) ** (size / float(n0)))


class Watchlists:
    def __init__(
        self,
        home: Home,
        embedder: EmbedderInfo,
        default_threshold: float,
        default_review_threshold: float | None = None,
    ):
        self.home = home
        self.catalog = home.catalog
        self.embedder = embedder
        self.default_threshold = default_threshold
        # None: the embedder has no measured review tier; candidates then need the alert one
        self.default_review_threshold = default_review_threshold

    # -- enrolment ------------------------------------------------------------------------
    def add(
        self,
        name: str,
        faces: list[ProbeFace],
        actor: str,
        list_name: str = "default",
        category: str = "other",
        reason: str = "",
        expires_on: date | None = None,
        authorised_by: str | None = None,
        minor: bool = False,
        image_source: str | None = None,
        warn: Callable[[str], None] | None = None,
        person_id: str | None = None,
    ) -> str:
        """Enrol a new person; ``person_id`` None: a fresh id (a bulk import derives its own,
        see ``pipelines.manifest.person_id_for``, and must not reuse one)."""
        self._check_add(name, faces, list_name, category, expires_on, minor)
        checked(reason, "a reason", free_text=True)
        checked(authorised_by, "--authorised-by")
        checked(image_source, "an image source")
        self._check_size(list_name, warn)
        self.home.audit.check()  # fail before any photo or vector is written
        person_id = person_id or new_id("p")
        person = {
            "person_id": person_id,
            "list_name": list_name,
            "name": name,
            "category": category,
            "reason": reason,
            "authorised_by": authorised_by,
            "added_by": actor,
            "expires_on": expires_on.isoformat() if expires_on else None,
            "minor": minor,
            "image_source": image_source,
        }

        def before(db: sqlite3.Connection) -> None:
            self.catalog.ensure_list(list_name, actor)
            _insert_person(db, person)

        audit = functools.partial(self._audit_add, person, faces)
        self._write_entries(person_id, list_name, faces, before, audit)
        return person_id

    def add_photos(
        self, person_id: str, faces: list[ProbeFace], actor: str, reason: str
    ) -> list[str]:
        """More photos of a person already on a list (a bulk import run again with new
        photos). Audited as ``watchlist.add_photos``; all or nothing, as ``add``. Returns
        the new entry ids."""
        checked(reason, "a reason", free_text=True)
        person = self.catalog.row("SELECT * FROM persons WHERE person_id = ?", person_id)
        if person is None or person["removed_at"]:
            raise WatchlistError(f"no active person {person_id} to add photos to")
        if not faces:
            raise WatchlistError("adding photos needs at least one photo")
        self.home.audit.check()
        list_name = person["list_name"]

        def audit() -> None:
            self.home.audit.append(
                actor,
                "watchlist.add_photos",
                person_id=person_id,
                list=list_name,
                reason=reason,
                images=_images(faces),
            )

        return self._write_entries(person_id, list_name, faces, lambda _db: None, audit)

    def _write_entries(
        self,
        person_id: str,
        list_name: str,
        faces: list[ProbeFace],
        before: Callable[[Any], None],
        audit: Callable[[], None],
    ) -> list[str]:
        """Store the faces' vectors and thumbnails, then, in one catalog transaction,
        ``before(db)``, their entries, a version bump and ``audit()``: no record, no
        enrolment. On any failure nothing is left behind. Returns the entry ids."""
        store = self.home.vectors()
        entries = [(new_id("e"), f) for f in faces]
        thumbs = [
            self.home.media.save("watchlist", eid, encode_jpeg(f.thumbnail)) for eid, f in entries
        ]
        rows = _vector_rows(entries, person_id, list_name)
        stored = False
        try:
            store.upsert(WATCHLIST, rows)
            stored = True
            with self.catalog.transaction() as db:
                before(db)
                _insert_entries(db, person_id, entries, thumbs)
                self.catalog.bump_version(list_name)
                audit()  # in the transaction: no record, no enrolment
        except BaseException:  # nobody half-enrolled: no vectors, no photos left behind
            if stored:  # (a store that refused the write may be gone: do not ask it again)
                store.delete(WATCHLIST, ids=[eid for eid, _ in entries])
            for t in thumbs:
                self.home.media.delete(t)
            raise
        return [eid for eid, _ in entries]

    def _audit_add(self, person: dict[str, Any], faces: list[ProbeFace]) -> None:
        self.home.audit.append(
            person["added_by"],
            "watchlist.add",
            person_id=person["person_id"],
            name=person["name"],
            list=person["list_name"],
            category=person["category"],
            reason=person["reason"],
            authorised_by=person["authorised_by"],
            expires_on=person["expires_on"],
            minor=person["minor"],
            image_source=person["image_source"],
            images=_images(faces),
        )

    def people_entries(self, list_name: str) -> list[dict[str, Any]]:
        """The active entries (photos) of a list."""
        check_list_name(list_name)
        return self._active_entries(list_name, None)

    def reembed(
        self, list_name: str, faces: dict[str, ProbeFace], actor: str, reason: str
    ) -> dict[str, list[str]]:
        """Replace the embeddings of a list's photos with new ones of the same photos.

        ``faces`` maps a photo's sha256 to its face embedded as enrolment now does; entries
        are found by content hash, so nobody can be re-embedded from another photo. The
        act is audited before any vector changes. Returns entry ids: ``reembedded`` and
        ``missing`` (no photo given with that hash; left as they were).
        """
        if not reason.strip():
            raise WatchlistError("re-embedding changes who is found: give --reason")
        check_list_name(list_name)
        entries = self._active_entries(list_name, None)
        if not entries:
            raise WatchlistError(f"list '{list_name}' has no active entries")
        found = [e for e in entries if e["image_sha256"] in faces]
        missing = [e["entry_id"] for e in entries if e["image_sha256"] not in faces]
        if not found:
            raise WatchlistError(
                f"none of the {len(entries)} photos of list '{list_name}' was given "
                "(photos are matched by content, not name)"
            )
        self.home.audit.append(
            actor,
            "watchlist.reembed",
            list=list_name,
            reason=reason,
            entries=[e["entry_id"] for e in found],
            modes={e["entry_id"]: faces[e["image_sha256"]].embedding_mode for e in found},
            missing=missing,
        )
        now = int(time.time())
        rows = [
            {
                "id": e["entry_id"],
                "embedding": faces[e["image_sha256"]].embedding,
                "person_id": e["person_id"],
                "list_name": list_name,
                "created_at": now,
            }
            for e in found
        ]
        self.home.vectors().upsert(WATCHLIST, rows)
        with self.catalog.transaction() as db:
            for e in found:
                f = faces[e["image_sha256"]]
                db.execute(
                    "UPDATE entries SET embedding_mode = ?, borderline = ? WHERE entry_id = ?",
                    (f.embedding_mode, ",".join(f.borderline), e["entry_id"]),
                )
            self.catalog.bump_version(list_name)
        return {"reembedded": [e["entry_id"] for e in found], "missing": missing}

    def size_cap(self, list_row: ListRow | None) -> int:
        """The list's own cap, else ``governance.max_list_size``."""
        if list_row and list_row["size_cap"]:
            return int(list_row["size_cap"])
        return self.home.settings.governance.max_list_size

    def _check_size(self, list_name: str, warn: Callable[[str], None] | None) -> None:
        """Refuse past the list's cap; warn with the expected FPIR at the new size."""
        lst = self.catalog.get_list(list_name)
        size = self.active_people(list_name) + 1
        thr, _ = self.threshold(lst)
        calibration = _calibration(lst)
        fpir = expected_fpir_at_size(calibration, thr, size)
        expect = (
            f"expected FPIR at {size} people: {fpir:.3%} at threshold {thr:.3f}"
            if fpir is not None
            else "no calibration: FPIR at this size is unknown"
        )
        cap = self.size_cap(lst)
        if size > cap:
            raise WatchlistError(
                f"list '{list_name}' is at its size cap of {cap} active people; {expect}. "
                "An admin may raise the cap: facewatch watchlist policy --size-cap"
            )
        n0 = calibration.get("list_size") if calibration else None
        if warn is not None and fpir is not None and n0 and size > int(n0):
            warn(f"list '{list_name}' grows past its calibrated size ({n0} people); {expect}")

    def active_people(self, list_name: str, at: date | None = None) -> int:
        """People neither removed nor expired on ``at`` (as ``_status`` says), counted by
        SQLite: each enrolment asks, so a bulk import of thousands must not read them all."""
        row = self.catalog.row(
            "SELECT COUNT(*) AS n FROM persons WHERE list_name = ? AND removed_at IS NULL "
            "AND (expires_on IS NULL OR expires_on >= ?)",
            list_name,
            (at or today()).isoformat(),
        )
        return int(row["n"]) if row else 0

    def set_policy(
        self,
        list_name: str,
        actor: str,
        size_cap: int | None = None,
        allow_minors: bool | None = None,
    ) -> ListRow:
        """Change a list's size cap or whether it may hold minors (audited)."""
        check_list_name(list_name)
        if size_cap is not None and size_cap < 1:
            raise WatchlistError("the size cap must be at least 1")
        changes: dict[str, Any] = {}
        if size_cap is not None:
            changes["size_cap"] = size_cap
        if allow_minors is not None:
            changes["allow_minors"] = int(allow_minors)
        if not changes:
            raise WatchlistError("nothing to change: give --size-cap or --allow-minors")
        with self.catalog.transaction():
            before = self.catalog.ensure_list(list_name, actor)
            self.catalog.update_list(list_name, **changes)
            after = self.catalog.get_list(list_name)
            assert after is not None
            thr, _ = self.threshold(after)
            self.home.audit.append(  # in the transaction: no record, no change
                actor,
                "watchlist.policy",
                list=list_name,
                before={k: dict(before)[k] for k in changes},
                after={k: dict(after)[k] for k in changes},
                expected_fpir_at_cap=expected_fpir_at_size(
                    after.get("calibration"), thr, self.size_cap(after)
                ),
            )
        return after

    def _check_add(
        self,
        name: str,
        faces: list[ProbeFace],
        list_name: str,
        category: str,
        expires_on: date | None,
        minor: bool,
    ) -> None:
        if not name.strip():
            raise WatchlistError("a person needs a name")
        checked(name, "a person's name")
        check_list_name(list_name)
        if len(name.encode()) > TEXT_LEN:  # the store counts UTF-8 bytes
            raise WatchlistError(f"a name may have at most {TEXT_LEN} bytes (UTF-8)")
        if not faces:
            raise WatchlistError("enrolment needs at least one photo")
        if category not in CATEGORIES:
            raise WatchlistError(f"category must be one of {', '.join(CATEGORIES)}")
        if expires_on is not None and expires_on < today():
            raise WatchlistError(f"expiry date {expires_on} is in the past")
        lst = self.catalog.get_list(list_name)
        if minor and not (lst and lst["allow_minors"]):
            raise WatchlistError(
                f"list '{list_name}' does not allow minors; an admin must allow it explicitly"
            )

    def remove(self, person_id: str, actor: str, reason: str = "") -> dict[str, Any]:
        checked(reason, "a reason", free_text=True)
        person = self.catalog.row("SELECT * FROM persons WHERE person_id = ?", person_id)
        if person is None:
            raise WatchlistError(f"no such person: {person_id}")
        if person["removed_at"]:
            raise WatchlistError(f"{person_id} was already removed on {person['removed_at']}")
        entries = self.catalog.rows("SELECT * FROM entries WHERE person_id = ?", person_id)
        self.home.audit.check()  # fail before any vector or photo is deleted
        self.home.vectors().delete(WATCHLIST, ids=[e["entry_id"] for e in entries])
        for e in entries:
            self.home.media.delete(e["thumbnail"])
        with self.catalog.transaction() as db:
            db.execute(
                "UPDATE persons SET removed_at = ?, removed_by = ? WHERE person_id = ?",
                (utcnow(), actor, person_id),
            )
            db.execute("UPDATE entries SET thumbnail = '' WHERE person_id = ?", (person_id,))
            self.catalog.bump_version(person["list_name"])
            self.home.audit.append(
                actor,
                "watchlist.remove",
                person_id=person_id,
                name=person["name"],
                list=person["list_name"],
                reason=reason,
                images=[e["image_sha256"] for e in entries],
            )
        return person

    # -- reading --------------------------------------------------------------------------
    def people(
        self, list_name: str | None = None, include_removed: bool = False
    ) -> list[PersonRow]:
        sql = (
            "SELECT p.*, COUNT(e.entry_id) AS images, "
            "COALESCE(SUM(e.embedding_mode != 'tta6'), 0) AS images_single_pass, "
            "COALESCE(GROUP_CONCAT(NULLIF(e.borderline, '')), '') AS borderline "
            "FROM persons p LEFT JOIN entries e ON e.person_id = p.person_id WHERE 1=1"
        )
        args: list[Any] = []
        if list_name:
            sql += " AND p.list_name = ?"
            args.append(list_name)
        if not include_removed:
            sql += " AND p.removed_at IS NULL"
        rows = self.catalog.rows(sql + " GROUP BY p.person_id ORDER BY p.created_at", *args)
        for r in rows:
            r["status"] = self._status(r)
        return cast(list[PersonRow], rows)

    @staticmethod
    def _status(person: Mapping[str, Any], at: date | None = None) -> str:
        if person["removed_at"]:
            return "removed"
        if person["expires_on"] and date.fromisoformat(person["expires_on"]) < (at or today()):
            return "expired"
        return "active"

    def threshold(self, list_row: ListRow | None) -> tuple[float, str]:
        if list_row and list_row["threshold"] is not None:
            return float(list_row["threshold"]), list_row["threshold_source"]
        return self.default_threshold, f"{self.embedder.name} default"

    def review_threshold(self, list_row: ListRow | None) -> tuple[float, str]:
        """The review tier's threshold of a list (never above its alert threshold)."""
        alert, _ = self.threshold(list_row)
        review = _review_tier(list_row)
        if review and review.get("threshold") is not None:
            how = f"calibrated for {review['target_candidate_rate']:g} false candidates/face"
            return min(float(review["threshold"]), alert), how
        if self.default_review_threshold is None:
            return alert, "no review tier"
        return min(self.default_review_threshold, alert), f"{self.embedder.name} default"

    def lists(self) -> list[ListView]:
        out: list[ListView] = []
        for lst in self.catalog.lists():
            active = [p for p in self.people(lst["name"]) if p["status"] == "active"]
            thr, how = self.threshold(lst)
            review, review_how = self.review_threshold(lst)
            calibration = lst.get("calibration")
            view: ListView = {
                **lst,
                "active_people": len(active),
                "threshold_in_force": thr,
                "threshold_how": how,
                "expected_fpir": expected_fpir_at_size(calibration, thr, len(active)),
                "review_threshold_in_force": review,
                "review_threshold_how": review_how,
                "expected_candidate_rate": expected_fpir_at_size(calibration, review, len(active)),
            }
            out.append(view)
        return out

    def snapshot(self, list_name: str, at: date | None = None) -> str:
        """The frozen membership of ``list_name`` now: an id, stored with its entry ids."""
        lst = self.catalog.get_list(list_name)
        if lst is None:
            raise WatchlistError(f"no such list: {list_name}")
        ids = sorted(e["entry_id"] for e in self._active_entries(list_name, at))
        digest = hashlib.sha256(json.dumps([list_name, lst["version"], ids]).encode())
        sid = "s_" + digest.hexdigest()[:16]
        self.catalog.db.execute(
            "INSERT OR IGNORE INTO snapshots VALUES (?,?,?,?,?)",
            (sid, list_name, lst["version"], utcnow(), json.dumps(ids)),
        )
        return sid

    def _active_entries(self, list_name: str | None, at: date | None) -> list[dict[str, Any]]:
        sql = (
            "SELECT e.*, p.name, p.list_name, p.expires_on, p.removed_at FROM entries e "
            "JOIN persons p ON p.person_id = e.person_id WHERE p.removed_at IS NULL"
        )
        args: list[Any] = []
        if list_name:
            sql += " AND p.list_name = ?"
            args.append(list_name)
        rows = self.catalog.rows(sql + " ORDER BY e.created_at, e.entry_id", *args)
        return [r for r in rows if self._status(r, at) == "active"]

    def active_gallery(
        self,
        list_name: str | None = None,
        at: date | None = None,
        override: float | None = None,
        actor: str = "",
        warn: Callable[[str], None] | None = None,
        snapshot_id: str | None = None,
        review: bool = False,
        review_override: float | None = None,
    ) -> Gallery:
        """The in-memory matrix of every active entry (of one list, or of all lists).

        With ``snapshot_id`` (a deployment's frozen list), only the entries of that snapshot
        that are still active: nobody added since is matched, and removals and expiries
        still take effect at once. ``review``: with the review tier's thresholds too
        (retrospective work only; live cameras never get them).
        """
        entries = self._gallery_entries(list_name, at, snapshot_id)
        vectors = self._entry_vectors(entries)
        names = sorted({e["list_name"] for e in entries} | ({list_name} if list_name else set()))
        sizes = {n: len({e["person_id"] for e in entries if e["list_name"] == n}) for n in names}
        thresholds = {
            n: self._threshold_in_force(n, override, actor, warn, sizes[n]) for n in names
        }
        per_person = self._person_thresholds(names) if override is None else {}
        alert = np.asarray(
            [per_person.get(e["person_id"], thresholds[e["list_name"]]) for e in entries],
            np.float32,
        )
        reviews = (
            self._review_thresholds(entries, names, alert, review_override, actor)
            if review
            else None
        )
        return Gallery(
            embeddings=np.asarray([vectors[e["entry_id"]] for e in entries], np.float32).reshape(
                -1, self.embedder.dim
            ),
            entry_ids=[e["entry_id"] for e in entries],
            person_ids=[e["person_id"] for e in entries],
            person_names=[e["name"] for e in entries],
            list_names=[e["list_name"] for e in entries],
            photos=[str(self.home.media.path(e["thumbnail"])) for e in entries],
            embedder=self.embedder,
            thresholds=alert,
            review_thresholds=reviews,
            snapshot_ids=(
                {list_name: snapshot_id}
                if snapshot_id and list_name
                else {n: self.snapshot(n, at) for n in names}
            ),
        )

    def _gallery_entries(
        self, list_name: str | None, at: date | None, snapshot_id: str | None
    ) -> list[dict[str, Any]]:
        """The active entries of one list (or every list), of its snapshot if one is given."""
        if list_name is not None:  # None: every list; "" is a mistake, not "every list"
            check_list_name(list_name)
            if self.catalog.get_list(list_name) is None:
                raise WatchlistError(f"no such list: {list_name}")
        entries = self._active_entries(list_name, at)
        if snapshot_id is not None:
            frozen = self.snapshot_entries(snapshot_id)
            if list_name != frozen["list_name"]:
                raise WatchlistError(f"snapshot {snapshot_id} is of list {frozen['list_name']}")
            keep = set(frozen["entry_ids"])
            entries = [e for e in entries if e["entry_id"] in keep]
        return entries

    def _entry_vectors(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """Each entry's embedding from the store; every one must be there."""
        vectors = {
            r["id"]: r["embedding"]
            for r in self.home.vectors().query(
                WATCHLIST, ids=[e["entry_id"] for e in entries], fields=["embedding"]
            )
        }
        missing = [e["entry_id"] for e in entries if e["entry_id"] not in vectors]
        if missing:
            raise WatchlistError(f"store and catalog disagree: no vectors for {missing[:3]}")
        return vectors

    def _review_thresholds(
        self,
        entries: list[dict[str, Any]],
        names: list[str],
        alert: np.ndarray,
        override: float | None,
        actor: str | None,
    ) -> np.ndarray:
        """Per entry: the review threshold in force, never above the entry's alert one."""
        if override is not None:
            if np.any(override > alert + 1e-6):
                raise WatchlistError(
                    f"--review-threshold {override} lies above the alert threshold "
                    f"({float(alert.min()):.3f}); the review tier is the lower one"
                )
            for n in names:
                self.home.audit.append(
                    actor or "unknown",
                    "threshold.override",
                    tier="review",
                    list=n,
                    threshold=override,
                    list_threshold=self.review_threshold(self.catalog.get_list(n))[0],
                )
            return np.full(len(entries), override, np.float32)
        per_list: dict[str, float] = {}
        per_person: dict[str, float] = {}
        for n in names:
            row = self.catalog.get_list(n)
            per_list[n] = self.review_threshold(row)[0]
            review = _review_tier(row)
            per_person.update((review.get("person_thresholds") if review else None) or {})
        out = [per_person.get(e["person_id"], per_list[e["list_name"]]) for e in entries]
        capped: np.ndarray = np.minimum(np.asarray(out, np.float32), alert)
        return capped

    def snapshot_entries(self, snapshot_id: str) -> dict[str, Any]:
        """A frozen snapshot: its list, version, time and the entry ids it named."""
        row = self.catalog.row("SELECT * FROM snapshots WHERE snapshot_id = ?", snapshot_id)
        if row is None:
            raise WatchlistError(f"no such list snapshot: {snapshot_id}")
        row["entry_ids"] = json.loads(row.pop("entry_ids_json"))
        return row

    def _person_thresholds(self, list_names: list[str]) -> dict[str, float]:
        """Per-person thresholds of lists calibrated per person (people added later: none)."""
        out: dict[str, float] = {}
        for name in list_names:
            calibration = _calibration(self.catalog.get_list(name))
            out.update((calibration.get("person_thresholds") if calibration else None) or {})
        return out

    def record_calibration(self, list_name: str, record: CalibrationRecord, actor: str) -> str:
        """Set the list's threshold from a calibration ``record`` and audit it."""
        if self.catalog.get_list(list_name) is None:
            raise WatchlistError(f"no such list: {list_name}")
        record = {**record, "date": utcnow(), "by": actor}
        review = record.get("review") or {}
        if review and float(review["threshold"]) > float(record["threshold"]):
            raise WatchlistError(
                f"the review tier ({review['threshold']:.3f}) lies above the alert tier "
                f"({record['threshold']:.3f}): aim the candidate rate above the FPIR"
            )
        per = " per person" if record.get("mode") == "per-person" else ""
        how = f"calibrated{per} {record['date'][:10]} for FPIR {record['target_fpir']:g}"
        with self.catalog.transaction():  # no record, no new threshold
            self.catalog.set_threshold(list_name, float(record["threshold"]), how, record)
            self.home.audit.append(
                actor,
                "threshold.calibrate",
                list=list_name,
                **{k: v for k, v in record.items() if k not in ("curve", "by", "mode", "review")},
                calibration_mode=record.get("mode", "list"),
                review_threshold=review.get("threshold"),
                target_candidate_rate=review.get("target_candidate_rate"),
                false_candidates=review.get("false_alarms"),
            )
        return how

    def _threshold_in_force(
        self,
        list_name: str,
        override: float | None,
        actor: str | None,
        warn: Callable[[str], None] | None,
        size: int | None = None,
    ) -> float:
        lst = self.catalog.get_list(list_name)
        thr, how = self.threshold(lst)
        if override is None:
            return thr
        if override < thr and warn is not None:
            fpir = expected_fpir_at_size(_calibration(lst), override, size or 0)
            expect = (
                f"expected FPIR {fpir:.3%} at {size} people (calibrated)"
                if fpir is not None
                else "no calibration measured for it"
            )
            warn(
                f"threshold {override} is below list '{list_name}' threshold {thr} ({how}): "
                f"more false alerts; {expect}"
            )
        self.home.audit.append(
            actor or "unknown",
            "threshold.override",
            list=list_name,
            threshold=override,
            list_threshold=thr,
            source=how,
        )
        return float(override)


def _vector_rows(
    entries: list[tuple[str, ProbeFace]], person_id: str, list_name: str
) -> list[dict[str, Any]]:
    """The store's rows of a person's enrolled photos (one vector per entry)."""
    now = int(time.time())
    return [
        {
            "id": eid,
            "embedding": f.embedding,
            "person_id": person_id,
            "list_name": list_name,
            "created_at": now,
        }
        for eid, f in entries
    ]


def _insert_person(db: sqlite3.Connection, person: dict[str, Any]) -> None:
    """The person's catalog row (``person``: the fields ``Watchlists.add`` collects)."""
    db.execute(
        "INSERT INTO persons(person_id, list_name, name, category, reason, "
        "authorised_by, added_by, created_at, expires_on, minor, image_source) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            person["person_id"],
            person["list_name"],
            person["name"],
            person["category"],
            person["reason"],
            person["authorised_by"],
            person["added_by"],
            utcnow(),
            person["expires_on"],
            int(person["minor"]),
            person["image_source"],
        ),
    )


def _insert_entries(
    db: sqlite3.Connection, person_id: str, entries: list[tuple[str, ProbeFace]], thumbs: list[str]
) -> None:
    """One catalog row per enrolled photo (its vector is in the store under ``entry_id``)."""
    for (eid, f), thumb in zip(entries, thumbs, strict=True):
        db.execute(
            "INSERT INTO entries(entry_id, person_id, image_sha256, source_name, "
            "thumbnail, quality, created_at, embedding_mode, borderline) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (
                eid,
                person_id,
                f.sha256,
                f.path.rsplit("/", 1)[-1],
                thumb,
                f.quality_score,
                utcnow(),
                f.embedding_mode,
                ",".join(f.borderline),
            ),
        )
