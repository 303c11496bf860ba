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
