"""LiveHub: the one stateful deployment of the live side (exactly one replica).

It owns what may only have one owner: the milvus-lite store (one process per database),
the cameras with their trackers, the review book and the SSE subscribers. The API replicas
forward to it; frames go from here to the shared FacePool, so live and archive work meet
in one pool with live first. Blocking work (store, SQLite, audit, JPEG) runs on one "io"
thread, in order; image decoding on a small thread pool, at most one frame per camera at a
time (``CameraRunner``), so one flooding camera cannot queue work in front of the others;
the event loop only coordinates.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve as ray_serve

from pipelines.cases import Actor
from pipelines.config import Settings
from pipelines.deployments import Deployments
from pipelines.errors import FacewatchError
from pipelines.home import Home
from pipelines.images import decode_reduced
from pipelines.live.alert_record import alert_record
from pipelines.live.analyser import AlertDraft, Face
from pipelines.live.cameras import CameraError, CameraRegistry, CameraSpec, camera_file_roots
from pipelines.live.review_book import ReviewBook, adjudicate
from pipelines.retention import run_retention
from pipelines.schemas import EmbedderInfo, ReviewedAlert
from pipelines.status import read_last_retention, read_searches, utc_now
from pipelines.store import FACES, MATCHES, WATCHLIST, VectorStore
from pipelines.text import check_text
from pipelines.watchlist import Watchlists
from pipelines.workspace import Workspace
from serve import memprobe, metrics
from serve.alerts import AlertFanout, AlertRecorder
from serve.auth import FailureThrottle
from serve.fleet import Fleet
from serve.http import HubError
from serve.hub_metrics import (
    PENDING_SQL,
    PERIOD_S,
    HubMetrics,
    alert_adjudicated,
    alert_raised,
    prime_counters,
)
from serve.loopback import bind_replica_to_node
from serve.matches import match_filter, public_match
from serve.outbox import Outbox
from serve.pool_stats import read_replicas
from serve.stage_times import LoopLag
from serve.webhooks import WebhookDispatcher

logger = logging.getLogger(__name__)

HUB_DEPLOYMENT = "LiveHub"
DRILL_WARNING = (
    "DRILL MODE: live.keep_nonmatches is on. Faces of people who match NO watch list are "
    "being KEPT (crops and embeddings in fw_faces). Never run this on a real deployment."
)


def embedder_from_key(key: str, dim: int) -> EmbedderInfo:
    name, _, rest = key.partition("@")
    version = rest.rsplit("/", 1)[0]
    return EmbedderInfo(name, version, int(dim))


def default_threshold(settings: Settings) -> float:
    """The embedder's shipped threshold (a class attribute: no weights are loaded)."""
    import torch

    from pipelines.embedders.backends import build_embedder

    return float(build_embedder(settings.embedder, torch.device("cpu")).default_threshold)


def hub_errors(fn):
    """Expected failures leave as HubError (its HTTP status and public message), which
    crosses Ray by its arguments; the API's one FacewatchError handler answers with it."""

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except HubError:
            raise
        except FacewatchError as exc:  # an unaudited act (AuditUnavailable) did not happen
            if exc.http_status >= 500:
                logger.error("%s", exc)
            raise HubError(exc.http_status, exc.public_message()) from None

    return wrapper


@ray_serve.deployment(
    name=HUB_DEPLOYMENT,
    num_replicas=1,
    max_ongoing_requests=2048,
    health_check_period_s=10,
    graceful_shutdown_timeout_s=10,
)
class LiveHub:
    def __init__(self, settings: dict, pool, cameras: list[dict]):
        bind_replica_to_node()
        metrics.install()  # the store's, audit log's and retention's emits, as Ray metrics
        self.settings = Settings.model_validate(settings)
        self.live = self.settings.live
        self.pool = pool
        self.hub_metrics = HubMetrics()
        self._io_pool = ThreadPoolExecutor(1, thread_name_prefix="hub-io")
        self._cpu_pool = ThreadPoolExecutor(2, thread_name_prefix="hub-decode")
        self.home = Home.open(self.settings)
        self.store = VectorStore.open(self.settings)  # fails now if another process has it
        self.audit, self.media = self.home.audit, self.home.media
        self.lists: Watchlists | None = None  # once the pool has told us its embedder
        self.reviews = ReviewBook(self.home.catalog)  # their tables: in the catalog's file
        self.registry = CameraRegistry(self.home.catalog)
        self.deployments = Deployments(self.home.catalog, self.audit)
        # investigators' cases (serve.workspace_api); their searches run on this cluster
        self.workspace = Workspace(self.home, _cluster_address())
        self._scanned: dict[str, tuple[int, int]] = {}  # camera -> (runner id, faces reported)
        self._next_retention = 0.0  # monotonic; the first round runs at start-up
        self._auth_failures = FailureThrottle()  # audit records of refused requests
        self.recorder = AlertRecorder(self.store, self.media, self.reviews)
        self.alerts_not_stored: Counter[str] = Counter()  # by cause: "disk full", ...
        # webhook deliveries wait in the home's catalog until acknowledged (serve/outbox.py);
        # the senders start with what an earlier server left there
        self.outbox = Outbox(self.home.catalog.path)
        self.outbox.prune()
        self.fanout = AlertFanout(WebhookDispatcher(self.live.webhooks, self.outbox))
        self.fanout.webhooks.start()
        self.fleet = Fleet(
            self.live,
            self.registry,
            [CameraSpec.model_validate(c) for c in cameras],
            self._analyse,
            _Sink(self),
            self._load_gallery,
            self._list_versions,
            self._frozen_snapshot,
            file_roots=camera_file_roots(self.home.path),
        )
        self.ready = asyncio.Event()
        self.failed: BaseException | None = None
        self.loop_lag = LoopLag()  # a blocked event loop delays every camera's frames
        self._tasks = {
            asyncio.ensure_future(self._start()),
            asyncio.ensure_future(self.loop_lag.run()),
        }
        if self.live.keep_nonmatches:
            logger.warning(DRILL_WARNING)
        memprobe.start_if_asked("LiveHub")

    # -- start-up and upkeep ---------------------------------------------------------------
    async def _start(self) -> None:
        try:
            desc = await self.pool.describe.remote()
            info = embedder_from_key(desc["embedder"], desc["dim"])
            await self._io(self.store.bind, info)
            self.home.store = self.store
            self.lists = Watchlists(self.home, info, default_threshold(self.settings))
            await self.fleet.refresh_lists()
            await self.fleet.reconcile()
        except Exception as exc:
            self.failed = exc
            logger.exception("live hub failed to start")
            return
        self.ready.set()
        prime_counters((WATCHLIST, MATCHES, FACES))
        self._tasks.add(asyncio.ensure_future(self._upkeep()))
        self._tasks.add(asyncio.ensure_future(self._metrics_loop()))
        logger.info("live hub ready: %d camera(s)", len(self.fleet.runners))

    async def _upkeep(self) -> None:
        last_warning = time.monotonic()
        while True:
            steps = (self._retention_if_due, self._report_scanned, self._audit_refusals)
            for step in (*steps, self._store_handoffs):
                try:
                    await step()
                except Exception:  # noqa: BLE001 - keep the loop alive; the next round retries
                    logger.exception("upkeep step %s failed", step.__name__)
            await asyncio.sleep(self.live.list_refresh_s)
            try:
                await self.fleet.refresh_lists()
                await self.fleet.reconcile()
            except Exception:  # noqa: BLE001 - keep the loop alive; the next round retries
                logger.exception("camera/list upkeep failed")
            if self.live.keep_nonmatches and time.monotonic() - last_warning > 600:
                logger.warning(DRILL_WARNING)
                last_warning = time.monotonic()

    async def _metrics_loop(self) -> None:
        """Sample cameras, webhooks, pending alerts and (less often) store rows into Ray
        metrics (serve.hub_metrics)."""
        while True:
            try:
                await self._sample_metrics()
            except Exception:  # noqa: BLE001 - keep sampling; the next round retries
                logger.exception("metrics sample failed")
            await asyncio.sleep(PERIOD_S)

    async def _sample_metrics(self) -> None:
        m = self.hub_metrics
        m.cameras_sample(self.fleet.statuses())
        depth = await self._io(lambda: self.fanout.webhooks.pending)  # SQLite: the io thread
        m.webhooks_sample(dict(self.fanout.webhooks.counters), depth)
        m.pending_sample(await self._io(self.home.catalog.rows, PENDING_SQL))
        if m.rows_due():
            m.rows_sample(await self._io(self._row_counts))

    def _row_counts(self) -> dict[str, int]:
        return {name: self.store.count(name) for name in (WATCHLIST, MATCHES, FACES)}

    async def _audit_refusals(self) -> None:
        """The refused requests left out of the audit log in the last window, counted."""
        for client, reason, left_out, actor in self._auth_failures.due():
            await self._io(
                self.audit.append,
                actor,
                "auth.failure",
                client=client,
                reason=reason,
                repeats_left_out=left_out,
            )

    async def _store_handoffs(self) -> None:
        """Matches that workspace searches handed over (this hub holds the milvus-lite
        store; pipelines/handoff.py), stored even while nobody follows the search."""
        done = await self._io(self.workspace.jobs.ingest)
        if done:
            logger.info("stored the matches of %d handed-over file(s)", done)

    async def _report_scanned(self) -> None:
        """Add each camera's newly analysed faces to the deployments' counter (counts only)."""
        for cid, runner in list(self.fleet.runners.items()):
            faces = int(runner.analyser.counters["faces"])
            run_id, reported = self._scanned.get(cid, (id(runner), 0))
            if run_id != id(runner):  # the camera was restarted: its counters began again
                reported = 0
            if faces > reported:
                await self._io(self.deployments.record_scanned, cid, faces - reported)
            self._scanned[cid] = (id(runner), faces)

    async def _retention_if_due(self) -> None:
        """Run retention every ``governance.retention.interval_h`` hours; this process owns
        the store, so ``facewatch retention run`` cannot while the server runs."""
        if time.monotonic() < self._next_retention or self.lists is None:
            return
        policy = self.settings.governance.retention
        self._next_retention = time.monotonic() + policy.interval_h * 3600
        done = await self._io(run_retention, self.lists, policy, "live-hub (schedule)")
        logger.info("retention run: %s", done)

    async def _frozen_snapshot(self, camera_id: str) -> str | None:
        """The list snapshot frozen by the running deployment that holds this camera."""
        deployment = await self._io(self.deployments.active_for_camera, camera_id)
        return deployment["snapshot_id"] if deployment else None

    def check_health(self) -> None:
        if self.failed is not None:
            raise RuntimeError(f"live hub failed to start: {self.failed}")

    async def __del__(self) -> None:
        """Serve calls this on shutdown: stop cameras (their faces are dropped), stop
        webhook retries, and release the store so the next server can open it."""
        for task in list(self._tasks):
            task.cancel()
        await self.fleet.stop_all()
        await self.fanout.webhooks.close()  # what is pending stays in the outbox
        await self._io(self.outbox.close)
        await self._io(self.store.close)
        await self._io(self.home.close)
        self._io_pool.shutdown(wait=False)
        self._cpu_pool.shutdown(wait=False)
        logger.info("live hub stopped")

    async def _ready(self) -> None:
        if not self.ready.is_set():
            try:
                await asyncio.wait_for(self.ready.wait(), 30)
            except asyncio.TimeoutError:
                raise HubError(503, "the live hub is still starting") from None

    async def _io(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io_pool, functools.partial(fn, *args, **kwargs))

    # -- what the fleet needs --------------------------------------------------------------
    async def _analyse(self, frame: np.ndarray, regions: np.ndarray | None):
        return await self.pool.live.remote(frame, regions)

    async def _decode(self, data: bytes) -> tuple[np.ndarray, tuple[int, int]]:
        """A pushed frame, decoded at most ``live.decode_max_side`` pixels on its longer
        side (``pipelines.live.working_size``), with its original size."""
        loop = asyncio.get_running_loop()
        live = self.live
        return await loop.run_in_executor(
            self._cpu_pool,
            decode_reduced,
            data,
            "frame",
            live.max_push_pixels,
            live.decode_max_side,
        )

    async def _load_gallery(
        self, list_name: str | None, threshold: float | None, snapshot_id: str | None
    ):
        assert self.lists is not None, "lists are loaded after start-up"
        return await self._io(
            self.lists.active_gallery,
            list_name,
            override=threshold,
            actor="live-hub",
            warn=logger.warning,
            snapshot_id=snapshot_id,
        )

    async def _list_versions(self) -> dict[str, Any]:
        """What, when it changes, means the cameras' lists must be rebuilt: list versions and
        thresholds, and which deployments are running (they freeze their cameras' lists)."""
        rows = await self._io(self.home.catalog.rows, "SELECT name, version, threshold FROM lists")
        running = await self._io(
            self.home.catalog.rows, "SELECT deployment_id FROM deployments WHERE ended_at IS NULL"
        )
        out: dict[str, Any] = {r["name"]: (r["version"], r["threshold"]) for r in rows}
        out["running deployments"] = sorted(r["deployment_id"] for r in running)
        return out

    # -- API: health, cameras, frames ------------------------------------------------------
    async def ping(self) -> str:
        await self._ready()
        return "ok"

    async def cameras(self) -> list[dict]:
        await self._ready()
        return self.fleet.statuses()

    @hub_errors
    async def add_camera(self, data: dict, actor: str) -> dict:
        """Validated here (the API forwards the body as it came), so that the file rule
        uses this replica's home and files. A camera that cannot start is not kept."""
        await self._ready()
        spec = self.fleet.admit(data)
        await self._io(self.registry.add_audited, spec, actor, self.audit)
        await self.fleet.reconcile()
        runner = self.fleet.get(spec.id)
        if runner.start_error is not None:
            reason = runner.start_error
            await self._io(self.registry.remove_audited, spec.id, actor, self.audit, reason)
            await self.fleet.reconcile()
            raise CameraError(f"camera '{spec.id}' {reason}")
        return runner.status()

    @hub_errors
    async def remove_camera(self, camera_id: str, actor: str) -> dict:
        await self._ready()
        self.fleet.check_removable(camera_id)
        await self._io(self.registry.remove_audited, camera_id, actor, self.audit)
        await self.fleet.reconcile()
        return {"removed": camera_id}

    @hub_errors
    async def push_frame(self, camera_id: str, data: bytes, wait: bool) -> dict:
        await self._ready()
        return await self.fleet.get(camera_id).push(data, self._decode, wait)

    @hub_errors
    async def refresh_lists(self, actor: str) -> dict:
        await self._ready()
        await self._io(self.audit.append, actor, "lists.refresh")
        await self.fleet.refresh_lists(force=True)
        return {c["id"]: c["watchlist"] for c in self.fleet.statuses()}

    # -- API: alerts, review, stats --------------------------------------------------------
    @hub_errors
    async def list_alerts(self, status: str, camera: str | None, limit: int) -> list[dict]:
        return await self._io(self.reviews.list, status, camera, limit)

    @hub_errors
    async def get_alert(self, alert_id: str) -> dict:
        return await self._io(self.reviews.get, alert_id)

    @hub_errors
    async def alert_media(self, alert_id: str, kind: str, actor: str) -> bytes:
        """The face crop or the watch-list photo of an alert: biometric data shown to a
        person, so who saw whose face is audited (``alert.view``)."""
        alert = await self._io(self.reviews.get, alert_id)
        rel = alert.get("thumbnail") if kind == "crop" else alert.get("photo")
        if not rel:
            raise HubError(404, f"alert '{alert_id}' has no {kind}")
        try:
            data = await self._io(lambda: self.media.path(rel).read_bytes())
        except FileNotFoundError:
            raise HubError(404, f"the {kind} of alert '{alert_id}' is missing") from None
        await self._io(
            self.audit.append,
            actor,
            "alert.view",
            alert_id=alert_id,
            kind=kind,
            person_id=alert["person_id"],
            camera_id=alert["camera_id"],
        )
        return data

    @hub_errors
    async def adjudicate(self, alert_id: str, outcome: str, note: str, actor: str) -> dict:
        check_text(note, "note", free_text=True)
        alert = await self._io(self.reviews.check_pending, alert_id)
        await self._io(self.audit.check)  # a decision that cannot be audited is not taken
        decided = await self._io(
            adjudicate, self.reviews, self.recorder.set_status, alert_id, outcome, note, actor
        )
        await self._io(
            self.audit.append,
            actor,
            "alert.adjudicate",
            alert_id=alert_id,
            outcome=outcome,
            note=note,
            camera_id=alert["camera_id"],
            person_id=alert["person_id"],
            list_name=alert["list_name"],
        )
        self.fanout.publish_decision(decided)
        alert_adjudicated(alert["camera_id"], alert["list_name"], outcome)
        return decided

    async def stats(self) -> dict:
        summary = await self._io(self.reviews.stats)
        summary["live"] = {
            c["id"]: {
                k: c[k] for k in ("state", "analysed_fps", "frames_analysed", "drops", "drop_rate")
            }
            | c["counters"]
            for c in self.fleet.statuses()
        }
        summary["non_match_data"] = "KEPT (drill)" if self.live.keep_nonmatches else "discarded"
        summary["stored"] = await self._io(self._stored_counts)
        summary["webhooks"] = await self._io(self.fanout.webhooks.stats)
        summary["sse_subscribers"] = self.fanout.subscribers
        summary["alerts_not_stored"] = dict(self.alerts_not_stored)
        summary["store_flushes"] = self.recorder.flush_counts()
        summary["event_loop_lag_ms"] = self.loop_lag.summary()
        return summary

    async def status(self) -> dict:
        """Everything ``GET /v1/status`` and ``facewatch status`` show, at a glance."""
        await self._ready()
        hooks = self.fanout.webhooks
        rows = await self._io(self._row_counts)  # fresh: the status is asked for rarely
        return {
            "generated_at": utc_now(),
            "cameras": [camera_row(c) for c in self.fleet.statuses()],
            "pool": {"replicas": await self._io(read_replicas)},
            "searches": await self._io(read_searches, self.home.path),
            "store": {"backend": self.store.where.split(" at /")[0], "rows": rows},
            "outbox": {
                "depth": await self._io(lambda: hooks.pending),  # SQLite: the io thread
                "hooks": len(hooks.hooks),
                **hooks.counters,
            },
            "retention": {
                "interval_h": self.settings.governance.retention.interval_h,
                "last_run": await self._io(read_last_retention, self.home.path),
            },
        }

    def _stored_counts(self) -> dict[str, int]:
        """Rows in Milvus written by the live path: alerts, and (drills only) faces."""
        return {
            "live_matches": self.store.count(MATCHES, 'source == "live"'),
            "faces": self.store.count(FACES),
        }

    async def subscribe(self, last_event_id: str | None) -> AsyncIterator[str]:
        async for message in self.fanout.subscribe(last_event_id):
            yield message

    @hub_errors
    async def search_matches(self, query: dict, case: str, reason: str, actor: str) -> dict:
        where = match_filter(query)
        check_text(case, "case")
        check_text(reason, "reason", free_text=True)
        await self._io(
            self.audit.append, actor, "search.matches", case=case, reason=reason, query=query
        )
        rows = await self._io(self.store.query, "fw_matches", where, limit=query["limit"])
        rows.sort(key=lambda r: r.get("created_at", 0), reverse=True)
        return {"matches": [public_match(r) for r in rows]}

    @hub_errors
    async def case_act(self, op: str, actor: str, role: str, *args: Any) -> Any:
        """An act of the investigator workspace (``pipelines.workspace``), on the io thread.
        A probe photo is checked for one usable face by the face pool first."""
        who = Actor(actor, role)
        if op == "probe":
            args = (*args, await self._probe_problem(who, *args))
        return await self._io(self.workspace.call, op, who, *args)

    async def _probe_problem(self, who: Actor, ref: str, data: bytes) -> str | None:
        """Why a probe photo has no usable face (None: it has exactly one), by the pool's
        detector and the quality gates a search uses; the image is checked first."""
        image = await self._io(self.workspace.call, "probe_image", who, ref, data)
        verdict = (await self.pool.photos.remote([image]))[0]
        return verdict if isinstance(verdict, str) else None

    async def auth_failure(self, details: dict) -> None:
        """A refused request: 401s as ``anonymous``, 403s as the token's name (its id,
        never its value), throttled per client, reason and actor."""
        details = dict(details)
        actor = str(details.pop("actor", "") or "anonymous")
        client, reason = details.get("client", ""), details.get("reason", "")
        left_out = self._auth_failures.admit(client, reason, actor)
        if left_out is None:  # a repeat within the window: counted in the next record
            return
        await self._io(
            self.audit.append, actor, "auth.failure", **details, repeats_left_out=left_out
        )


def camera_row(c: dict[str, Any]) -> dict[str, Any]:
    """A camera as the status page shows it."""
    keys = ("id", "state", "fps", "analysed_fps", "frames_analysed", "drops", "reconnects")
    return {k: c.get(k) for k in keys} | {"list": c.get("list"), "last_error": c["last_error"]}


def _cluster_address() -> str | None:
    import ray

    return ray.get_runtime_context().gcs_address if ray.is_initialized() else None


def _home_relative(path: str, home: Path) -> str:
    """Gallery photos are absolute paths; alerts keep them relative to the home, so no
    server path leaves in the API and a moved home still works."""
    try:
        return Path(path).resolve().relative_to(home.resolve()).as_posix()
    except ValueError:
        return path


def store_failure(exc: BaseException) -> str:
    """An alert's failed store, by cause: "disk full" (ENOSPC, a quota, SQLite's "database
    or disk is full", milvus-lite's message), else the exception's type."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    text = str(exc).lower()
    if "disk is full" in text or "no space left" in text:
        return "disk full"
    return type(exc).__name__


class _Sink:
    """Where a camera's decisions go: stored first, then kept in the webhook outbox, then
    pushed (SSE) and posted."""

    def __init__(self, hub: LiveHub):
        self.hub = hub

    async def alert(self, draft: AlertDraft, camera: CameraSpec) -> None:
        record = alert_record(draft, camera)
        record["photo"] = _home_relative(record["photo"], self.hub.home.path)
        webhooks = self.hub.fanout.webhooks

        def keep_deliveries(db: sqlite3.Connection, public: ReviewedAlert) -> None:
            # in the alert's own transaction: a crash keeps both or neither
            webhooks.enqueue_in(db, {"event": "alert", **public}, draft.alert_id, camera.id)

        try:
            await self.hub._io(self.hub.recorder.record, draft, record, keep_deliveries)
        except Exception as exc:
            logger.exception("alert %s could not be stored; not sent", draft.alert_id)
            self.hub.alerts_not_stored[store_failure(exc)] += 1
            return
        public = await self.hub._io(self.hub.reviews.get, draft.alert_id)
        self.hub.fanout.publish_alert(record, public)
        alert_raised(draft.camera_id, draft.list_name, draft.trigger_received_at)

    async def drill_face(self, camera: CameraSpec, track_id: int, face: Face) -> None:
        face_id = f"drill_{camera.id}_{track_id}_{face.seq}_{face.face_index}"
        logger.warning("DRILL MODE: keeping a non-matching face from camera %s", camera.id)
        await self.hub._io(self.hub.recorder.drill_face, camera, face_id, face)
