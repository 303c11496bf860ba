"""Per-replica figures of the FacePool: Ray metrics, and a row for the status page.

Why a reporter in each replica: queue depth and busy fraction are only known inside a
replica, and a Serve handle reaches some replica, not a chosen one. So each replica,
every ``PERIOD_S``, sets its gauges (Serve adds the replica and deployment labels) and
puts one small JSON row, keyed by its replica id, in the Ray cluster's key-value store
(GCS, namespace ``facewatch``); the live hub reads the rows for ``GET /v1/status``, on
whichever node either runs. Rows older than ``STALE_S`` are from replicas that are gone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

from serve import metrics
from serve.priority import ARCHIVE, LIVE

logger = logging.getLogger(__name__)

PERIOD_S = 2.0
STALE_S = 15.0
KV_NAMESPACE = "facewatch"
KV_PREFIX = "pool-replica:"
LANES = {LIVE: "live", ARCHIVE: "archive"}


def replica_identity(deployment: str) -> tuple[str, str]:
    """(replica id, node id) of this process; a pool outside Serve is named by its pid."""
    import ray
    from ray import serve as ray_serve

    try:
        replica = ray_serve.get_replica_context().replica_tag
    except Exception:  # noqa: BLE001 - not a Serve replica (tests run it as a plain actor)
        replica = f"{deployment}-pid{os.getpid()}"
    return replica, ray.get_runtime_context().get_node_id()


class PoolReporter:
    """Samples one replica's busy time and queue, and reports them."""

    def __init__(self, deployment: str, busy_by_lane: dict[int, float], queued):
        import ray

        self.deployment = deployment
        self.busy = busy_by_lane  # the replica's running totals, seconds per lane
        self.queued = queued  # lane -> calls waiting at the gate
        self.replica, self.node_id = replica_identity(deployment)
        self.node_ip = ray.util.get_node_ip_address()
        self._last = (time.monotonic(), dict(busy_by_lane))

    def tick(self) -> dict[str, Any]:
        now = time.monotonic()
        t0, before = self._last
        span = max(1e-6, now - t0)
        fractions = {LANES[p]: min(1.0, (self.busy[p] - before.get(p, 0.0)) / span) for p in LANES}
        self._last = (now, dict(self.busy))
        row = {"replica": self.replica, "node_id": self.node_id, "node_ip": self.node_ip}
        row |= {"pid": os.getpid(), "at": time.time(), "busy_fraction": 0.0}
        for p, lane in LANES.items():
            depth = self.queued(p)
            labels = {"deployment": self.deployment, "lane": lane}
            metrics.record("facewatch_pool_queue_depth", depth, **labels)
            metrics.record("facewatch_pool_busy_fraction", fractions[lane], **labels)
            row[f"queue_{lane}"] = depth
            row[f"busy_{lane}"] = round(fractions[lane], 3)
            row["busy_fraction"] = round(row["busy_fraction"] + fractions[lane], 3)
        self._publish(row)
        return row

    def _publish(self, row: dict[str, Any]) -> None:
        from ray.experimental import internal_kv

        internal_kv._internal_kv_put(
            KV_PREFIX + self.replica, json.dumps(row), overwrite=True, namespace=KV_NAMESPACE
        )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(PERIOD_S)
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - reporting never stops the replica
                logger.exception("pool stats report failed")


def read_replicas(now: float | None = None) -> list[dict[str, Any]]:
    """The rows of live replicas (any node), by replica id; stale rows are removed."""
    from ray.experimental import internal_kv

    now = time.time() if now is None else now
    out = []
    for key in internal_kv._internal_kv_list(KV_PREFIX, namespace=KV_NAMESPACE):
        raw = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
        try:
            row = json.loads(raw) if raw else None
        except ValueError:
            row = None
        if row is None or now - float(row.get("at", 0)) > STALE_S:
            internal_kv._internal_kv_del(key, namespace=KV_NAMESPACE)
            continue
        row["age_s"] = round(now - float(row["at"]), 1)
        out.append(row)
    return sorted(out, key=lambda r: r["replica"])
