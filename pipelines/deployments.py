"""Deployment records: why, where and with which frozen list a set of cameras ran, and
what came of it.

A deployment is started with a purpose, a location, its cameras and one watch list. Start
freezes the list (a snapshot id naming exactly who was on it) and records, per camera, the
threshold in force and the list version. While it runs, the live side matches that
camera against the frozen snapshot (``Deployments.active_for_camera``, then
``Watchlists.active_gallery(..., snapshot_id=...)``). At the end the record is closed with
its numbers, computed from what the live side stored:

- alerts and their adjudications: the review book (``live_alerts`` in the catalog's SQLite
  file, written by ``pipelines/live/review_book.py``: alert_id, camera_id, list_name, person_id,
  alerted_at, status pending|confirmed|rejected, record JSON with the snapshot id);
- faces scanned: the ``live_scanned`` table. The live hub adds each camera's count of
  analysed faces with ``record_scanned(camera_id, n)`` (periodically, as deltas); nothing
  else about those faces is kept.

Everything here is SQLite in the catalog file (tables from the catalog's migration 4), so it
works while a server holds the milvus-lite store. Times are stored and returned as the
catalog's ISO-8601 UTC text; callers may pass Unix seconds (``at=``) for a scripted run.
"""

from __future__ import annotations

import html
import json
import logging
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pipelines.audit import AuditLog
from pipelines.catalog import Catalog, iso_utc, new_id, unix_time, utcnow
from pipelines.errors import FacewatchError
from pipelines.live.cameras import CameraError, load_cameras_file
from pipelines.schemas import (
    AlertCounts,
    DeploymentCamera,
    DeploymentReport,
    DeploymentSummary,
    DeploymentTotals,
    ListRow,
)
from pipelines.text import UnsafeTextError, check_text
from pipelines.watchlist import Watchlists, expected_fpir

logger = logging.getLogger(__name__)

CAMERA_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
STATUSES = ("confirmed", "rejected", "pending")


class DeploymentError(FacewatchError, ValueError):
    """A deployment operation was refused; the message says why."""


def _at(at: float | None) -> str:
    """A moment as stored: ``at`` (Unix seconds) or now."""
    return iso_utc(time.time() if at is None else at)


class Deployments:
    def __init__(self, catalog: Catalog, audit: AuditLog):
        self.catalog, self.audit = catalog, audit

    # -- the live side's counter ------------------------------------------------------------
    def record_scanned(self, camera_id: str, faces: int, at: float | None = None) -> None:
        """Add ``faces`` analysed faces for a camera (the hub calls this with deltas)."""
        if faces < 0:
            raise ValueError("a count of faces cannot be negative")
        if faces:
            self.catalog.db.execute(
                "INSERT INTO live_scanned VALUES (?,?,?)",
                (camera_id, _at(at), int(faces)),
            )

    # -- start and end ------------------------------------------------------------------------
    def start(
        self,
        lists: Watchlists,
        purpose: str,
        location: str,
        cameras: list[str],
        list_name: str,
        actor: str,
        at: float | None = None,
    ) -> dict[str, Any]:
        """Freeze ``list_name``, record who ran which cameras where and why."""
        cameras = self._check_start(purpose, location, cameras)
        lst = lists.catalog.get_list(list_name)
        if lst is None:
            raise DeploymentError(f"no such list: {list_name}")
        snapshot_id = lists.snapshot(list_name)
        frozen = lists.snapshot_entries(snapshot_id)
        configured = configured_cameras(lists.catalog, lists.home.settings.live.cameras_file)
        per_camera = {c: self._camera_terms(lists, lst, configured.get(c)) for c in cameras}
        dep_id = new_id("d")
        with self.catalog.transaction() as db:
            busy = self._busy(cameras)
            if busy:
                raise DeploymentError(f"camera(s) already in a running deployment: {busy}")
            db.execute(
                "INSERT INTO deployments (deployment_id, purpose, location, list_name, "
                "snapshot_id, list_version, cameras_json, started_at, started_by) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    dep_id,
                    purpose.strip(),
                    location.strip(),
                    list_name,
                    snapshot_id,
                    frozen["version"],
                    json.dumps(per_camera),
                    _at(at),
                    actor,
                ),
            )
            self.audit.append(  # in the transaction: no record, no deployment
                actor,
                "deployment.start",
                deployment_id=dep_id,
                purpose=purpose,
                location=location,
                cameras=per_camera,
                list=list_name,
                snapshot_id=snapshot_id,
                list_version=frozen["version"],
                entries=len(frozen["entry_ids"]),
            )
        return self.get(dep_id)

    @staticmethod
    def _check_start(purpose: str, location: str, cameras: list[str]) -> list[str]:
        if not purpose.strip():
            raise DeploymentError("a deployment needs a purpose (--purpose)")
        if not location.strip():
            raise DeploymentError("a deployment needs a location (--location)")
        try:
            check_text(purpose, "a purpose", free_text=True)
            check_text(location, "a location")
        except UnsafeTextError as exc:
            raise DeploymentError(str(exc)) from None
        cameras = [c.strip() for c in cameras if c.strip()]
        if not cameras:
            raise DeploymentError("a deployment needs at least one camera (--cameras ID,...)")
        bad = [c for c in cameras if not CAMERA_ID.match(c)]
        if bad:
            raise DeploymentError(f"camera ids are letters, digits, _ and -: {bad}")
        if len(set(cameras)) != len(cameras):
            raise DeploymentError("a camera is named twice")
        return cameras

    @staticmethod
    def _camera_terms(
        lists: Watchlists, lst: ListRow, spec: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The threshold in force on a camera, and how it was set."""
        thr, how = lists.threshold(lst)
        terms: dict[str, Any] = {"configured": spec is not None}
        if spec and spec.get("threshold") is not None:
            thr, how = float(spec["threshold"]), "camera override"
        if spec and spec.get("list_name") not in (None, lst["name"]):
            terms["configured_list"] = spec.get("list_name")
        terms.update(
            threshold=thr,
            threshold_how=how,
            expected_fpir=expected_fpir(lst.get("calibration"), thr),
        )
        return terms

    def _busy(self, cameras: list[str]) -> list[str]:
        running = self.catalog.rows("SELECT cameras_json FROM deployments WHERE ended_at IS NULL")
        used = {c for r in running for c in json.loads(r["cameras_json"])}
        return sorted(used & set(cameras))

    def end(
        self,
        deployment_id: str,
        actor: str,
        at: float | None = None,
        lists: Watchlists | None = None,
    ) -> dict[str, Any]:
        """Close the record with its numbers; with ``lists``, also note any camera whose
        threshold in force changed while it ran."""
        dep = self.get(deployment_id)
        if dep["ended_at"] is not None:
            raise DeploymentError(
                f"deployment {deployment_id} already ended at {dep['ended_at']} "
                f"by {dep['ended_by']}"
            )
        ended = _at(at)
        summary = self.summarise({**dep, "ended_at": ended})
        if lists is not None:
            self._threshold_changes(lists, dep, summary)
        with self.catalog.transaction() as db:
            n = db.execute(
                "UPDATE deployments SET ended_at = ?, ended_by = ?, summary_json = ? "
                "WHERE deployment_id = ? AND ended_at IS NULL",
                (ended, actor, json.dumps(summary), deployment_id),
            ).rowcount
            if n != 1:
                raise DeploymentError(f"deployment {deployment_id} was ended meanwhile")
            totals = summary["totals"]
            self.audit.append(actor, "deployment.end", deployment_id=deployment_id, **totals)
        return self.get(deployment_id)

    def _threshold_changes(
        self, lists: Watchlists, dep: dict[str, Any], summary: DeploymentSummary
    ) -> None:
        lst = lists.catalog.get_list(dep["list_name"])
        if lst is None:
            return
        configured = configured_cameras(lists.catalog, lists.home.settings.live.cameras_file)
        for cam, row in summary["per_camera"].items():
            now = self._camera_terms(lists, lst, configured.get(cam))
            if now["threshold"] != row["threshold"]:
                row["threshold_at_end"] = now["threshold"]
                row["threshold_at_end_how"] = now["threshold_how"]

    # -- reading ------------------------------------------------------------------------------
    def get(self, deployment_id: str) -> dict[str, Any]:
        row = self.catalog.row("SELECT * FROM deployments WHERE deployment_id = ?", deployment_id)
        if row is None:
            raise DeploymentError(f"no such deployment: {deployment_id}")
        row["cameras"] = json.loads(row.pop("cameras_json"))
        summary = row.pop("summary_json")
        row["summary_at_end"] = json.loads(summary) if summary else None
        return row

    def all(self) -> list[dict[str, Any]]:
        ids = self.catalog.rows("SELECT deployment_id FROM deployments ORDER BY started_at")
        return [self.get(r["deployment_id"]) for r in ids]

    def active_for_camera(self, camera_id: str) -> dict[str, Any] | None:
        """The running deployment that holds this camera: its ``snapshot_id`` is the frozen
        list the camera must match against."""
        for r in self.catalog.rows(
            "SELECT deployment_id, cameras_json FROM deployments WHERE ended_at IS NULL"
        ):
            if camera_id in json.loads(r["cameras_json"]):
                return self.get(r["deployment_id"])
        return None

    def summarise(self, dep: dict[str, Any]) -> DeploymentSummary:
        """The numbers, from the review book and the scanned-faces counter, now.

        Alerts decided after the end count with their decision; alerts that retention has
        deleted since count as they stood at the end (the record keeps their ids and
        statuses, nothing biometric)."""
        start = dep["started_at"]
        end = dep["ended_at"] if dep["ended_at"] is not None else _at(None)
        hours = round((unix_time(end) - unix_time(start)) / 3600.0, 3)
        cameras = list(dep["cameras"])
        alerts = self._alerts(cameras, start, end)
        at_end = (dep.get("summary_at_end") or {}).get("alerts", {})
        present = {a["alert_id"] for a in alerts}
        gone = [{"alert_id": i, **a} for i, a in at_end.items() if i not in present]
        alerts += gone
        scanned = self._scanned(cameras, start, end)
        per_camera: dict[str, DeploymentCamera] = {}
        for cam in cameras:
            mine = [a for a in alerts if a["camera_id"] == cam]
            per_camera[cam] = {
                "hours": hours,
                "faces_scanned": scanned.get(cam, 0),
                **_counts(mine),
                "threshold": dep["cameras"][cam]["threshold"],
                "threshold_how": dep["cameras"][cam]["threshold_how"],
                "list_version": dep["list_version"],
                "snapshot_id": dep["snapshot_id"],
            }
        other = [a for a in alerts if a["snapshot_id"] != dep["snapshot_id"]]
        totals: DeploymentTotals = {
            "hours": hours,
            "faces_scanned": sum(scanned.values()),
            **_counts(alerts),
            "alerts_not_on_frozen_snapshot": len(other),
            "alerts_deleted_since_end": len(gone),
        }
        return {
            "computed_at": utcnow(),
            "totals": totals,
            "per_camera": per_camera,
            "alerts": {
                a["alert_id"]: {
                    "camera_id": a["camera_id"],
                    "status": a["status"],
                    "snapshot_id": a["snapshot_id"],
                }
                for a in alerts
            },
        }

    def _alerts(self, cameras: list[str], start: str, end: str) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(cameras))
        rows = self.catalog.rows(
            "SELECT alert_id, camera_id, status, record FROM live_alerts "
            f"WHERE camera_id IN ({marks}) AND alerted_at >= ? AND alerted_at <= ?",
            *cameras,
            start,
            end,
        )
        for r in rows:
            r["snapshot_id"] = json.loads(r.pop("record")).get("snapshot_id", "")
        return rows

    def _scanned(self, cameras: list[str], start: str, end: str) -> dict[str, int]:
        marks = ",".join("?" * len(cameras))
        rows = self.catalog.rows(
            "SELECT camera_id, SUM(faces) AS n FROM live_scanned "
            f"WHERE camera_id IN ({marks}) AND at >= ? AND at <= ? GROUP BY camera_id",
            *cameras,
            start,
            end,
        )
        return {r["camera_id"]: int(r["n"]) for r in rows}

    # -- the report -------------------------------------------------------------------------
    def report(self, deployment_id: str) -> DeploymentReport:
        """The record and its numbers, recomputed now (adjudications go on after the end)."""
        dep = self.get(deployment_id)
        return {
            "deployment_id": dep["deployment_id"],
            "purpose": dep["purpose"],
            "location": dep["location"],
            "list": dep["list_name"],
            "list_version": dep["list_version"],
            "snapshot_id": dep["snapshot_id"],
            "started_at": dep["started_at"],
            "started_by": dep["started_by"],
            "ended_at": dep["ended_at"],
            "ended_by": dep["ended_by"],
            "status": "ended" if dep["ended_at"] is not None else "running",
            "cameras": dep["cameras"],
            **self.summarise(dep),
            "summary_at_end": dep["summary_at_end"],
        }

    def write_report(self, deployment_id: str, out: Path, actor: str) -> tuple[Path, Path]:
        """``<out>/<id>.json`` and ``<out>/<id>.html``; the export is audited."""
        rep = self.report(deployment_id)
        self.audit.check()  # no export that cannot be audited
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        json_path, html_path = out / f"{deployment_id}.json", out / f"{deployment_id}.html"
        json_path.write_text(json.dumps(rep, indent=1) + "\n", encoding="utf-8")
        html_path.write_text(render_html(rep), encoding="utf-8")
        self.audit.append(
            actor,
            "export.deployment_report",
            deployment_id=deployment_id,
            files=[str(json_path.resolve()), str(html_path.resolve())],
        )
        return json_path, html_path


def _counts(alerts: list[dict[str, Any]]) -> AlertCounts:
    by = Counter(a["status"] for a in alerts)
    confirmed, rejected = by.get("confirmed", 0), by.get("rejected", 0)
    decided = confirmed + rejected
    return {
        "alerts": len(alerts),
        "confirmed": confirmed,
        "rejected": rejected,
        "pending": by.get("pending", 0),
        "precision": round(confirmed / decided, 4) if decided else None,
    }


def configured_cameras(catalog: Catalog, cameras_file: Path | None) -> dict[str, dict[str, Any]]:
    """Cameras as configured now (registry table, then the cameras file): list, threshold."""
    out: dict[str, dict[str, Any]] = {}
    for r in catalog.rows("SELECT id, spec FROM live_cameras"):
        spec = json.loads(r["spec"])
        out[r["id"]] = {"list_name": spec.get("list_name"), "threshold": spec.get("threshold")}
    if cameras_file is not None and Path(cameras_file).is_file():
        try:
            specs = load_cameras_file(Path(cameras_file))
        except CameraError as exc:  # the live server refuses it too: no camera runs from it
            logger.warning("cameras file %s unusable: %s", cameras_file, exc)
            specs = []
        for spec in specs:
            out[spec.id] = {"list_name": spec.list_name, "threshold": spec.threshold}
    return out


CAMERA_COLUMNS = (
    "Camera",
    "Hours",
    "Faces scanned",
    "Alerts",
    "Confirmed",
    "Rejected",
    "Pending",
    "Threshold in force",
    "List version",
)


def render_html(rep: DeploymentReport) -> str:
    """A one-page post-deployment report (every value escaped)."""
    e = html.escape
    t = rep["totals"]
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in _facts(rep))
    cams = "".join(
        "<tr>" + "".join(f"<td>{e(str(x))}</td>" for x in _camera_cells(cam, c)) + "</tr>"
        for cam, c in rep["per_camera"].items()
    )
    head = "".join(f"<th>{h}</th>" for h in CAMERA_COLUMNS)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Deployment report {e(rep["deployment_id"])}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; max-width: 60em; margin: 2em auto; }}
table {{ border-collapse: collapse; width: 100%; margin: 1em 0; }}
th, td {{ border: 1px solid #bbb; padding: 4px 8px; text-align: left; }}
th {{ background: #f2f2f2; }}
small {{ color: #555; }}
</style></head><body>
<h1>Live facial recognition deployment {e(rep["deployment_id"])}</h1>
<table>{rows}</table>
<h2>Per camera</h2>
<table><tr>{head}</tr>{cams}</table>
<p><small>Computed {e(str(rep["computed_at"]))} from the review book and the live counters.
Faces that matched no one on the list were not kept; only their count is reported.
Alerts not on the frozen list snapshot: {t["alerts_not_on_frozen_snapshot"]}.</small></p>
</body></html>
"""


def _facts(rep: DeploymentReport) -> list[tuple[str, str]]:
    """The report's summary table: (what, value) rows."""
    t = rep["totals"]
    precision = "n/a (none adjudicated)" if t["precision"] is None else f"{t['precision']:.1%}"
    return [
        ("Purpose", rep["purpose"]),
        ("Location", rep["location"]),
        ("Start (UTC)", f"{rep['started_at']} by {rep['started_by']}"),
        ("End (UTC)", f"{rep['ended_at']} by {rep['ended_by']}" if rep["ended_at"] else "running"),
        ("Watch list", f"{rep['list']} version {rep['list_version']} ({rep['snapshot_id']})"),
        ("Duration", f"{t['hours']:.2f} h"),
        ("Faces scanned", f"{t['faces_scanned']:,}"),
        ("Alerts", str(t["alerts"])),
        ("Confirmed / rejected / pending", f"{t['confirmed']} / {t['rejected']} / {t['pending']}"),
        ("Precision (confirmed of adjudicated)", precision),
        ("False alert rate (rejected per face scanned)", _rate(t["rejected"], t["faces_scanned"])),
    ]


def _camera_cells(cam: str, c: DeploymentCamera) -> tuple[Any, ...]:
    """One camera's row, in the order of ``CAMERA_COLUMNS``."""
    return (
        cam,
        f"{c['hours']:.2f}",
        f"{c['faces_scanned']:,}",
        c["alerts"],
        c["confirmed"],
        c["rejected"],
        c["pending"],
        _threshold_text(c),
        c["list_version"],
    )


def _threshold_text(c: DeploymentCamera) -> str:
    text = f"{c['threshold']:.3f} ({c['threshold_how']})"
    if "threshold_at_end" in c:
        text += f", {c['threshold_at_end']:.3f} ({c['threshold_at_end_how']}) at the end"
    return text


def _rate(n: int, d: int) -> str:
    return f"{n / d:.2e} ({n} in {d:,})" if d else "n/a (no faces counted)"
