"""Can the nodes that decode read the archive? Checked at plan time, before any work.

On a cluster the archive lives on shared storage, and the path the investigator gives is
the driver's view of it. A file the driver sees but a decoding node does not (a local
disk, a mount missing on one worker, a copy still being written) would otherwise fail
mid-job on a worker, once per segment, with a decoder's error. So one small task per
decoding node (the nodes offering ``placement.workers``, pinned there by node affinity)
stats every file, and a file missing there, or of another size than the driver sees,
becomes one clear error row for that file; the rest of the search goes on.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.config import Settings
from serve.placement import check_placement

CHECK_TIMEOUT_S = 120.0
CHECK_CPUS = 0.05


def _sizes(paths: list[str]) -> tuple[str, list[int | None]]:
    """On a node: its id and each file's size there (None: not readable there)."""
    import ray

    sizes: list[int | None] = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                f.read(1)
            sizes.append(os.path.getsize(path))
        except OSError:
            sizes.append(None)
    return ray.get_runtime_context().get_node_id(), sizes


def decoding_nodes(settings: Settings) -> list[str]:
    """The live nodes whose resources satisfy ``placement.workers`` (the decoders' nodes)."""
    import ray

    asks = dict(settings.placement.workers)
    check_placement({"the archive stages (placement.workers)": {**asks, "CPU": CHECK_CPUS}})
    return [
        n["NodeID"]
        for n in ray.nodes()
        if n.get("Alive") and all(n["Resources"].get(k, 0) >= v for k, v in asks.items())
    ]


def unreadable_on_workers(files: list[Path], settings: Settings) -> dict[Path, str]:
    """For each file some decoding node cannot read as the driver sees it: why."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not files:
        return {}
    driver = [_size_here(p) for p in files]
    task = ray.remote(_sizes)
    refs = [
        task.options(
            num_cpus=CHECK_CPUS,
            max_retries=1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        ).remote([str(p) for p in files])
        for node in decoding_nodes(settings)
    ]
    bad: dict[Path, str] = {}
    for node, sizes in ray.get(refs, timeout=CHECK_TIMEOUT_S):
        for path, want, got in zip(files, driver, sizes, strict=True):
            if got != want and path not in bad:
                bad[path] = _reason(node, want, got)
    return bad


def _size_here(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _reason(node: str, want: int | None, got: int | None) -> str:
    where = f"decoding node {node[:12]}"
    if got is None:
        return (
            f"the file is not readable from {where} (only the driver sees it): put the "
            "archive on storage every worker node mounts at the same path"
        )
    return f"{where} sees {got} bytes, the driver {want}: the file differs between nodes"
