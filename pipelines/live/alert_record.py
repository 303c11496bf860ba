"""The alert record: what API clients, SSE subscribers, webhooks and the review book see of
one live alert. Built from the analyser's ``AlertDraft`` and the camera's spec, plain
Python, so the hub (serve/) and the stores share one definition of its fields.
"""

from __future__ import annotations

import time

from pipelines.live.analyser import AlertDraft
from pipelines.live.cameras import CameraSpec, redact_url
from pipelines.schemas import AlertRecord


def alert_record(draft: AlertDraft, camera: CameraSpec) -> AlertRecord:
    """The alert as API clients, SSE subscribers and webhooks see it (no embedding)."""
    f = draft.face
    return {
        "alert_id": draft.alert_id,
        "camera_id": camera.id,
        "camera": redact_url(camera.url),
        "person_id": draft.person_id,
        "person_name": draft.person_name,
        "list_name": draft.list_name,
        "score": draft.score,
        "face_score": draft.face_score,
        "threshold": draft.threshold,
        "margin": draft.margin,
        "track_id": draft.track_id,
        "track_faces": draft.n_faces,
        "frame_seq": f.seq,
        "face_index": f.face_index,
        "box": [round(float(x), 1) for x in f.box],
        "observed_at": f.received_at,
        "trigger_seq": draft.trigger_seq,
        "trigger_received_at": draft.trigger_received_at,
        "alerted_at": time.time(),
        "snapshot_id": draft.snapshot_id,
        "photo": draft.photo,
        "status": "pending",
    }
