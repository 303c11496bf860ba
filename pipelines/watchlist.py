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

import hashlib
import json
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import numpy as np

from pipelines.catalog import new_id, today, utcnow
from pipelines.engine import ProbeFace
from pipelines.home import Home
from pipelines.images import encode_jpeg
from pipelines.match import Gallery
from pipelines.schemas import EmbedderInfo
from pipelines.store import WATCHLIST

CATEGORIES = ("wanted", "missing", "suspect", "other")


class WatchlistError(ValueError):
    """A watch-list operation was refused; the message says why."""


def expected_fpir(calibration: dict | None, threshold: float) -> float | None:
    """FPIR the calibration measured at ``threshold`` (interpolated), if it recorded a curve."""
    curve = (calibration or {}).get("curve")
    if not curve:
        return None
    t, f = np.asarray(curve, float).T
    order = np.argsort(t)
    return float(np.interp(threshold, t[order], f[order]))


class Watchlists:
    def __init__(self, home: Home, embedder: EmbedderInfo, default_threshold: float):
        self.home = home
        self.catalog = home.catalog
        self.embedder = embedder
        self.default_threshold = default_threshold

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
    ) -> str:
        self._check_add(name, faces, list_name, category, expires_on, minor)
        store = self.home.vectors()
        person_id = new_id("p")
        entries = [(new_id("e"), f) for f in faces]
        thumbs = [
            self.home.media.save("watchlist", eid, encode_jpeg(f.thumbnail)) for eid, f in entries
        ]
        now = int(time.time())
        store.upsert(
            WATCHLIST,
            [
                {
                    "id": eid,
                    "embedding": f.embedding,
                    "person_id": person_id,
                    "list_name": list_name,
                    "created_at": now,
                }
                for eid, f in entries
            ],
        )
        try:
            with self.catalog.transaction() as db:
                self.catalog.ensure_list(list_name, actor)
                db.execute(
                    "INSERT INTO persons(person_id, list_name, name, category, reason, "
                    "authorised_by, added_by, created_at, expires_on, minor) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        person_id,
                        list_name,
                        name,
                        category,
                        reason,
                        authorised_by,
                        actor,
                        utcnow(),
                        expires_on.isoformat() if expires_on else None,
                        int(minor),
                    ),
                )
                for (eid, f), thumb in zip(entries, thumbs, strict=True):
                    db.execute(
                        "INSERT INTO entries VALUES (?,?,?,?,?,?,?)",
                        (
                            eid,
                            person_id,
                            f.sha256,
                            f.path.rsplit("/", 1)[-1],
                            thumb,
                            f.quality_score,
                            utcnow(),
                        ),
                    )
                self.catalog.bump_version(list_name)
        except BaseException:
            store.delete(WATCHLIST, ids=[eid for eid, _ in entries])
            for t in thumbs:
                self.home.media.delete(t)
            raise
        self.home.audit.append(
            actor,
            "watchlist.add",
            person_id=person_id,
            name=name,
            list=list_name,
            category=category,
            reason=reason,
            authorised_by=authorised_by,
            expires_on=expires_on.isoformat() if expires_on else None,
            minor=minor,
            images=[{"file": f.path.rsplit("/", 1)[-1], "sha256": f.sha256} for f in faces],
        )
        return person_id

    def _check_add(self, name, faces, list_name, category, expires_on, minor) -> None:
        if not name.strip():
            raise WatchlistError("a person needs a name")
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

    def remove(self, person_id: str, actor: str) -> dict[str, Any]:
        person = self.catalog.row("SELECT * FROM persons WHERE person_id = ?", person_id)
        if person is None:
            raise WatchlistError(f"no such person: {person_id}")
        if person["removed_at"]:
            raise WatchlistError(f"{person_id} was already removed on {person['removed_at']}")
        entries = self.catalog.rows("SELECT * FROM entries WHERE person_id = ?", person_id)
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
            list=person["list_name"],
            images=[e["image_sha256"] for e in entries],
        )
        return person

    # -- reading --------------------------------------------------------------------------
    def people(self, list_name: str | None = None, include_removed: bool = False) -> list[dict]:
        sql = (
            "SELECT p.*, COUNT(e.entry_id) AS images FROM persons p "
            "LEFT JOIN entries e ON e.person_id = p.person_id WHERE 1=1"
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
        return rows

    @staticmethod
    def _status(person: dict, at: date | None = None) -> str:
        if person["removed_at"]:
            return "removed"
        if person["expires_on"] and date.fromisoformat(person["expires_on"]) < (at or today()):
            return "expired"
        return "active"

    def threshold(self, list_row: dict | None) -> tuple[float, str]:
        if list_row and list_row["threshold"] is not None:
            return float(list_row["threshold"]), list_row["threshold_source"]
        return self.default_threshold, f"{self.embedder.name} default"

    def lists(self) -> list[dict]:
        out = []
        for lst in self.catalog.lists():
            active = [p for p in self.people(lst["name"]) if p["status"] == "active"]
            thr, how = self.threshold(lst)
            lst.update(
                active_people=len(active),
                threshold_in_force=thr,
                threshold_how=how,
                expected_fpir=expected_fpir(lst.get("calibration"), thr),
            )
            out.append(lst)
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

    def _active_entries(self, list_name: str | None, at: date | None) -> list[dict]:
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
    ) -> Gallery:
        """The in-memory matrix of every active entry (of one list, or of all lists)."""
        if list_name and self.catalog.get_list(list_name) is None:
            raise WatchlistError(f"no such list: {list_name}")
        entries = self._active_entries(list_name, at)
        vectors = {
            r["id"]: r["embedding"]
            for r in self.home.vectors().query(
                WATCHLIST, ids=[e["entry_id"] for e in entries], fields=["embedding"]
            )
        }
        missing = [e["entry_id"] for e in entries if e["entry_id"] not in vectors]
        if missing:
            raise WatchlistError(f"store and catalog disagree: no vectors for {missing[:3]}")
        names = sorted({e["list_name"] for e in entries} | ({list_name} if list_name else set()))
        thresholds = {n: self._threshold_in_force(n, override, actor, warn) for n in names}
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
            thresholds=np.asarray([thresholds[e["list_name"]] for e in entries], np.float32),
            snapshot_ids={n: self.snapshot(n, at) for n in names},
        )

    def _threshold_in_force(self, list_name, override, actor, warn) -> float:
        lst = self.catalog.get_list(list_name)
        thr, how = self.threshold(lst)
        if override is None:
            return thr
        if override < thr and warn is not None:
            fpir = expected_fpir((lst or {}).get("calibration"), override)
            expect = (
                f"expected FPIR {fpir:.2%} (calibrated)"
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
