"""The Serve application: ``import_path: serve.app:build_app`` in conf/serve.yaml.

``build_app`` is a typed builder: Serve validates its ``args`` against ``BuildArgs`` and
calls it when the app is deployed (by ``facewatch serve`` or ``serve deploy``). Importing
this module loads no model, opens no store and starts nothing; building only validates the
configuration and binds three deployments into one app named "facewatch":

    Api (FastAPI ingress, stateless)  ->  LiveHub (1 replica: cameras, alerts, store)
                                                   ->  FacePool (the shared model pool)

``jobs.archive.runtime.face_pool`` finds this app's FacePool, so an archive search started while
the server runs uses the same replicas (live first) instead of loading a second copy.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve as ray_serve

from pipelines.config import Settings, load_settings
from pipelines.live.cameras import load_cameras_file
from serve.api import Api
from serve.auth import TokenTable
from serve.hub import HUB_DEPLOYMENT, LiveHub
from serve.memory_env import hub_process_env
from serve.placement import actor_wants, check_device, check_placement, check_store_for_cluster
from serve.pool import POOL_DEPLOYMENT, FacePool, pool_options

logger = logging.getLogger(__name__)

APP_NAME = "facewatch"  # jobs.archive.runtime.SERVE_APP
API_DEPLOYMENT = "Api"
# The hub and the API mostly wait on I/O and on the pool: they reserve little CPU, so the
# pool's replicas get the cores.
LIGHT = {"num_cpus": 0.1}


class BuildArgs(BaseModel):
    """``args`` of the facewatch application in conf/serve.yaml."""

    model_config = ConfigDict(extra="forbid")

    config: Path | None = Field(
        None, description="facewatch YAML config (default: $FACEWATCH_CONFIG, conf/facewatch.yaml)"
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="settings on top of the config file (e.g. pool size)"
    )
    cameras_file: Path | None = Field(
        None, description="cameras YAML (overrides live.cameras_file)"
    )


def build_settings(args: BuildArgs) -> Settings:
    """Effective settings with an absolute home, so every replica agrees on it."""
    settings = load_settings(args.config, overrides=args.settings)
    settings.home = settings.resolved_home()
    if args.cameras_file is not None:
        settings.live.cameras_file = args.cameras_file.expanduser().resolve()
    TokenTable.from_config(settings.api)  # bad token config fails the deploy, clearly
    return settings


def compose(
    settings: Settings,
    overrides: dict[str, dict[str, Any]] | None = None,
    gpus_available: bool | None = None,
):
    """Bind the three deployments; ``overrides`` are Serve deployment options by name."""
    overrides = overrides or {}
    if overrides.get(HUB_DEPLOYMENT, {}).get("num_replicas", 1) != 1:
        raise ValueError(f"{HUB_DEPLOYMENT} must have exactly one replica (it owns the store)")
    unknown = set(overrides) - {POOL_DEPLOYMENT, HUB_DEPLOYMENT, API_DEPLOYMENT}
    if unknown:
        raise ValueError(f"no deployment named {', '.join(sorted(unknown))}")
    if gpus_available is None:
        gpus_available = _cluster_has_gpus()
    cameras = []
    if settings.live.cameras_file is not None:
        cameras = [c.model_dump() for c in load_cameras_file(settings.live.cameras_file)]
    data = settings.model_dump(mode="json")
    options = deployment_options(settings, gpus_available, overrides)
    _check_placement(settings, options)
    # @serve.deployment makes each class a Deployment (.options, .bind); mypy sees the class
    pool = FacePool.options(**options[POOL_DEPLOYMENT]).bind(data)  # type: ignore[attr-defined]
    hub = LiveHub.options(**options[HUB_DEPLOYMENT]).bind(  # type: ignore[attr-defined]
        data, pool, cameras
    )
    return Api.options(**options[API_DEPLOYMENT]).bind(data, hub)  # type: ignore[attr-defined]


def deployment_options(settings: Settings, gpus: bool, overrides: dict[str, dict[str, Any]]):
    """Each deployment's options: ours (the placement section's resources included), then
    conf/serve.yaml's on top (its ``ray_actor_options`` merged key by key, so a placement
    there keeps our CPU share)."""
    # the hub and the API on the home node (placement.home), also when Serve builds the
    # app from conf/serve.yaml (`serve deploy`: Serve applies that file's options itself)
    home = {"resources": dict(settings.placement.home)} if settings.placement.home else {}
    ours = {
        POOL_DEPLOYMENT: pool_options(settings, gpus),
        # Arrow on malloc in the hub, where the embedded store lives (serve/memory_env.py)
        HUB_DEPLOYMENT: {"ray_actor_options": {**LIGHT, **home, **hub_runtime_env()}},
        API_DEPLOYMENT: {"ray_actor_options": {**LIGHT, **home}},
    }
    merged = {}
    for name, base in ours.items():
        override = overrides.get(name, {})
        actor = {**base.get("ray_actor_options", {}), **override.get("ray_actor_options", {})}
        merged[name] = {**base, **override, "ray_actor_options": actor}
    return merged


def hub_runtime_env() -> dict[str, Any]:
    return {"runtime_env": {"env_vars": hub_process_env()}}


def _check_placement(settings: Settings, options: dict[str, dict[str, Any]]) -> None:
    """On a running cluster, a deployment no node can host fails the deploy now, clearly
    (serve/placement.py), instead of waiting forever for its replicas."""
    import ray

    if not ray.is_initialized():
        return
    wants = {name: actor_wants(o["ray_actor_options"]) for name, o in options.items()}
    check_device(settings.pool.device)
    check_placement(wants)
    hub = options[HUB_DEPLOYMENT]["ray_actor_options"].get("resources") or {}
    logger.info(check_store_for_cluster(settings, hub))  # LiveHub writes the store


def _cluster_has_gpus() -> bool:
    try:
        import ray

        return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
    except Exception:  # noqa: BLE001 - no cluster information: assume CPU only
        return False


def build_app(args: BuildArgs | dict[str, Any]) -> ray_serve.Application:
    """Serve's entry point. ``serve run``/``serve deploy`` pass the config's ``args`` as a
    plain dict (this module's annotations are strings, so Serve cannot see the model);
    they are validated here against BuildArgs, so a typo fails the deploy clearly."""
    if not isinstance(args, BuildArgs):
        args = BuildArgs.model_validate(args or {})
    return compose(build_settings(args))
