"""The set of running cameras, kept in line with what is configured, and their watch lists.

Desired cameras come from two places: the YAML file named by ``live.cameras_file`` (fixed
while the server runs) and the registry table that the API and the CLI write. ``reconcile``
starts what is missing, stops what was removed and restarts what changed; the hub calls
it after every API change and on a timer, so ``facewatch camera add`` takes effect on a
running server within ``live.list_refresh_s`` seconds. A camera that cannot start (an unset
``${CAM...}`` variable, a registry file outside the allowed folders) is kept in the fleet
in state ``error`` with the reason; the cameras after it start as usual.

Each camera matches against an in-memory copy of its list (a ``Matcher``), shared by the
cameras that use the same list and threshold. The catalog bumps a list's version whenever
its entries or threshold change; the fleet polls those versions (one small SQLite query)
and swaps in a fresh copy when they move. A camera held by a running deployment matches
the deployment's frozen list snapshot instead (``snapshot_for``), so nobody enrolled after
the deployment started is matched by it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from pipelines.config import LiveConfig
from pipelines.live.cameras import (
    CameraError,
    CameraRegistry,
    CameraSpec,
    check_camera_host,
    confine,
    expand_secrets,
    parse_spec,
    redact_url,
    scrub_secrets,
)
from pipelines.match import Gallery, Matcher
from serve.fair_share import FairShare
from serve.ingest import AlertSink, Analyse, CameraRunner

logger = logging.getLogger(__name__)
RETRY_FAILED_S = 300.0  # a camera that could not start is tried again this often


def _retry_due(runner: CameraRunner) -> bool:
    """A camera in state ``error`` whose last attempt is RETRY_FAILED_S old: the cause may
    have passed (a catalog that was locked, a deployment record being written)."""
    failed_at = runner.failed_at
    return failed_at is not None and time.monotonic() - failed_at >= RETRY_FAILED_S


# (list name or None for all lists, threshold override, frozen snapshot id or None)
ListKey = tuple[str | None, float | None, str | None]
LoadGallery = Callable[[str | None, float | None, str | None], Awaitable[Gallery]]
ListVersions = Callable[[], Awaitable[dict[str, Any]]]
SnapshotFor = Callable[[str], Awaitable[str | None]]


async def _no_snapshot(camera_id: str) -> str | None:
    return None


class Fleet:
    def __init__(
        self,
        policy: LiveConfig,
        registry: CameraRegistry,
        fixed: list[CameraSpec],
        analyse: Analyse,
        sink: AlertSink,
        load_gallery: LoadGallery,
        list_versions: ListVersions,
        snapshot_for: SnapshotFor = _no_snapshot,
        file_roots: Sequence[Path] | None = None,
    ):
        """``file_roots``: the folders video files of registry cameras (API, CLI) must lie
        in (``pipelines.live.cameras.camera_file_roots``); None: no such rule."""
        self.policy, self.registry, self.fixed = policy, registry, {s.id: s for s in fixed}
        self._analyse, self._sink = analyse, sink
        self._load_gallery, self._list_versions = load_gallery, list_versions
        self._snapshot_for = snapshot_for
        self.file_roots = file_roots
        self.runners: dict[str, CameraRunner] = {}
        # live frames at the pool at once, all cameras together, taken in turn
        self.share = FairShare(policy.frames_at_pool)
        self._matchers: dict[ListKey, tuple[Matcher | None, dict[str, Any]]] = {}
        self._versions: dict[str, Any] | None = None

    # -- cameras ----------------------------------------------------------------------------
    def desired(self) -> dict[str, tuple[CameraSpec, str]]:
        out = {s.id: (s, "api") for s in self.registry.all()}
        for cid, spec in self.fixed.items():
            if cid in out:
                logger.warning("camera %s is in the cameras file and the registry; file wins", cid)
            out[cid] = (spec, "config")
        return out

    async def reconcile(self) -> None:
        desired = self.desired()
        for cid in [c for c in self.runners if c not in desired]:
            await self.runners.pop(cid).stop()
            logger.info("camera %s stopped", cid)
        for cid, (spec, origin) in desired.items():
            running = self.runners.get(cid)
            if running is not None and running.spec == spec and not _retry_due(running):
                continue
            if running is not None:
                await self.runners.pop(cid).stop()
            if len(self.runners) >= self.policy.max_cameras:
                logger.error("camera %s not started: live.max_cameras reached", cid)
                continue
            await self._start(spec, origin)

    async def _start(self, spec: CameraSpec, origin: str) -> None:
        """Start one camera; if it cannot start, keep it with the reason as its error."""
        runner = CameraRunner(
            spec, self.policy, self._analyse, self._sink, origin, share=self.share
        )
        self.runners[spec.id] = runner
        try:
            self._check_startable(spec, origin)
            runner.set_matcher(*await self._matcher(await self._key(spec)))
            runner.start()
        except Exception as exc:  # noqa: BLE001 - one camera must not stop the others
            await runner.stop()  # whatever it had started
            reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            reason = scrub_secrets(f"cannot start: {reason}", public_url=redact_url(spec.url))
            runner.fail(reason)
            logger.error("camera %s: %s", spec.id, reason[:300])
            return
        logger.info("camera %s started (%s, %s fps)", spec.id, spec.kind, runner.fps)

    def _check_startable(self, spec: CameraSpec, origin: str) -> None:
        """What a spec needs to start, checked before anything runs: its secrets are set,
        and a registry camera's file lies in the allowed folders (the CLI may have added
        it without that rule)."""
        if spec.kind != "push":
            expand_secrets(spec.url)
        if spec.kind == "file" and origin == "api" and self.file_roots is not None:
            confine(Path(spec.url), self.file_roots)

    def admit(self, data: dict) -> CameraSpec:
        """A camera to add through the API, checked as far as it can be before it is stored:
        a valid spec, its file in the allowed folders, its secrets set, room for it."""
        spec = parse_spec(data, file_roots=self.file_roots)
        self.check_new(spec)
        check_camera_host(spec.url, self.policy.allowed_camera_networks, resolve=False)
        try:
            self._check_startable(spec, "api")
        except ValueError as exc:  # CameraError is one
            raise CameraError(f"camera '{spec.id}' cannot start: {exc}") from None
        return spec

    def get(self, camera_id: str) -> CameraRunner:
        runner = self.runners.get(camera_id)
        if runner is None:
            raise CameraError(f"no camera '{camera_id}'", status=404)
        return runner

    def check_new(self, spec: CameraSpec) -> None:
        if spec.id in self.fixed:
            raise CameraError(f"camera '{spec.id}' is defined in the cameras file", status=409)
        if len(self.desired()) >= self.policy.max_cameras:
            raise CameraError(f"at most {self.policy.max_cameras} cameras", status=409)

    def check_removable(self, camera_id: str) -> None:
        if camera_id in self.fixed:
            raise CameraError(
                f"camera '{camera_id}' is defined in the cameras file; edit the file", status=409
            )

    async def stop_all(self) -> None:
        for cid in list(self.runners):
            await self.runners.pop(cid).stop()

    # -- watch lists ------------------------------------------------------------------------
    async def _key(self, spec: CameraSpec) -> ListKey:
        return spec.list_name, spec.threshold, await self._snapshot_for(spec.id)

    async def _matcher(self, key: ListKey) -> tuple[Matcher | None, dict[str, Any]]:
        if key not in self._matchers:
            self._matchers[key] = await self._build(key)
        return self._matchers[key]

    async def _build(self, key: ListKey) -> tuple[Matcher | None, dict[str, Any]]:
        list_name, threshold, snapshot_id = key
        try:
            gallery = await self._load_gallery(list_name, threshold, snapshot_id)
        except Exception as exc:  # noqa: BLE001 - a bad list must not stop the camera
            logger.error("watch list %s: cannot load: %s", list_name or "(all)", exc)
            return None, {"list": list_name, "error": str(exc)[:300], "people": 0}
        info = {
            "list": list_name,
            "people": len(gallery.people),
            "entries": len(gallery),
            "snapshots": dict(gallery.snapshot_ids),
            "threshold_override": threshold,
            "frozen_snapshot": snapshot_id,
        }
        return (Matcher(gallery) if len(gallery) else None), info

    async def refresh_lists(self, force: bool = False) -> bool:
        """Reload the in-memory lists when the catalog says they changed (or when forced)."""
        versions = await self._list_versions()
        if not force and versions == self._versions:
            return False
        self._versions = versions
        self._matchers.clear()
        for runner in self.runners.values():
            runner.set_matcher(*await self._matcher(await self._key(runner.spec)))
        logger.info("watch lists reloaded for %d camera(s)", len(self.runners))
        return True

    def statuses(self) -> list[dict[str, Any]]:
        return [self.runners[c].status() for c in sorted(self.runners)]
