"""What every command shares: the context (config, home, store), the actor, error mapping."""

from __future__ import annotations

import getpass
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from pipelines.audit import AuditUnavailable
from pipelines.config import ConfigError, Settings, load_settings
from pipelines.privacy import SharedHomeError
from pipelines.text import shown

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3

console = Console(stderr=True)  # human output goes to stderr; stdout is for --json


def current_actor() -> str:
    """Who is acting: $FACEWATCH_USER, else the operating-system user."""
    return os.environ.get("FACEWATCH_USER") or getpass.getuser()


@dataclass
class Context:
    config_path: Path | None = None
    home: Path | None = None
    store_uri: str | None = None
    allow_shared_home: bool = False
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        if self._settings is None:
            overrides: dict = {}
            if self.home is not None:
                overrides["home"] = str(self.home)
            if self.store_uri is not None:
                overrides["store"] = {"uri": self.store_uri}
            if self.allow_shared_home:
                overrides["allow_shared_home"] = True
            try:
                self._settings = load_settings(self.config_path, overrides)
            except ConfigError as exc:
                fail(str(exc))
        return self._settings


def get_context(ctx: typer.Context) -> Context:
    obj = ctx.find_root().obj
    if not isinstance(obj, Context):
        obj = Context()
        ctx.find_root().obj = obj
    return obj


def local_engine(settings: Settings):
    """A FaceEngine for work in this process (enrolment, probe photos, evaluation): on this
    machine's GPU if it has one, else its CPU. ``pool.device`` is for the pool's replicas,
    which may run on other machines: a CPU-only driver of a GPU cluster must still work."""
    from pipelines.engine import FaceEngine

    return FaceEngine(settings, device="auto")


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print a clear error and exit (2: usage or config; 3: partial; 1: unexpected)."""
    safe = escape(shown(message, keep_lines=True))  # a name in it cannot steer the terminal
    console.print(f"[bold red]error:[/] {safe}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class FacewatchGroup(TyperGroup):
    """The root command: an act refused because the audit log is damaged, or a home other
    users can read, ends every command the same way: one line saying what and where, exit
    code 2, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (AuditUnavailable, SharedHomeError) as exc:
            fail(str(exc))


# -- --json: stdout carries JSON and nothing else ----------------------------------------------
_json_out: list = []  # the real stdout while json_stdout() is active


@contextmanager
def json_stdout(enabled: bool):
    """While active, file descriptor 1 and ``sys.stdout`` point to stderr, so that nothing
    but ``emit_json`` reaches stdout: not Ray's processes (they inherit the descriptor),
    not C libraries, not a stray print. A job's ``--json`` output stays parseable."""
    if not enabled:
        yield
        return
    previous = sys.stdout
    previous.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    # JSON goes where stdout went: descriptor 1 (now saved), or a stream that has none of
    # its own (a test runner capturing output)
    real = os.fdopen(saved, "w", buffering=1, encoding="utf-8", closefd=False)
    _json_out.append(real if _on_descriptor_1(previous) else previous)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        _json_out.pop()
        real.flush()
        sys.stdout = previous
        os.dup2(saved, 1)
        real.close()
        os.close(saved)


def _on_descriptor_1(stream) -> bool:
    try:
        return stream.fileno() == 1
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False


def emit_json(obj: object) -> None:
    """One JSON line on stdout (the real one, also inside ``json_stdout``)."""
    out = _json_out[-1] if _json_out else sys.stdout
    out.write(json.dumps(obj) + "\n")
