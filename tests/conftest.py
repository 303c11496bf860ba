"""Shared fixtures: real data from ../shared, one face engine and one local Ray per session,
and the vector store on both backends (milvus-lite, and one real Milvus server per session)."""

from __future__ import annotations

import itertools
import logging
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

# Ray and every server the tests start stay on loopback.
os.environ.setdefault("RAY_NODE_IP_ADDRESS", "127.0.0.1")
# Serve's proxy closes its own /-/ routes (serve.proxy); set before any test starts Ray, as
# serve.local.start_local does for `facewatch serve`.
os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", "serve.proxy:proxy_middlewares")


@pytest.fixture(scope="session")
def data() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"the shared face data is missing: expected {SHARED} (see docs/testing.md)")
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


# --- Test tiers --------------------------------------------------------------------------
# `make test-fast` runs `-m unit`. A test is `integration` when it uses a fixture that starts
# a heavy real part (local Ray, the face engine or MTCNN, real dlib, a Milvus or live server,
# a browser, the CLI); a module or test may also say so itself with a marker. Everything
# else is `unit`: plain Python on small inputs.
HEAVY_FIXTURES = frozenset(
    {
        "engine",  # MTCNN + dlib-resnet (tests/conftest.py)
        "engine_module",  # the same, per module (tests/pipelines/test_regions.py)
        "detector",  # MTCNN alone
        "dlib_reference",  # real dlib (dlib-bin) as the golden reference
        "cli",  # the facewatch CLI, enrolling and searching with the real engine
        "ray_address",  # a local Ray (tests/jobs/test_search.py)
        "pool",  # Ray + the FacePool (tests/jobs/test_index.py)
        "server",  # the live server, or a Milvus server in a network namespace
        "pool_without_serve",  # FacePool replicas outside Serve (tests/serve/test_priority.py)
        "milvus_server",  # a real Milvus 2.3 server in a network namespace
        "store_settings",  # a store on each backend (one of them a Milvus server)
        "metrics_stack",  # a live server, a search and Prometheus (tests/serve/test_prometheus.py)
        "ray_cluster",  # a head + 2 worker Ray nodes in a network namespace (jobs/cluster.py)
        "workspace_server",  # the workspace app on uvicorn (tests/serve/workspace_helpers.py)
        "browser",  # Debian's chromium through Playwright
    }
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("unit") or item.get_closest_marker("integration"):
            continue
        heavy = HEAVY_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.integration if heavy else pytest.mark.unit)


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


@pytest.fixture(scope="module", autouse=True)
def _no_ray_outlives_its_module(request):
    """A module that leaves this process connected to a Ray it started hands it to the next
    module, whose own Ray (with facewatch's placement resources) is then never started and
    whose deployments wait forever: disconnect after the module, and say so."""
    before = _ray_running()
    yield
    if not before and _ray_running():
        import ray

        logging.getLogger(__name__).warning("%s left Ray running: shut down", request.node.name)
        ray.shutdown()


@pytest.fixture(autouse=True)
def _unit_tests_start_no_ray(request):
    """Keeps the tiers honest: a `unit` test that starts Ray fails and says to mark it."""
    unit = request.node.get_closest_marker("unit") is not None
    before = _ray_running()
    yield
    if unit and not before and _ray_running():
        pytest.fail(f"{request.node.nodeid} started Ray: mark it @pytest.mark.integration")


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


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real Ray cluster for the session: a head (the home node, ``facewatch_home``) and two
    worker nodes (``facewatch_pool``, 2 logical CPUs each: a pool replica and the archive
    stages beside it), on 127.0.0.1 in a private network
    namespace (jobs/cluster.py). Drivers join it through ``handle.run`` / ``handle.command``;
    this test process stays outside, in the machine's namespace."""
    from jobs.cluster import ClusterError, ClusterSpec, down, up

    where = tmp_path_factory.mktemp("cluster")
    try:
        handle = up(where, ClusterSpec(workers=2, worker_cpus=2))
    except ClusterError as exc:
        pytest.fail(f"these tests need the multi-node test cluster: {exc}")
    try:
        yield handle
    finally:
        down(where)
