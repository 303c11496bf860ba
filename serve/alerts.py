"""Alerts leave the hub in three ways: stored (Milvus + media + review book), pushed to
Server-Sent-Event subscribers, and posted to webhooks (from the durable outbox).

- ``AlertRecorder`` is synchronous and runs on the hub's single store thread: the crop is
  saved as JPEG under the home's media folder, the match row (with the best face's
  embedding, ``source=live``, the camera, time and track) is upserted into ``fw_matches``
  under the alert's stable id, and the review book gets the workflow row.
- ``AlertFanout`` keeps one bounded queue per SSE subscriber. A subscriber that stops
  reading is cut off rather than allowed to grow a queue without bound; a reconnecting
  one sends ``Last-Event-ID`` and is replayed what it missed from a small ring buffer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import numpy as np

from pipelines.images import encode_jpeg
from pipelines.live.analyser import AlertDraft, Face
from pipelines.live.cameras import CameraSpec, redact_url
from pipelines.live.review_book import ReviewBook
from pipelines.media import Media
from pipelines.schemas import AlertRecord, ReviewedAlert
from pipelines.store import FACES, MATCHES, VectorStore
from serve.memory_env import release_freed_memory
from serve.webhooks import WebhookDispatcher

logger = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
SUBSCRIBER_QUEUE = 256
REPLAY = 200


def _crop(face: Face) -> np.ndarray:
    """The face's crop: the analyser keeps one for every face it stores or alerts on."""
    if face.crop is None:
        raise ValueError("a face to be stored has no crop (the analyser dropped it)")
    return face.crop


# rows the hub writes one at a time to an embedded store before it flushes them (below)
FLUSH_EVERY = 256


class AlertRecorder:
    """Persistence of alerts, adjudications and (drills only) non-matching faces.

    On milvus-lite, which runs inside the hub, each row written one at a time stays in the
    store's write buffer at about 16 KB of the hub's memory until 128 MB of data have
    gathered (some 55,000 alerts, close to 1 GB; measured in-process). The recorder flushes
    a collection after every ``flush_every`` rows it wrote there, and hands the freed
    memory back: flushed rows cost a few KB each. A flush that fails loses nothing (the
    rows are in milvus-lite's write-ahead log) and is tried again after the next row."""

    def __init__(
        self,
        store: VectorStore,
        media: Media,
        reviews: ReviewBook,
        flush_every: int = FLUSH_EVERY,
    ):
        self.store, self.media, self.reviews = store, media, reviews
        self.flush_every = flush_every
        self.unflushed: dict[str, int] = {}
        self.flushes = self.flush_failures = 0

    def _wrote(self, name: str) -> None:
        if not self.store.embedded:
            return  # a Milvus server keeps its own buffers
        self.unflushed[name] = self.unflushed.get(name, 0) + 1
        if self.unflushed[name] < self.flush_every:
            return
        try:
            self.store.flush(name)
        except Exception:  # noqa: BLE001 - the rows are in the WAL; try after the next row
            logger.warning(
                "flushing %s failed; the rows stay in the write-ahead log", name, exc_info=True
            )
            self.flush_failures += 1
            return
        self.unflushed[name] = 0
        self.flushes += 1
        release_freed_memory()

    def flush_counts(self) -> dict[str, int]:
        """For ``/v1/stats``: flushes done and failed, and rows written since the last."""
        unflushed = sum(self.unflushed.values())
        return {"done": self.flushes, "failed": self.flush_failures, "rows_unflushed": unflushed}

    def record(
        self,
        draft: AlertDraft,
        record: AlertRecord,
        then: Callable[[sqlite3.Connection, ReviewedAlert], None] | None = None,
    ) -> None:
        """Store the alert: its crop, its match in Milvus, then its review-book row with
        whatever ``then`` writes in the same catalog transaction (its webhook outbox rows)."""
        f = draft.face
        thumbnail = self.media.save("alerts", draft.alert_id, encode_jpeg(_crop(f)))
        row = {
            "match_id": draft.alert_id,
            "embedding": f.embedding,
            "person_id": draft.person_id,
            "person_name": draft.person_name,
            "list_name": draft.list_name,
            "score": draft.score,
            "source": "live",
            "source_id": record["camera_id"],
            "source_path": record["camera"],
            "frame_index": f.seq,
            "timestamp_s": f.received_at,
            "box": [float(x) for x in f.box],
            "track_id": draft.track_id,
            "face_index": f.face_index,
            "snapshot_id": draft.snapshot_id,
            "thumbnail": thumbnail,
            "created_at": int(record["alerted_at"]),
            "status": "pending",
        }
        self.store.upsert_matches([row])
        self._wrote(MATCHES)
        self.reviews.add(record, thumbnail, then)

    def set_status(self, alert_id: str, status: str) -> None:
        rows = self.store.query(MATCHES, ids=[alert_id])
        if not rows:
            raise KeyError(alert_id)
        self.store.upsert(MATCHES, [{**rows[0], "status": status}])
        self._wrote(MATCHES)

    def drill_face(self, camera: CameraSpec, face_id: str, face: Face) -> None:
        thumbnail = self.media.save("faces", face_id, encode_jpeg(_crop(face)))
        row = {
            "id": face_id,
            "embedding": face.embedding,
            "source_id": camera.id,
            "source_path": redact_url(camera.url),
            "frame_index": face.seq,
            "timestamp_s": face.received_at,
            "box": [float(x) for x in face.box],
            "thumbnail": thumbnail,
            "case_ref": "drill",
        }
        self.store.upsert(FACES, [row])
        self._wrote(FACES)


def sse(event: str, data: Mapping[str, Any], event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class AlertFanout:
    def __init__(self, webhooks: WebhookDispatcher):
        self.webhooks = webhooks
        self._subscribers: set[asyncio.Queue] = set()
        self._recent: deque[tuple[str, str]] = deque(maxlen=REPLAY)  # (alert id, message)
        self.cut_off = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish_alert(self, record: AlertRecord, public: ReviewedAlert) -> None:
        message = sse("alert", public, record["alert_id"])
        self._recent.append((record["alert_id"], message))
        self._broadcast(message)
        self.webhooks.wake()  # its deliveries are already in the outbox (serve/hub.py)

    def publish_decision(self, public: dict[str, Any]) -> None:
        self._broadcast(sse("adjudication", public))

    def _broadcast(self, message: str) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self._subscribers.discard(queue)
                self.cut_off += 1
                logger.warning("SSE subscriber too slow: disconnected")

    def _replay(self, last_event_id: str | None) -> list[str]:
        ids = [i for i, _ in self._recent]
        if not last_event_id or last_event_id not in ids:
            return []
        return [m for _, m in list(self._recent)[ids.index(last_event_id) + 1 :]]

    async def subscribe(self, last_event_id: str | None) -> AsyncIterator[str]:
        queue: asyncio.Queue = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        try:
            yield ": connected\n\n"
            for message in self._replay(last_event_id):
                yield message
            while queue in self._subscribers:
                try:
                    yield await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ": keepalive\n\n"
        finally:
            self._subscribers.discard(queue)
