"""Fixtures of the CLI tests."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from jobs.cli.app import app


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """``facewatch --home TMP/home ...`` in this process (typer's CliRunner), as officer-7;
    returns the click Result. Modules that need a shared home define their own."""
    monkeypatch.setenv("FACEWATCH_USER", "officer-7")
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["--home", str(tmp_path / "home"), *args])

    return invoke


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray and one FacePool for the whole module (torn down at its end); searches
    reach it with ``--ray-address``, as they find a running `facewatch serve`."""
    import ray

    from jobs.archive import runtime
    from pipelines.config import Settings

    started = not ray.is_initialized()
    settings = Settings()
    runtime.start_ray(None, settings)
    with runtime.face_pool(settings):
        yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()
