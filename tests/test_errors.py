"""One error model: every expected failure is a ``FacewatchError``, handled once in the CLI
(its message and exit code) and once in the API (its HTTP status and public message)."""

from __future__ import annotations

import ast
import asyncio
import importlib
import logging
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from jobs.cli.app import app as facewatch
from jobs.cli.common import FacewatchGroup
from pipelines.errors import FacewatchError

ROOT = Path(__file__).resolve().parents[1]
# Not facewatch's own failures: FastAPI's HTTP exception for an over-long body.
FRAMEWORK_ERRORS = {"serve.http.BodyTooLarge"}


def _exception_classes() -> list[str]:
    """Every class under pipelines/, serve/ and jobs/ whose name says it is an error."""
    found = []
    for layer in ("pipelines", "serve", "jobs"):
        for path in sorted((ROOT / layer).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and node.name.endswith(
                    ("Error", "Unavailable", "Exception", "TooLarge")
                ):
                    found.append(f"{module}.{node.name}")
    return found


@pytest.mark.timeout(120)
def test_every_project_exception_is_a_facewatch_error():
    classes = _exception_classes()
    assert len(classes) > 20  # the scan found the project's errors
    stray = []
    for name in classes:
        module, _, cls = name.rpartition(".")
        obj = getattr(importlib.import_module(module), cls)
        if issubclass(obj, BaseException) and not issubclass(obj, FacewatchError):
            stray.append(name)
    assert sorted(stray) == sorted(FRAMEWORK_ERRORS)


# --- the CLI: one handler on the root command -------------------------------------------------


class PoolDown(FacewatchError):
    """A failure of the machinery (as jobs.archive.runtime.PoolStartError): exit 1."""

    exit_code = 1


def _app_raising(exc: Exception) -> typer.Typer:
    """A root command of the CLI's own class with one command that raises ``exc``: the
    handler is the real one, only the command is made up (no real command fails this way
    without a cluster)."""
    app = typer.Typer(cls=FacewatchGroup, add_completion=False)

    @app.command()
    def act() -> None:
        raise exc

    @app.command()
    def other() -> None:  # two commands: ``act`` is a subcommand, as in facewatch
        pass

    return app


@pytest.mark.timeout(30)
def test_the_cli_prints_an_expected_failure_once_with_its_exit_code(caplog):
    caplog.set_level(logging.INFO)
    failure = PoolDown("the face pool failed to start: RuntimeError: no GPU")
    failure.details = "Traceback (most recent call last):\n  ...\nRuntimeError: no GPU"
    done = CliRunner().invoke(_app_raising(failure), ["act"])
    assert done.exit_code == 1
    assert "error: the face pool failed to start" in done.output
    assert "-v shows the whole report" in done.output
    assert "Traceback" not in done.output and "Traceback" in caplog.text  # -v only

    done = CliRunner().invoke(_app_raising(FacewatchError("no such list 'x'")), ["act"])
    assert done.exit_code == 2 and "error: no such list 'x'" in done.output


@pytest.mark.timeout(30)
def test_the_cli_does_not_hide_an_unexpected_error():
    done = CliRunner().invoke(_app_raising(KeyError("bug")), ["act"])
    assert done.exit_code == 1 and isinstance(done.exception, KeyError)


@pytest.mark.timeout(60)
def test_a_bad_config_file_ends_the_real_cli_with_exit_2(tmp_path):
    bad = tmp_path / "facewatch.yaml"
    bad.write_text("store: {colour: red}\n")
    done = CliRunner().invoke(
        facewatch, ["--config", str(bad), "--home", str(tmp_path / "home"), "audit", "verify"]
    )
    assert done.exit_code == 2, done.output
    assert "error:" in done.output and "colour" in done.output
    assert "Traceback" not in done.output


# --- the API: one exception handler ----------------------------------------------------------


def _raising(exc: Exception):
    def route() -> None:
        raise exc

    return route


def _api_answers(errors: dict[str, Exception]) -> dict[str, tuple[int, dict]]:
    """(status, body) of a FastAPI app with the API's error handlers, per route that raises."""
    import httpx
    from fastapi import FastAPI

    from serve.http import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)
    for path, exc in errors.items():
        app.add_api_route(path, _raising(exc), methods=["GET"])

    async def ask() -> dict[str, tuple[int, dict]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fw") as c:
            return {p: ((r := await c.get(p)).status_code, r.json()) for p in errors}

    return asyncio.run(ask())


@pytest.mark.timeout(30)
def test_the_api_answers_each_expected_failure_with_its_status(tmp_path):
    from pipelines.audit import AuditUnavailable
    from pipelines.live.cameras import CameraError
    from pipelines.store import StoreError
    from serve.http import HubError

    got = _api_answers(
        {
            "/hub": HubError(404, "alert 'a1' has no crop"),
            "/camera": CameraError("camera 'gate' already exists", status=409),
            "/text": FacewatchError("list: only letters"),
            "/store": StoreError(f"the store at {tmp_path}/milvus.db is locked"),
            "/audit": AuditUnavailable(tmp_path / "audit.log", 7, "bad hash"),
        }
    )
    assert got["/hub"] == (404, {"error": "alert 'a1' has no crop"})
    assert got["/camera"] == (409, {"error": "camera 'gate' already exists"})
    assert got["/text"] == (422, {"error": "list: only letters"})
    status, body = got["/store"]  # the server's own failure: no local path leaves
    assert status == 503 and str(tmp_path) not in body["error"] and "log" in body["error"]
    status, body = got["/audit"]
    assert status == 503 and "line 7" in body["error"] and str(tmp_path) not in body["error"]
