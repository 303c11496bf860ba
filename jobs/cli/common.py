"""What every command shares: the context (config, home, store), the actor, and the one
place an expected failure (``FacewatchError``) becomes a message and an exit code."""

from __future__ import annotations

import errno
import getpass
import json
import logging
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

from pipelines.config import Settings, load_settings
from pipelines.errors import EXIT_UNEXPECTED, EXIT_USAGE, FacewatchError
from pipelines.text import shown

EXIT_OK = 0
EXIT_PARTIAL = 3

logger = logging.getLogger("facewatch")

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
            self._settings = load_settings(self.config_path, overrides)  # ConfigError: exit 2
        return self._settings


def get_context(ctx: typer.Context) -> Context:
    obj = ctx.find_root().obj
    if not isinstance(obj, Context):
        obj = Context()
        ctx.find_root().obj = obj
    return obj


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print a clear error and exit (2: usage or config; 3: partial; 1: unexpected)."""
    safe = escape(shown(message, keep_lines=True))  # a name in it cannot steer the terminal
    console.print(f"[bold red]error:[/] {safe}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class FacewatchGroup(TyperGroup):
    """The root command, and the CLI's one handler of expected failures: any
    ``FacewatchError`` a command lets through (bad input, an act refused because the audit
    log is damaged, a home other users can read, a pool that cannot start) ends it the same
    way: one line saying what and where, and the error's exit code, not a traceback. A
    longer report the error carries (``details``) is logged, shown with ``-v``."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FacewatchError as exc:
            message = str(exc)
            if exc.details:
                logger.info("the whole report:\n%s", exc.details)
                message += " (-v shows the whole report)"
            fail(message, exc.exit_code)
        except OSError as exc:  # a full disk under any command: say so, not a traceback
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            where = f" writing {exc.filename}" if exc.filename else ""
            fail(f"no space left on the device{where}: {exc.strerror}; free space and rerun",
                 EXIT_UNEXPECTED)  # fmt: skip


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
