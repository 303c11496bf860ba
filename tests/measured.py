"""Measured values that test tolerances guard, read from benchmarks/results/.

A tolerance in an accuracy or quality test cites what it guards: a constant read from the
benchmark's results file (so the number in the test and in the README are the same
measurement), or a comment with the value measured on the test's own fixture.

    FULL_TPIR = measured("bench_accuracy.json", "proposed_default", "at_proposed", "tpir", "rate")
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@cache
def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def measured(name: str, *keys: str | int) -> float:
    """The value at ``keys`` in ``benchmarks/results/<name>``; a missing key fails loudly."""
    value = _load(name)
    for key in keys:
        value = value[key]
    return float(value)
