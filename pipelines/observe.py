"""Plain hooks through which the Ray-free core reports what operators watch.

Why: the store, the audit log and retention live in ``pipelines/`` and must not import Ray,
yet their write latencies, failures and deletions belong on the same Prometheus dashboard
as the live path. So the core only calls ``emit(metric, value, **labels)``; a process that
runs under Ray installs a sink (``serve.metrics.install``) that turns each call into a Ray
metric. With no sink installed (tests, a plain CLI run without Ray) an emit costs a loop
over an empty list. A sink that fails never fails the act it reports on: it is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

Sink = Callable[[str, float, dict[str, str]], None]
_sinks: list[Sink] = []


def install(sink: Sink) -> None:
    """Send every emit to ``sink`` too (once, however often it is installed)."""
    if sink not in _sinks:
        _sinks.append(sink)


def uninstall(sink: Sink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def emit(metric: str, value: float = 1.0, **labels: str) -> None:
    """Report ``value`` for ``metric`` (a name defined in ``serve.metrics.METRICS``)."""
    for sink in list(_sinks):
        try:
            sink(metric, float(value), labels)
        except Exception:  # noqa: BLE001 - a metric never fails the act it reports on
            logger.exception("metrics sink failed on %s", metric)


@contextmanager
def timed_write(collection: str) -> Iterator[None]:
    """A store write: its latency, and an error if it raises (the error is re-raised)."""
    t0 = time.perf_counter()
    try:
        yield
    except BaseException:
        emit("facewatch_store_write_errors", 1, collection=collection)
        raise
    emit("facewatch_store_write_seconds", time.perf_counter() - t0, collection=collection)
