"""The fleet gives each camera its list: the live list, or the frozen snapshot of the running
deployment that holds the camera. No Ray, no models: the gallery loader is a recording fake
(named so), and cameras are push cameras (no reader thread)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pipelines.config import LiveConfig
from pipelines.match import Gallery
from pipelines.schemas import EmbedderInfo
from serve.cameras import CameraRegistry, CameraSpec
from serve.fleet import Fleet

INFO = EmbedderInfo("dlib-resnet", "test", 4)


def one_person_gallery(name: str) -> Gallery:
    return Gallery(
        embeddings=np.eye(1, 4, dtype=np.float32),
        entry_ids=[f"e_{name}"],
        person_ids=[f"p_{name}"],
        person_names=[name],
        list_names=["wanted"],
        photos=[""],
        embedder=INFO,
        thresholds=np.array([0.9], np.float32),
    )


class FakeCatalogState:
    """Stands in for the hub: which snapshot each camera's deployment froze, list versions."""

    def __init__(self):
        self.frozen: dict[str, str] = {}
        self.running: list[str] = []
        self.loads: list[tuple] = []

    async def load_gallery(self, list_name, threshold, snapshot_id):
        self.loads.append((list_name, threshold, snapshot_id))
        return one_person_gallery(snapshot_id or "live")

    async def versions(self):
        return {"wanted": (1, None), "running deployments": list(self.running)}

    async def snapshot_for(self, camera_id):
        return self.frozen.get(camera_id)


async def noop_analyse(frame):  # never called: no frames are pushed here
    raise AssertionError("no analysis expected")


@pytest.mark.timeout(30)
def test_cameras_in_a_running_deployment_match_its_frozen_snapshot(tmp_path):
    state = FakeCatalogState()
    registry = CameraRegistry(tmp_path / "cams.sqlite")
    specs = [CameraSpec(id=c, url="push", list_name="wanted") for c in ("gate-a", "gate-b")]

    async def scenario():
        fleet = Fleet(
            LiveConfig(), registry, specs, noop_analyse, None,
            state.load_gallery, state.versions, state.snapshot_for,
        )  # fmt: skip
        await fleet.refresh_lists()
        await fleet.reconcile()
        assert all(r.list_info["frozen_snapshot"] is None for r in fleet.runners.values())
        # a deployment starts on gate-a: the versions move, gate-a gets the frozen list
        state.frozen["gate-a"], state.running = "s_frozen", ["d_1"]
        assert await fleet.refresh_lists()
        info = {cid: r.list_info for cid, r in fleet.runners.items()}
        await fleet.stop_all()
        return info

    info = asyncio.run(scenario())
    assert info["gate-a"]["frozen_snapshot"] == "s_frozen"
    assert info["gate-b"]["frozen_snapshot"] is None
    assert ("wanted", None, "s_frozen") in state.loads
    assert ("wanted", None, None) in state.loads
