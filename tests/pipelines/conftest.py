"""Fixtures the core's tests share: the engine's faces of the known photos, and a fresh
home's watch lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import Settings
from pipelines.home import Home
from pipelines.watchlist import Watchlists

KNOWN = ["obama.jpg", "obama2.jpg", "biden.jpg", "lin-manuel-miranda.png", "alex-lacamoire.png"]


@pytest.fixture(scope="module")
def faces(engine, data):
    """The engine's face of each photo in data/known/ these tests enrol, by file stem."""
    probed = engine.probe_faces([data / "known" / n for n in KNOWN])
    return {Path(n).stem: f for n, f in zip(KNOWN, probed, strict=True)}


@pytest.fixture
def lists(engine, tmp_path):
    """The watch lists of a fresh home in the test's folder."""
    home = Home.open(Settings(home=tmp_path / "home"), engine.info)
    yield Watchlists(home, engine.info, engine.embedder.default_threshold)
    home.close()
