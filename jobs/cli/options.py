"""Options several commands share, declared once (``Annotated`` aliases), so that
``search``, ``index`` and ``evaluate archive`` spell and explain them the same way.

Use as ``fps: FpsOpt = None``: the alias carries the flag, its limits and its help; the
default stays at the parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

CaseOpt = Annotated[str | None, typer.Option("--case", help="case reference (required by default)")]
FpsOpt = Annotated[float | None, typer.Option("--fps", min=0.05, max=60, help="frames per second")]
RayAddressOpt = Annotated[
    str | None,
    typer.Option("--ray-address", help="Ray cluster to use (default: a local one on 127.0.0.1)"),
]
OutOpt = Annotated[Path, typer.Option("--out", help="output folder")]
ThresholdOpt = Annotated[
    float | None,
    typer.Option("--threshold", help="override the alert tier's threshold: sightings (audited)"),
]
ReviewThresholdOpt = Annotated[
    float | None,
    typer.Option(
        "--review-threshold",
        help="override the review tier's threshold: candidates, never above the alert "
        "threshold (audited)",
    ),
]
BatchSizeOpt = Annotated[
    int, typer.Option("--batch-size", min=1, max=1024, help="images per batch")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout")]
JsonObjectOpt = Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")]


def identity_dir(flag: str, help: str):
    """A required ``DIR/<identity>/<images>`` folder option (gallery, distractors)."""
    return typer.Option(..., flag, exists=True, file_okay=False, help=help)
