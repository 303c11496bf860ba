"""Shared fixtures: real data from ../shared, one face engine and one local Ray per session."""

from __future__ import annotations

import os
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
