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
        ("tier", pa.string()),
        ("threshold", pa.float64()),
        ("review_threshold", pa.float64()),
        ("sighting_id", pa.string()),
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
        ("tier", pa.string()),
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
        r["tier"] = r.pop("extra", {}).get("tier", "sighting")
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
    for col in (*cols, "tier", "file", "from", "to", "best score", "at", "frames"):
        table.add_column(col)
    for s in sightings:
        who = [s.person_name, s.list_name] if with_person else []
        table.add_row(
            *who,
            s.tier,
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


def _margins(s: Sighting) -> str:
    """The best score's margin to each threshold of the search (signed)."""
    parts = []
    for name, thr in (("alert", s.threshold), ("review", s.review_threshold)):
        if thr == thr:  # not nan
            parts.append(f"{s.best_score - thr:+.3f} to {name} {thr:.3f}")
    return "<br>".join(parts)


def _sighting_rows(sightings: list[Sighting], decisions: dict[str, dict]) -> str:
    e = html.escape
    rows = []
    for s in sightings:
        live = f'<img src="{e(s.thumbnail)}" alt="best face">' if s.thumbnail else "—"
        photo = (
            f'<img src="{e(s.watchlist_photo)}" alt="watch-list photo">'
            if s.watchlist_photo
            else "—"
        )
        d = decisions.get(s.sighting_id)
        said = f"{e(d['decision'])}<br><small>{e(d['decided_by'])}</small>" if d else "undecided"
        rows.append(
            f'<tr class="{e(s.tier)}"><td>{live}</td><td>{photo}</td><td>'
            f"<b>{e(s.person_name)}</b><br><small>{e(s.person_id)} · {e(s.list_name)}</small>"
            f"</td><td>{e(s.tier)}</td><td>{e(Path(s.source_path).name)}</td>"
            f"<td>{_fmt_t(s.start_s)} – {_fmt_t(s.end_s)}</td>"
            f"<td>{s.best_score:.3f} at {_fmt_t(s.best_frame_s)}<br><small>{_margins(s)}"
            f"</small></td><td>{s.n_frames}</td><td>{said}</td></tr>"
        )
    return "".join(rows) or "<tr><td colspan=9>none</td></tr>"


def shown_precision(r: dict, none: str = "-") -> str:
    """A tier's precision from decisions with its Wilson interval, for people to read."""
    p = r["precision"]
    if p is None:
        return none
    low, high = r["precision_ci95"]
    return f"{p:.0%} [{low:.0%}, {high:.0%}]"


def _review_facts(review: dict | None) -> str:
    if not review:
        return ""
    e = html.escape
    items = []
    for tier, r in review.items():
        shown = shown_precision(r, "not yet measured")
        items.append(
            f"<li>{e(tier)}s: {r['confirmed']} confirmed, {r['rejected']} rejected, "
            f"{r['unsure']} unsure, {r['undecided']} undecided; precision from decisions "
            f"{shown}</li>"
        )
    return "<h2>Review</h2><ul>" + "".join(items) + "</ul>"


def render_report(
    out: Path,
    sightings: list[Sighting],
    summary: dict[str, Any],
    errors: list[dict],
    title: str = "facewatch archive search",
    decisions: dict[str, dict] | None = None,
    review: dict | None = None,
) -> Path:
    """report.html: sightings (alert tier) first, then candidates (review tier), each ranked
    by score, with the best face beside the watch-list photo and the decisions so far."""
    e = html.escape
    order = {"sighting": 0, "candidate": 1}
    ranked = sorted(sightings, key=lambda s: (order.get(s.tier, 2), -s.best_score, s.start_s))
    n_sightings = sum(s.tier == "sighting" for s in sightings)
    err_rows = "".join(
        f"<tr><td>{e(x['path'])}</td><td>{e(x['stage'])}</td><td>{e(x['reason'])}</td></tr>"
        for x in errors
    )
    facts = "".join(f"<li>{e(str(k))}: {e(str(v))}</li>" for k, v in summary.items())
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{e(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1em;color:#222}}
.wrap{{overflow-x:auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:6px 10px;vertical-align:middle;text-align:left}}
th{{background:#f3f3f3}}img{{height:112px}}tr.candidate{{background:#fffbea}}
.note{{color:#555;max-width:60em}}</style></head><body>
<h1>{e(title)}</h1><p class="note">Generated {generated}. Each row is one person in one file
over a span of time. A <b>sighting</b> reached the alert tier (the list's calibrated
threshold); a <b>candidate</b> reached only the lower review tier: a lead for a person to
check, more often wrong. Neither is an identification. The left image is the best matching
face found; the right one is the watch-list photo.</p><ul>{facts}</ul>{_review_facts(review)}
<h2>Sightings ({n_sightings}) and candidates ({len(sightings) - n_sightings})</h2>
<div class="wrap"><table><tr><th>Found</th><th>Watch list</th><th>Person</th><th>Tier</th>
<th>File</th><th>When</th><th>Best score</th><th>Frames</th><th>Decision</th></tr>
{_sighting_rows(ranked, decisions or {})}</table></div>
<h2>Files that could not be searched ({len(errors)})</h2>
<div class="wrap"><table><tr><th>File</th><th>Stage</th><th>Reason</th></tr>{
        err_rows or "<tr><td colspan=3>none</td></tr>"
    }</table></div></body></html>"""
    path = out / "report.html"
    path.write_text(body, encoding="utf-8")
    return path
