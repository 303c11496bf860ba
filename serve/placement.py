"""Placement on a Ray cluster: what each part asks for, and a check that some node can
give it, before anything is deployed.

Why the check: Ray waits forever for a task or replica that asks for a resource no node
has (Serve logs a warning now and then, a Ray Data stage just sits), so a typo in
conf/serve.yaml or a cluster whose workers were started without ``--resources`` looks
like a hang. ``check_placement`` turns that into one clear error naming the part, what it
asked for, and what the nodes offer.

Why ``local_resources``: the placement config names custom resources
(``facewatch_home``, ``facewatch_pool``, see conf/facewatch.yaml and conf/serve.yaml).
facewatch's own single-node Ray is the home and the pool at once, so it offers every
resource named there, in plenty; the same config then runs on one node or many.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipelines.config import Settings
from pipelines.errors import FacewatchError

LOCAL_UNITS = 1000.0  # how much of each custom resource facewatch's local node offers
BUILT_IN = ("CPU", "GPU", "memory", "object_store_memory")


class PlacementError(FacewatchError, RuntimeError):
    """A part asks for resources that no node of the cluster offers (a configuration
    error: exit 2)."""

    http_status = 500  # the server's own set-up


def placement_names(
    settings: Settings, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> set[str]:
    """Every custom resource the config names (placement section and Serve options)."""
    p = settings.placement
    names = set(p.home) | set(p.pool) | set(p.workers)
    for options in dict(overrides or {}).values():
        names |= set((options.get("ray_actor_options") or {}).get("resources") or {})
    return names


def local_resources(
    settings: Settings | None, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, float]:
    """What facewatch's local (single-node) Ray offers: every named resource, in plenty."""
    names = placement_names(settings or Settings(), overrides)
    return {name: LOCAL_UNITS for name in sorted(names) if name not in BUILT_IN}


def actor_wants(ray_actor_options: Mapping[str, Any] | None) -> dict[str, float]:
    """The resources one actor or task asks for, from Ray-style options."""
    opts = dict(ray_actor_options or {})
    wants = {k: float(v) for k, v in (opts.get("resources") or {}).items()}
    for key, name in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
        if opts.get(key):
            wants[name] = float(opts[key])
    return wants


def check_placement(wants: Mapping[str, Mapping[str, float]], nodes: Iterable[dict] | None = None):
    """Raise PlacementError unless, for each part, one live node offers all it asks for.

    ``wants``: part name -> resources (``actor_wants``); ``nodes``: ``ray.nodes()``."""
    if nodes is None:
        import ray

        nodes = ray.nodes()
    offers = [n["Resources"] for n in nodes if n.get("Alive", True)]
    for part, asks in wants.items():
        if any(all(o.get(k, 0) >= v for k, v in asks.items()) for o in offers):
            continue
        raise PlacementError(
            f"{part} asks for {_fmt(asks)} and no node of the cluster offers that "
            f"(nodes offer: {'; '.join(_fmt(_custom(o)) for o in offers) or 'no nodes'}); "
            "start a node with those resources (ray start --resources) or change the "
            "placement in conf/serve.yaml / the placement section of the facewatch config"
        )


def check_device(device: str, nodes: Iterable[dict] | None = None) -> None:
    """Raise PlacementError if the FacePool is set to device "cuda" and no live node offers
    a GPU: its replicas would each fail to start in turn, for a minute, before Serve gives
    up. ``nodes``: ``ray.nodes()``."""
    if device != "cuda":
        return
    if nodes is None:
        import ray

        nodes = ray.nodes()
    if any(n["Resources"].get("GPU", 0) > 0 for n in nodes if n.get("Alive", True)):
        return
    raise PlacementError(
        "device 'cuda' was asked for the FacePool (pool.device), but no node of the cluster "
        "offers a GPU; set pool.device to 'auto' or 'cpu', or start a node with a GPU"
    )


def _custom(offer: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in offer.items() if not k.startswith("node:") and k not in BUILT_IN[2:]}


def _fmt(resources: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"


class StoreOnClusterError(PlacementError):
    """milvus-lite asked for on a multi-node cluster, without every writer on the home."""


def check_store_for_cluster(
    settings: Settings, writer_resources: Mapping[str, float], nodes: list[dict] | None = None
) -> str:
    """On a cluster of more than one node, milvus-lite only with every writer pinned to
    the home node. ``writer_resources``: what the store's writer asks for (LiveHub's
    resources for Serve; the home's for a search driver that runs there). Returns a line
    for the log: the store in use, and, for milvus-lite on a cluster, where it is pinned."""
    if settings.store.uri:
        return f"store: Milvus server {settings.store.uri}"
    if nodes is None:
        import ray

        nodes = ray.nodes() if ray.is_initialized() else []
    nodes = [n for n in nodes if n.get("Alive", True)]
    if len(nodes) <= 1:
        return "store: milvus-lite in the home (one node)"
    home = dict(settings.placement.home)
    pinned = bool(home) and all(writer_resources.get(k, 0) >= v for k, v in home.items())
    if settings.placement.lite_writers_on_home and pinned:
        return (
            f"store: milvus-lite on a {len(nodes)}-node cluster, every writer pinned to the "
            f"home node ({_fmt(home)})"
        )
    raise StoreOnClusterError(
        f"milvus-lite on a {len(nodes)}-node Ray cluster: milvus-lite is one process on one "
        "disk, and writers on other nodes would open other files. Set store.uri (--store) "
        "to a Milvus server, or pin every writer to the home node (placement.home, "
        "LiveHub's resources in conf/serve.yaml) and set placement.lite_writers_on_home"
    )
