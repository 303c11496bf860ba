"""The HTTP API's answers, declared: FastAPI checks each route's answer against its model
and publishes the models in the OpenAPI schema, so a client can be generated from it.

Alert records and counts are the core's TypedDicts (``pipelines.schemas``), the same types
the hub and the review book return. Models allow extra keys: a field the hub adds is passed
on, not dropped, and shows up here when it is declared.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelines.schemas import AlertCounts, ReviewedAlert


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]


class WhoAmI(BaseModel):
    name: str = Field(description="the token's name, as audited")
    role: str
    permissions: list[str]


class AlertList(BaseModel):
    alerts: list[ReviewedAlert] = Field(description="newest first")


class LiveCounters(_Open):
    state: str
    analysed_fps: float
    frames_analysed: int
    drops: int
    drop_rate: float


class Stats(_Open):
    """Alerts by review state overall, per camera and per list; live counters per camera."""

    alerts: int
    confirmed: int
    rejected: int
    pending: int
    precision: float | None = Field(description="confirmed of adjudicated; None before any")
    per_camera: dict[str, AlertCounts]
    per_list: dict[str, AlertCounts]
    live: dict[str, LiveCounters]
    non_match_data: str = Field(description="whether faces that matched no one are kept")
    stored: dict[str, int]
    webhooks: dict[str, int | dict[str, int]] = Field(
        description="deliveries, failures, retries; failed attempts by cause; the outbox by state"
    )
    sse_subscribers: int
    alerts_not_stored: dict[str, int] = Field(
        default_factory=dict,
        description="alerts decided but not stored (so neither shown nor sent), by cause",
    )
    store_flushes: dict[str, int] = Field(
        default_factory=dict,
        description="the embedded store's collections the hub flushed after every 256 rows it "
        "wrote (done, failed, rows written since); all 0 on a Milvus server",
    )
    event_loop_lag_ms: dict[str, float] = Field(
        default_factory=dict,
        description="how late the live hub's event loop woke a 50 ms sleep, over the last "
        "minute (p50, p99, max): near 0 unless the loop is blocked or the hub starved of CPU",
    )


class Latency(BaseModel):
    p50: float
    p99: float


class CameraStatus(_Open):
    """A camera's spec (URL without its password) and its running state."""

    id: str
    url: str
    kind: Literal["stream", "file", "push"]
    fps: float | None = None
    list: str | None = None
    threshold: float | None = None
    loop: bool = True
    origin: str | None = Field(None, description="'config' (cameras file) or 'api'")
    state: str
    connected: bool | None = None
    analysed_fps: float | None = None
    frames_received: int | None = None
    frames_analysed: int | None = None
    frames_skipped: int | None = None
    drops: int | None = None
    drop_rate: float | None = None
    reconnects: int | None = None
    errors: int | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    latency_ms: Latency | None = None
    latency_stages_ms: dict[str, Latency] | None = Field(
        None,
        description="frame-to-result by stage (decode, turn, pool, order, apply) over the "
        "camera's last 256 analysed frames: which stage a long tail comes from",
    )
    active_tracks: int | None = None
    counters: dict[str, int | float] | None = Field(None, description="counts (int) and rates")
    watchlist: dict[str, Any] | None = Field(None, description="the list the camera matches")


class CameraList(BaseModel):
    cameras: list[CameraStatus]


class Removed(BaseModel):
    removed: str = Field(description="the removed camera's id")


class FrameResult(_Open):
    """A pushed frame's fate: queued or skipped now; with ``wait``, analysed, dropped or
    failed, with counts and alert ids only."""

    status: Literal["queued", "skipped", "analysed", "dropped", "error"]
    seq: int
    reason: str | None = None
    faces: int | None = None
    usable_faces: int | None = None
    alerts: list[str] | None = None
    latency_ms: float | None = Field(None, description="received to result, in the server")
    stages_ms: dict[str, float] | None = Field(
        None, description="latency_ms by stage: decode, turn, pool, order, apply (ms)"
    )
    api_ms: float


class StoredMatch(_Open):
    """A stored match (live alert or archive match), without its embedding."""

    id: str
    person_id: str
    person_name: str | None = None
    list_name: str | None = None
    score: float
    source: str = Field(description="'live' or 'archive'")
    source_id: str | None = None
    source_path: str | None = None
    frame_index: int | None = None
    timestamp_s: float | None = None
    box: list[float] | None = None
    thumbnail: str | None = None
    case_ref: str | None = None
    created_at: int | None = Field(None, description="Unix seconds")
    track_id: int | None = None
    face_index: int | None = None
    snapshot_id: str | None = None
    status: str | None = None


class MatchList(BaseModel):
    matches: list[StoredMatch]


class PublicConfig(_Open):
    """The effective configuration without secrets (tokens: name and role only), by
    section as in ``conf/facewatch.yaml``."""

    home: str | None
    allow_shared_home: bool
    detector: dict[str, Any]
    quality: dict[str, Any]
    embedder: dict[str, Any]
    pool: dict[str, Any]
    store: dict[str, Any]
    search: dict[str, Any]
    governance: dict[str, Any]
    live: dict[str, Any]
    api: dict[str, Any]


class StatusCamera(_Open):
    id: str
    state: str | None = None
    fps: float | None = None
    analysed_fps: float | None = None
    frames_analysed: int | None = None
    drops: int | None = None
    reconnects: int | None = None
    list: str | None = None
    last_error: str | None = None


class Status(_Open):
    """The server at a glance (``facewatch status`` prints the same): cameras, the pool's
    replicas, archive searches in progress, the store, the webhook outbox, retention."""

    generated_at: str
    cameras: list[StatusCamera]
    pool: dict[str, Any] = Field(description="replicas: node, busy fraction, queue per lane")
    searches: list[dict[str, Any]] = Field(description="searches in progress, with an ETA")
    store: dict[str, Any] = Field(description="backend and rows per collection")
    outbox: dict[str, Any] = Field(description="webhook deliveries waiting, and counters")
    retention: dict[str, Any] = Field(description="the interval and the last run")
