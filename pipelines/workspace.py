"""The investigator workspace's acts, Ray-free: what the web pages ask of a case.

The API forwards each request here (through the live hub, the one owner of the home), as
``Workspace.call(op, actor, ...)``. A case's searches are the ones its audit records name
(``export.search`` with the case's reference: the CLI's ``search --case`` writes them), so
a case opened in the browser shows the searches run for it from the terminal too.

Every view of a face image or a clip is audited (who saw whose face, in which case) before
the bytes leave, and only for a sighting of a case the viewer may read; a clip is cut only
from a file inside the case's searched set, never from a path a request names.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipelines.cases import READ, WORK, Actor, CaseBook, CaseError
from pipelines.clips import ClipError, clip_span, cut_clip
from pipelines.evidence import (
    EvidenceError,
    case_records,
    case_searches,
    export_bundle,
    source_file,
)
from pipelines.home import Home
from pipelines.schemas import Sighting
from pipelines.search_jobs import SearchJobs
from pipelines.sighting_reviews import ReviewError, SightingReviews, load_sightings, precision
from pipelines.video import find_videos

SIGHTING_ID = r"^s_[0-9a-f]{8,64}$"


class Workspace:
    def __init__(self, home: Home, ray_address: str | None = None):
        self.home = home
        self.book = CaseBook(home.catalog, home.audit)
        self.reviews = SightingReviews(home)
        self.jobs = SearchJobs(home, home.settings, self.book)
        self.ray_address = ray_address  # where searches started here run (None: their own)

    def call(self, op: str, who: Actor, *args: Any) -> Any:
        """One act by name; every expected failure leaves as a CaseError with a status."""
        acts: dict[str, Callable[..., Any]] = {
            "cases": self.book.cases,
            "create": self.create,
            "open": self.open,
            "grant": self.grant,
            "image": self.image,
            "clip": self.clip,
            "decide": self.decide,
            "export": self.export,
            "browse": self.jobs.browse,
            "probe_image": self.jobs.check_probe,
            "probe": self.jobs.add_probe,
            "search": self.search,
            "searches": self.jobs.searches,
            "search_status": self.jobs.status,
            "search_cancel": self.jobs.cancel,
            "audit": self.audit,
        }
        if op not in acts:
            raise CaseError(f"no workspace act {op!r}", 404)
        try:
            return acts[op](who, *args)
        except (ReviewError, ClipError, EvidenceError) as exc:
            raise CaseError(str(exc), 422) from None

    def create(self, who: Actor, body: dict[str, str]) -> dict[str, Any]:
        return self.book.create(body["case_ref"], body["reason"], body["authorised_by"], who)

    def audit(self, who: Actor, ref: str | None, action: str | None, limit: int) -> dict[str, Any]:
        """Audit records, newest last: a case's (for whoever may read the case), or the
        whole log's (auditors only), with whether the whole chain verifies."""
        if ref:
            self.book.require(ref, who)
        elif who.role != "auditor":
            raise CaseError("only an auditor reads the whole audit log", 403)
        records = [
            r
            for r in self.home.audit.records(action=action)
            if not ref or r.get("details", {}).get("case") == ref
        ]
        self.home.audit.append(who.name, "audit.read", case=ref or "", only=action or "")
        chain = self.home.audit.verify()
        return {
            "records": records[-limit:],
            "total": len(records),
            "chain_ok": chain.ok,
            "chain_problem": chain.reason,
        }

    def search(self, who: Actor, ref: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self.jobs.start(who, ref, spec, self.ray_address)

    def grant(self, who: Actor, ref: str, grantee: str) -> dict[str, Any]:
        return self.book.grant(ref, grantee, who)

    def _found(self, ref: str) -> list[tuple[Sighting, Path]]:
        records, _ = case_records(self.home.audit, ref)
        outs, _ = case_searches(records)
        found: list[tuple[Sighting, Path]] = []
        for out in (o for o in outs if (o / "sightings.parquet").is_file()):
            found += [(s, out) for s in load_sightings(out)]
        return found

    def _sighting(self, ref: str, sighting_id: str) -> tuple[Sighting, Path]:
        for s, out in self._found(ref):
            if s.sighting_id == sighting_id:
                return s, out
        raise CaseError(f"no sighting {sighting_id} in case {ref}", 404)

    def open(self, who: Actor, ref: str) -> dict[str, Any]:
        """The case, its sightings then candidates ranked by score, each with its decision,
        the case's precision, and a timeline per person across the case's files."""
        case = self.book.open(ref, who)
        found = self._found(ref)
        sightings = [s for s, _ in found]
        decided = self.reviews.decisions([s.sighting_id for s in sightings])
        rows = [_public(s, decided.get(s.sighting_id)) for s in sightings]
        timeline: dict[str, list[dict[str, Any]]] = {}
        for r in sorted(rows, key=lambda r: (r["file"], r["start_s"])):
            timeline.setdefault(r["person_name"], []).append(
                {k: r[k] for k in ("sighting_id", "file", "start_s", "end_s", "best_score")}
            )
        return {
            "case": case,
            "may_decide": self.book.may(case, who, WORK),
            "searches": len({out for _, out in found}),
            "sightings": rows,
            "precision": precision(sightings, decided),
            "timeline": timeline,
        }

    def _viewed(self, who: Actor, action: str, ref: str, s: Sighting, **what: Any) -> None:
        """Who saw whose face, in which case: audited before the bytes leave."""
        self.home.audit.append(
            who.name, action, case=ref, sighting_id=s.sighting_id, person_id=s.person_id, **what
        )

    def image(self, who: Actor, ref: str, sighting_id: str, kind: str) -> bytes:
        """The sighting's best face ("face") or the list/probe photo ("photo"); audited."""
        self.book.require(ref, who, READ)
        s, out = self._sighting(ref, sighting_id)
        rel = s.thumbnail if kind == "face" else s.watchlist_photo
        path = (out / rel).resolve() if rel else None
        if path is None or not path.is_relative_to(out.resolve()) or not path.is_file():
            raise CaseError(f"sighting {sighting_id} has no {kind} image", 404)
        self._viewed(who, "case.view_face", ref, s, kind=kind)
        return path.read_bytes()

    def clip(self, who: Actor, ref: str, sighting_id: str) -> dict[str, Any]:
        """An MP4 excerpt around the sighting, cut from its original file, which must be in
        the case's searched set; with where it starts and the face boxes to draw."""
        self.book.require(ref, who, READ)
        s, out = self._sighting(ref, sighting_id)
        records, _ = case_records(self.home.audit, ref)
        _, searched = case_searches(records)
        files = find_videos([p for p in searched if p.exists()])
        source = source_file(files, s.source_path, s.source_id)  # same name, same content
        if source is None:
            name = Path(s.source_path).name
            raise CaseError(f"{name} is not among the files searched in case {ref}", 403)
        lo, hi = clip_span(s.start_s, s.end_s)
        self._viewed(who, "case.view_clip", ref, s, source=str(source), from_s=lo, to_s=hi)
        with tempfile.TemporaryDirectory() as tmp:
            clip = cut_clip(source, lo, hi, Path(tmp) / "clip.mp4")
            data = clip.path.read_bytes()
        return {"mp4": data, "offset_s": clip.offset_s, "boxes": _boxes(s, out)}

    def decide(
        self, who: Actor, ref: str, sighting_id: str, decision: str, note: str
    ) -> dict[str, Any]:
        self.book.require(ref, who, WORK)
        s, out = self._sighting(ref, sighting_id)
        row = self.reviews.decide(s, out, ref, decision, note, who.name)
        return {k: row[k] for k in ("sighting_id", "decision", "note", "decided_by", "decided_at")}

    def export(self, who: Actor, ref: str) -> dict[str, Any]:
        folder = self.home.path / "evidence"
        folder.mkdir(exist_ok=True, mode=0o700)
        result = export_bundle(self.book, ref, who, folder / f"{ref}.zip")
        return {**result, "zip": Path(result["bundle"]).read_bytes(), "bundle": f"{ref}.zip"}


def _public(s: Sighting, decision: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "sighting_id": s.sighting_id,
        "tier": s.tier,
        "person_name": s.person_name,
        "list_name": s.list_name,
        "file": Path(s.source_path).name,
        "start_s": s.start_s,
        "end_s": s.end_s,
        "best_score": s.best_score,
        "best_frame_s": s.best_frame_s,
        "decision": decision["decision"] if decision else None,
        "note": decision["note"] if decision else "",
    }


def _boxes(s: Sighting, out: Path) -> list[dict[str, Any]]:
    """The face boxes of the sighting's matches (time in the original file, x1 y1 x2 y2)."""
    path = out / "matches.parquet"
    if not path.is_file():
        return []
    rows = pq.read_table(path, columns=["source_id", "person_id", "timestamp_s", "box"]).to_pylist()
    return [
        {"t": r["timestamp_s"], "box": r["box"]}
        for r in rows
        if r["source_id"] == s.source_id
        and r["person_id"] == s.person_id
        and s.start_s - 0.01 <= r["timestamp_s"] <= s.end_s + 0.01
    ]
