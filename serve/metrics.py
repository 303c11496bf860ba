"""facewatch's Prometheus metrics, defined once, exported through Ray's own pipeline.

Why through Ray: every Ray node runs a metrics agent that serves Prometheus text on its
metrics export port (``ray start --metrics-export-port``; ``facewatch serve
--metrics-port``), beside Ray's own metrics, and the head writes a service-discovery file
(``/tmp/ray/prom_metrics_service_discovery.json``) listing every node's agent. A metric
recorded with ``ray.util.metrics`` in any worker, replica or driver reaches the agent of
its node within a few seconds, so a cluster needs no second exporter.

Ray names what it exports ``ray_<name>`` (a counter ``ray_<name>_total``) and adds its own
labels (``NodeAddress``, ``WorkerId``, ``SessionName``; inside a Serve replica also
``replica`` and ``application``). ``METRICS`` below is the single definition: the code
records through it, docs/gen.py writes the reference table from it, and the tests check
the shipped dashboard and alert rules against it.

Labels are bounded by design (``ALLOWED_LABELS``): never a person, a face, a track, a file
or a case. Each label's values come from configuration or from a fixed set in the code.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from pipelines import observe

logger = logging.getLogger(__name__)

# label -> why its values are bounded (the unit test refuses any other label)
ALLOWED_LABELS = {
    "camera": "camera ids: configured by an admin",
    "list": "watch-list names: configured by an admin",
    "lane": "live or archive",
    "deployment": "the Serve deployment (FacePool); Ray adds the replica id",
    "outcome": "a fixed set per metric (ok/failed, confirmed/rejected, a quality gate)",
    "collection": "the store's fixed collections (fw_watchlist, fw_matches, fw_faces)",
    "data_class": "the fixed retention classes of governance.retention",
}
# frame-to-result and frame-to-alert: resolve 50 ms to 5 s
LATENCY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
WRITE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# the camera state gauge: one number per state, so the label set stays bounded; below 2
# for two minutes is "camera down" (conf/prometheus/facewatch.rules.yml)
CAMERA_STATES = {
    "error": 0,
    "starting": 1,
    "connecting": 1,
    "reconnecting": 1,
    "waiting": 1,  # a push camera before its first frame
    "streaming": 2,
    "ended": 3,  # a file camera read to its end
    "stopped": 4,
    "removed": 4,
}

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def exported(self) -> str:
        """The name Prometheus sees (Ray's prefix; a counter's ``_total``)."""
        return f"ray_{self.name}" + ("_total" if self.kind == "counter" else "")


def _c(name: str, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "counter", help, labels)


def _g(name: str, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "gauge", help, labels)


def _h(name: str, help: str, buckets: tuple[float, ...], *labels: str) -> MetricSpec:
    return MetricSpec(name, "histogram", help, labels, buckets)


_DEFS = [
    # cameras
    _c("facewatch_camera_frames_received", "frames a camera delivered", "camera"),
    _c("facewatch_camera_frames_analysed", "frames analysed by the pool", "camera"),
    _c("facewatch_camera_frames_dropped", "frames replaced by a newer one unanalysed", "camera"),
    _g("facewatch_camera_analysed_fps", "frames analysed per second, last 10 s", "camera"),
    _c("facewatch_camera_reconnects", "times a stream was reconnected", "camera"),
    _g(
        "facewatch_camera_state",
        "0 error, 1 connecting or reconnecting, 2 streaming, 3 file ended, 4 removed",
        "camera",
    ),
    # faces
    _c("facewatch_faces_detected", "faces detected", "lane"),
    _c("facewatch_faces_rejected", "faces rejected, outcome = the quality gate", "lane", "outcome"),
    _c("facewatch_faces_matched", "usable faces with a watch-list candidate", "lane"),
    # alerts
    _c("facewatch_alerts_raised", "live alerts raised", "camera", "list"),
    _c("facewatch_alerts_adjudicated", "alerts confirmed or rejected", "camera", "list", "outcome"),
    _g("facewatch_alerts_pending", "alerts waiting for a decision", "camera", "list"),
    _h(
        "facewatch_frame_to_result_seconds",
        "a frame's arrival to its analysis applied",
        LATENCY_BUCKETS,
        "camera",
    ),
    _h(
        "facewatch_frame_to_alert_seconds",
        "the deciding frame's arrival to the alert stored and sent",
        LATENCY_BUCKETS,
        "camera",
        "list",
    ),
    # the pool (per replica: Ray adds the replica label)
    _g("facewatch_pool_queue_depth", "model calls waiting at the gate", "deployment", "lane"),
    _g("facewatch_pool_busy_fraction", "share of time on the models", "deployment", "lane"),
    _h("facewatch_pool_batch_size", "frames per model call", BATCH_BUCKETS, "deployment", "lane"),
    _c("facewatch_pool_frames", "frames through the models", "deployment", "lane"),
    # archive searches (recorded by the search's driver)
    _g("facewatch_search_running", "archive searches running in this driver"),
    _c("facewatch_search_files", "files searched, outcome done or failed", "outcome"),
    _g("facewatch_search_files_remaining", "files still to search"),
    _c("facewatch_search_video_seconds", "seconds of video searched"),
    _c("facewatch_search_frames", "sampled frames analysed"),
    _g("facewatch_search_throughput_fps", "sampled frames analysed per second, this search"),
    # the store
    _h("facewatch_store_write_seconds", "store write latency", WRITE_BUCKETS, "collection"),
    _c("facewatch_store_write_errors", "store writes that failed", "collection"),
    _c("facewatch_store_write_retries", "store writes tried again", "collection"),
    _g("facewatch_store_rows", "rows per collection (live server's store)", "collection"),
    # webhooks and the outbox
    _c("facewatch_webhook_deliveries", "webhook deliveries, outcome ok or failed", "outcome"),
    _c("facewatch_webhook_retries", "webhook attempts tried again"),
    _g("facewatch_outbox_depth", "webhook deliveries not yet acknowledged"),
    # governance
    _c("facewatch_audit_appends", "audit records, outcome ok or failed", "outcome"),
    _c("facewatch_retention_deletions", "rows deleted by retention", "data_class"),
]
METRICS: dict[str, MetricSpec] = {s.name: s for s in _DEFS}

_made: dict[str, Any] = {}
# Ray 2.60's metrics agent forgets a gauge that was not set again within two export
# intervals (20 s by default): a value set once (the store's row counts, sampled every
# 30 s; a search's files remaining during a long file) would vanish from Prometheus. So
# every gauge this process set is set again, to its last value, every KEEPALIVE_S.
KEEPALIVE_S = 5.0
_gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
_gauges_lock = threading.Lock()
_keepalive: threading.Thread | None = None


def _in_replica() -> bool:
    from ray import serve as ray_serve

    try:
        ray_serve.get_replica_context()
    except Exception:  # noqa: BLE001 - RayServeException: not in a Serve replica
        return False
    return True


def _make(spec: MetricSpec):
    """The Ray metric; in a Serve replica, Serve's flavour (it adds deployment, replica
    and application itself, so our ``deployment`` label is left to it)."""
    from ray.util import metrics as ray_metrics

    labels = spec.labels
    module: Any = ray_metrics
    if "deployment" in labels and _in_replica():
        from ray.serve import metrics as serve_metrics

        module, labels = serve_metrics, tuple(k for k in labels if k != "deployment")
    cls = {"counter": module.Counter, "gauge": module.Gauge, "histogram": module.Histogram}
    kwargs: dict[str, Any] = {"description": spec.help, "tag_keys": labels}
    if spec.kind == "histogram":
        kwargs["boundaries"] = list(spec.buckets)
    return cls[spec.kind](spec.name, **kwargs), labels


def _tags(spec: MetricSpec, keys: tuple[str, ...], labels: dict[str, Any]) -> dict[str, str]:
    if set(labels) != set(spec.labels):
        raise ValueError(f"{spec.name} takes labels {spec.labels}, got {tuple(labels)}")
    return {k: str(labels[k])[:128] for k in keys}


def record(name: str, value: float = 1.0, **labels: Any) -> None:
    """Record one value: a counter is increased by it (0 exports it at 0), a gauge set to
    it, a histogram observes it. A no-op in a process without Ray (unit tests, a Ray-free
    CLI)."""
    import ray

    spec = METRICS[name]
    if not ray.is_initialized():
        return
    if name not in _made:
        _made[name] = _make(spec)
    metric, keys = _made[name]
    tags = _tags(spec, keys, labels)
    if spec.kind == "counter":
        if value > 0:
            metric.inc(value, tags)
        elif value == 0:  # exported at 0, so a rate reads 0 rather than no data
            metric._record(0.0, tags=tags)
    elif spec.kind == "gauge":
        metric.set(value, tags)
        _keep(name, tags, value)
    else:
        metric.observe(value, tags)


def _keep(name: str, tags: dict[str, str], value: float) -> None:
    """Remember a gauge's last value, and start the thread that sets it again."""
    global _keepalive
    with _gauges_lock:
        _gauges[(name, tuple(sorted(tags.items())))] = value
        if _keepalive is None or not _keepalive.is_alive():
            _keepalive = threading.Thread(target=_refresh_gauges, name="fw-gauges", daemon=True)
            _keepalive.start()


def _refresh_gauges() -> None:
    import ray

    while True:
        time.sleep(KEEPALIVE_S)
        if not ray.is_initialized():
            continue
        with _gauges_lock:
            last = list(_gauges.items())
        for (name, tags), value in last:
            try:
                _made[name][0].set(value, dict(tags))
            except Exception:  # noqa: BLE001 - one gauge's failure must not stop the rest
                logger.debug("gauge %s not refreshed", name, exc_info=True)


def prime(name: str, **labels: Any) -> None:
    """Export a counter at 0 for these labels, so an error rate reads 0 rather than no
    data (Ray's ``inc`` refuses 0; its recorder takes it)."""
    record(name, 0.0, **labels)


def _sink(name: str, value: float, labels: dict[str, str]) -> None:
    record(name, value, **labels)


def install() -> None:
    """Turn ``pipelines.observe`` emits of this process into Ray metrics."""
    observe.install(_sink)


class Deltas:
    """Turns cumulative counts kept elsewhere (a camera's counters, the webhook counters)
    into counter increments: each ``add`` records what rose since the last call."""

    def __init__(self) -> None:
        self._last: dict[tuple, float] = {}

    def add(self, name: str, total: float, source: str = "", **labels: Any) -> float:
        """Record what ``total`` rose by since the last call, and return it. ``source``:
        who keeps ``total`` (a camera id), when several add to one series."""
        key = (name, source, *sorted(labels.items()))
        last = self._last.get(key, 0.0)
        if total < last:  # the source restarted (a camera re-added): count from zero
            last = 0.0
        self._last[key] = total
        record(name, total - last, **labels)
        return total - last

    def forget(self, source: str) -> None:
        """Drop what was remembered for ``source`` (a removed camera)."""
        self._last = {k: v for k, v in self._last.items() if k[1] != source}
