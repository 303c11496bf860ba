"""What every command shares: the context (config, home, store), the actor, error mapping."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.console import Console

from pipelines.config import ConfigError, Settings, load_settings

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
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        if self._settings is None:
            overrides: dict = {}
            if self.home is not None:
                overrides["home"] = str(self.home)
            if self.store_uri is not None:
                overrides["store"] = {"uri": self.store_uri}
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


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print a clear error and exit (2: usage or config; 3: partial; 1: unexpected)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
