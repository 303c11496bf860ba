"""Importing pymilvus without breaking the logging of the process that imports it.

pymilvus configures its own loggers when it is imported (``pymilvus/settings.py`` calls
``logging.config.dictConfig``), and ``dictConfig`` closes every handler already installed
in the process, whatever ``disable_existing_loggers`` says. In a Ray Serve replica those
include Serve's ``MemoryHandler`` (its buffer in front of the replica's log file): closed,
it has no target, so from then on every record it gets (an access-log line per request) is
appended to its buffer, never written and never freed. In the LiveHub, the replica that
opens the vector store, that was one record (~3 KB with its strings) per pushed frame: the
steady RSS growth of the soak (issue 16, ~20 MB per 5 minutes at 20 frames/s), and a Serve
log file for the hub that stopped after its first line.

``import_pymilvus`` imports it once and gives every ``MemoryHandler`` back the target it
had (a closed file handler reopens its file on the next record). Every import of pymilvus
in facewatch's long-lived processes goes through it, before the first ``from pymilvus``.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from types import ModuleType


def _memory_handlers() -> list[logging.handlers.MemoryHandler]:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return [
        h
        for lg in loggers
        if isinstance(lg, logging.Logger)
        for h in lg.handlers
        if isinstance(h, logging.handlers.MemoryHandler)
    ]


def import_pymilvus() -> ModuleType:
    """``import pymilvus``, keeping the process's buffering log handlers working."""
    if "pymilvus" in sys.modules:
        return sys.modules["pymilvus"]
    targets = {h: h.target for h in _memory_handlers()}
    import pymilvus

    for handler, target in targets.items():
        if handler.target is None and target is not None:
            handler.setTarget(target)
    return pymilvus  # type: ignore[no-any-return]
