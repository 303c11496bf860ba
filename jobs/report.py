"""Search outputs: Parquet tables, thumbnails and a self-contained HTML report."""

from __future__ import annotations

import html
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.images import sha256_file
from pipelines.schemas import Match, Sighting

SIGHTING_SCHEMA = pa.schema(
    [
        ("person_id", pa.string()),
        ("person_name", pa.string()),
        ("list_name", pa.string()),
        ("source_path", pa.string()),
        ("source_id", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("best_score", pa.float64()),
        ("best_frame_s", pa.float64()),
        ("n_frames", pa.int64()),
        ("thumbnail", pa.string()),
        ("watchlist_photo", pa.string()),
        ("track_ids", pa.list_(pa.int64())),
    ]
)
MATCH_SCHEMA = pa.schema(
    [
        ("match_id", pa.string()),
        ("person_id", pa.string()),
        ("person_name", pa.string()),
        ("list_name", pa.string()),
        ("score", pa.float64()),
        ("source", pa.string()),
        ("source_id", pa.string()),
        ("source_path", pa.string()),
        ("frame_index", pa.int64()),
        ("timestamp_s", pa.float64()),
        ("box", pa.list_(pa.float64())),
        ("track_id", pa.int64()),
        ("face_index", pa.int64()),
        ("snapshot_id", pa.string()),
        ("thumbnail", pa.string()),
    ]
)
ERROR_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("frames_lost", pa.int64()),
    ]
)


def write_table(rows: list[dict[str, Any]], schema: pa.Schema, path: Path) -> None:
    cols = {name: [r.get(name) for r in rows] for name in schema.names}
    pq.write_table(pa.table(cols, schema=schema), path)


def write_outputs(
    out: Path, sightings: list[Sighting], matches: list[Match], errors: list[dict]
) -> None:
    write_table([s.row() for s in sightings], SIGHTING_SCHEMA, out / "sightings.parquet")
    rows = []
    for m in matches:
        r = m.row()
        r.pop("extra", None)
        rows.append(r)
    write_table(rows, MATCH_SCHEMA, out / "matches.parquet")
    write_table(errors, ERROR_SCHEMA, out / "errors.parquet")


def write_summary(out: Path, numbers: dict[str, Any]) -> Path:
    """The run in numbers (files, frames, faces, wall time...), for scripts and benchmarks."""
    path = out / "summary.json"
    path.write_text(json.dumps(numbers, indent=1, default=str) + "\n", encoding="utf-8")
    return path


def copy_photo(photo: str, thumbs: Path) -> str:
    """Copy a watch-list photo next to the report; return its path relative to ``out``."""
    if not photo or not Path(photo).is_file():
        return ""
    # named by content: a reused --out holding another search's photo of the same name
    # (two probes both called suspect.jpg) must not show that photo beside these faces
    source = Path(photo)
    target = thumbs / f"list_{source.stem}_{sha256_file(source)[:12]}{source.suffix}"
    if not target.exists():
        shutil.copyfile(source, target)
    return f"thumbs/{target.name}"


def link_media(sightings: list[Sighting], out: Path) -> None:
    """Point each sighting at its face thumbnail and a copy of its watch-list photo, both
    relative to ``out`` (what report.html and the Parquet rows show)."""
    thumbs = out / "thumbs"
    for s in sightings:
        face = thumbs / f"{s.thumbnail}.jpg"
        s.thumbnail = f"thumbs/{face.name}" if face.is_file() else ""
        s.watchlist_photo = copy_photo(s.watchlist_photo, thumbs)


def sightings_table(sightings: list[Sighting], title: str, with_person: bool = True):
    """The terminal's sightings table (rich), one row per sighting."""
    from rich.table import Table

    table = Table(title=title)
    cols = ["person", "list"] if with_person else []
    for col in (*cols, "file", "from", "to", "best score", "at", "frames"):
        table.add_column(col)
    for s in sightings:
        who = [s.person_name, s.list_name] if with_person else []
        table.add_row(
            *who,
            Path(s.source_path).name,
            f"{s.start_s:.1f}s",
            f"{s.end_s:.1f}s",
            f"{s.best_score:.3f}",
            f"{s.best_frame_s:.1f}s",
            str(s.n_frames),
        )
    return table


def _fmt_t(s: float) -> str:
    m, sec = divmod(max(0.0, s), 60)
    h, m = divmod(int(m), 60)
    return f"{h:d}:{m:02d}:{sec:05.2f}" if h else f"{m:d}:{sec:05.2f}"


def render_report(
    out: Path,
    sightings: list[Sighting],
    summary: dict[str, Any],
    errors: list[dict],
    title: str = "facewatch archive search",
) -> Path:
    e = html.escape
    rows = []
    for s in sightings:
        live = f'<img src="{e(s.thumbnail)}" alt="best face">' if s.thumbnail else "—"
        photo = (
            f'<img src="{e(s.watchlist_photo)}" alt="watch-list photo">'
            if s.watchlist_photo
            else "—"
        )
        rows.append(
            f"<tr><td>{live}</td><td>{photo}</td><td><b>{e(s.person_name)}</b><br>"
            f"<small>{e(s.person_id)} · {e(s.list_name)}</small></td>"
            f"<td>{e(Path(s.source_path).name)}</td><td>{_fmt_t(s.start_s)} – {_fmt_t(s.end_s)}"
            f"</td><td>{s.best_score:.3f} at {_fmt_t(s.best_frame_s)}</td>"
            f"<td>{s.n_frames}</td></tr>"
        )
    err_rows = "".join(
        f"<tr><td>{e(x['path'])}</td><td>{e(x['stage'])}</td><td>{e(x['reason'])}</td></tr>"
        for x in errors
    )
    facts = "".join(f"<li>{e(str(k))}: {e(str(v))}</li>" for k, v in summary.items())
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:6px 10px;
vertical-align:middle;text-align:left}}th{{background:#f3f3f3}}img{{height:112px}}
.note{{color:#555;max-width:60em}}</style></head><body>
<h1>{e(title)}</h1><p class="note">Generated {generated}. Each row is a sighting: consecutive
matches of one person in one file. The left image is the best matching face found; the right
one is the watch-list photo. A match is a lead for a person to review, not an identification.
</p><ul>{facts}</ul>
<h2>Sightings ({len(sightings)})</h2>
<table><tr><th>Found</th><th>Watch list</th><th>Person</th><th>File</th><th>When</th>
<th>Best score</th><th>Frames</th></tr>{"".join(rows) or "<tr><td colspan=7>none</td></tr>"}
</table>
<h2>Files that could not be searched ({len(errors)})</h2>
<table><tr><th>File</th><th>Stage</th><th>Reason</th></tr>{
        err_rows or "<tr><td colspan=3>none</td></tr>"
    }</table></body></html>"""
    path = out / "report.html"
    path.write_text(body, encoding="utf-8")
    return path
