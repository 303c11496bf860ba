"""The live hub's metrics sampler and its status view.

Why sampled: most of what operators watch about cameras already exists as running totals
in each camera (``CameraRunner.status``) and in the webhook dispatcher. Every ``PERIOD_S``
the hub turns what rose since the last sample into counter increments (``Deltas``) and
sets the gauges, instead of threading a metrics call through every reader thread and
retry loop. Frames analysed and the latency histograms are recorded where they happen
(``serve.ingest``, ``serve.hub``), so a histogram's count is the analysed-frame count.
"""

from __future__ import annotations

import time
from typing import Any

from serve import metrics
from serve.metrics import CAMERA_STATES, Deltas

PERIOD_S = 2.0
ROWS_EVERY_S = 30.0  # counting rows costs a store query per collection
PENDING_SQL = (
    "SELECT camera_id, list_name, COUNT(*) AS n FROM live_alerts WHERE status = 'pending'"
    " GROUP BY camera_id, list_name"
)
CAMERA_COUNTERS = {  # status key -> metric
    "frames_received": "facewatch_camera_frames_received",
    "drops": "facewatch_camera_frames_dropped",
    "reconnects": "facewatch_camera_reconnects",
}


def prime_counters(collections: tuple[str, ...]) -> None:
    """Error and failure counters exported at 0, so their rules have data to read."""
    for outcome in ("ok", "failed"):
        metrics.prime("facewatch_webhook_deliveries", outcome=outcome)
        metrics.prime("facewatch_audit_appends", outcome=outcome)
    metrics.prime("facewatch_webhook_retries")
    for c in collections:
        metrics.prime("facewatch_store_write_errors", collection=c)
        metrics.prime("facewatch_store_write_retries", collection=c)


class HubMetrics:
    def __init__(self) -> None:
        self.deltas = Deltas()
        self.cameras: set[str] = set()
        self.pending: set[tuple[str, str]] = set()
        self.rows: dict[str, int] = {}
        self._rows_at = float("-inf")

    def cameras_sample(self, statuses: list[dict[str, Any]]) -> None:
        seen = set()
        for c in statuses:
            cid = c["id"]
            seen.add(cid)
            for key, name in CAMERA_COUNTERS.items():
                self.deltas.add(name, c[key], source=cid, camera=cid)
            metrics.record("facewatch_camera_analysed_fps", c["analysed_fps"], camera=cid)
            metrics.record("facewatch_camera_state", CAMERA_STATES.get(c["state"], 0), camera=cid)
            self._faces(cid, c["counters"])
        for cid in self.cameras - seen:  # removed: not down, and never counted again
            metrics.record("facewatch_camera_state", CAMERA_STATES["removed"], camera=cid)
            metrics.record("facewatch_camera_analysed_fps", 0.0, camera=cid)
            self.deltas.forget(cid)
        self.cameras = seen

    def _faces(self, cid: str, counters: dict[str, int]) -> None:
        self.deltas.add("facewatch_faces_detected", counters.get("faces", 0), cid, lane="live")
        self.deltas.add(
            "facewatch_faces_matched", counters.get("faces_matched", 0), cid, lane="live"
        )
        for key, n in counters.items():
            if key.startswith("rejected_"):
                gate = key.removeprefix("rejected_")
                self.deltas.add("facewatch_faces_rejected", n, cid, lane="live", outcome=gate)

    def webhooks_sample(self, counters: dict[str, int], outbox: int) -> None:
        self.deltas.add("facewatch_webhook_deliveries", counters.get("delivered", 0), outcome="ok")
        self.deltas.add("facewatch_webhook_deliveries", counters.get("failed", 0), outcome="failed")
        self.deltas.add("facewatch_webhook_retries", counters.get("retries", 0))
        metrics.record("facewatch_outbox_depth", outbox)

    def pending_sample(self, rows: list[dict[str, Any]]) -> None:
        now = {(r["camera_id"], r["list_name"]): r["n"] for r in rows}
        for cam, lst in self.pending - set(now):  # none left: say 0, not the last count
            metrics.record("facewatch_alerts_pending", 0, camera=cam, list=lst)
        for (cam, lst), n in now.items():
            metrics.record("facewatch_alerts_pending", n, camera=cam, list=lst)
        self.pending = set(now)

    def rows_due(self) -> bool:
        return time.monotonic() - self._rows_at >= ROWS_EVERY_S

    def rows_sample(self, counts: dict[str, int]) -> None:
        self._rows_at = time.monotonic()
        self.rows = dict(counts)
        for collection, n in counts.items():
            metrics.record("facewatch_store_rows", n, collection=collection)


def alert_raised(camera: str, list_name: str, trigger_received_at: float) -> None:
    metrics.record("facewatch_alerts_raised", 1, camera=camera, list=list_name)
    metrics.record(
        "facewatch_frame_to_alert_seconds",
        max(0.0, time.time() - trigger_received_at),
        camera=camera,
        list=list_name,
    )


def alert_adjudicated(camera: str, list_name: str, outcome: str) -> None:
    labels = {"camera": camera, "list": list_name, "outcome": outcome}
    metrics.record("facewatch_alerts_adjudicated", 1, **labels)
