"""Shared fixtures: real data from ../shared, one face engine and one local Ray per session,
and the vector store on both backends (milvus-lite, and one real Milvus server per session)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

# Ray and every server the tests start stay on loopback.
os.environ.setdefault("RAY_NODE_IP_ADDRESS", "127.0.0.1")


@pytest.fixture(scope="session")
def data() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"the shared face data is missing: expected {SHARED} (see README, Tests)")
    return SHARED


@pytest.fixture(scope="session")
def settings():
    from pipelines.config import Settings

    return Settings()


@pytest.fixture(scope="session")
def engine(settings):
    """The real engine: MTCNN + dlib-resnet from the installed wheels, loaded once."""
    from pipelines.engine import FaceEngine

    return FaceEngine(settings, device="cpu").load()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """One real Milvus 2.3 server for the session, started on first use (about 20 s), in a
    private network namespace that only loopback reaches (tests/milvus_loopback.py)."""
    from milvus_loopback import MilvusLoopbackServer, MilvusServerUnavailable

    try:
        with MilvusLoopbackServer(tmp_path_factory.mktemp("milvus-server")) as srv:
            yield srv
    except MilvusServerUnavailable as exc:
        pytest.fail(f"these tests need a Milvus server on loopback: {exc}")


_DATABASES = itertools.count()


@pytest.fixture(params=["lite", "server"])
def store_settings(request, tmp_path):
    """Settings for a fresh, empty store on each backend: a milvus-lite database in the
    test's home, or a new database on the session's Milvus server (dropped afterwards), so
    a store contract test runs twice and its counts mean the same on both."""
    from pymilvus import MilvusClient

    from pipelines.config import Settings

    if request.param == "lite":
        yield Settings(home=tmp_path / "home")
        return
    uri = request.getfixturevalue("milvus_server").uri
    name = f"t{os.getpid()}_{next(_DATABASES)}"
    admin = MilvusClient(uri=uri)
    admin.create_database(name)
    try:
        yield Settings(home=tmp_path / "home", store={"uri": uri, "db_name": name})
    finally:
        inside = MilvusClient(uri=uri, db_name=name)  # 2.3 has no DescribeDatabase to switch
        for collection in inside.list_collections():
            inside.drop_collection(collection)
        inside.close()
        admin.drop_database(name)
        admin.close()
