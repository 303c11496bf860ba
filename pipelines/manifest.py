"""Bulk enrolment manifests: a CSV of photos, read and checked whole before any work.

Watch lists arrive as exports of thousands of photos. ``facewatch watchlist import`` takes a
CSV with the header ``person_ref,name,photo,category,reason,expires,authorised_by,source``
(and, optionally, a last ``minor`` column), one row per photo:

- rows with the same ``person_ref`` are one person, and must agree on everything but the
  photo;
- a photo path is relative to the CSV's folder and must stay inside it (no absolute
  paths, no ``..`` or symlink out of it);
- every problem in the file is listed at once (``ManifestError.problems``), before a
  single photo is read: an officer fixes the export once, not once per error.

A person's id is derived from the list and ``person_ref`` (``person_id_for``), so a rerun
of the same manifest finds the people it enrolled before; with the photos' content hashes
that makes an import idempotent (see ``jobs/watchlist_import.py``).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pipelines.errors import FacewatchError
from pipelines.store import TEXT_LEN
from pipelines.text import UnsafeTextError, check_text
from pipelines.watchlist import CATEGORIES

HEADER = ("person_ref", "name", "photo", "category", "reason", "expires", "authorised_by", "source")
OPTIONAL = ("minor",)
MAX_MANIFEST_BYTES = 64 * 1024**2
MAX_ROWS = 200_000
MAX_SHOWN = 200  # problems printed; the rest are counted
_TRUE, _FALSE = {"1", "true", "yes", "y"}, {"", "0", "false", "no", "n"}
# what must be the same on every row of one person
PERSON_FIELDS = ("name", "category", "reason", "expires", "authorised_by", "source", "minor")


class ManifestError(FacewatchError, ValueError):
    """The manifest cannot be imported; ``problems`` lists every reason, by line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:MAX_SHOWN]
        more = len(problems) - len(shown)
        lines = "\n".join(f"  {p}" for p in shown) + (f"\n  ... and {more} more" if more else "")
        super().__init__(
            f"nothing was imported; the manifest has {len(problems)} problem(s):\n{lines}"
        )


@dataclass(frozen=True)
class PhotoRow:
    line: int  # in the CSV, the header being line 1
    person_ref: str
    photo: str  # as written in the CSV
    path: Path  # resolved, inside the CSV's folder


@dataclass
class ImportPerson:
    person_ref: str
    name: str
    category: str
    reason: str
    expires_on: date | None
    authorised_by: str | None
    source: str | None
    minor: bool
    photos: list[PhotoRow] = field(default_factory=list)


def person_id_for(list_name: str, person_ref: str) -> str:
    """The person id an import gives ``person_ref`` on ``list_name``: the same every run."""
    digest = hashlib.sha256(f"{list_name}\0{person_ref}".encode()).hexdigest()
    return f"p_{digest[:12]}"


def read_manifest(
    path: Path, default_reason: str, today: date, allow_minors: bool = False
) -> list[ImportPerson]:
    """The people of a manifest, in the order they first appear; ManifestError listing
    every problem otherwise. A row's empty ``reason`` is ``default_reason``; an empty
    ``category`` is ``other``."""
    path = Path(path)
    rows = _rows(path)
    base = path.resolve().parent
    problems: list[str] = []
    people: dict[str, ImportPerson] = {}
    first: dict[str, tuple[int, dict[str, Any]]] = {}
    for line, row in rows:
        values, errors = _check_row(line, row, base, default_reason, today, allow_minors)
        problems += errors
        if errors:
            continue
        ref = values["person_ref"]
        if ref not in people:
            first[ref] = (line, values)
            people[ref] = ImportPerson(
                person_ref=ref,
                name=values["name"],
                category=values["category"],
                reason=values["reason"],
                expires_on=values["expires"],
                authorised_by=values["authorised_by"],
                source=values["source"],
                minor=values["minor"],
            )
        else:
            problems += _disagreements(line, values, *first[ref])
        people[ref].photos.append(PhotoRow(line, ref, row["photo"], values["path"]))
    if not rows:
        problems.append(f"{path.name}: no rows after the header")
    if problems:
        raise ManifestError(problems)
    return list(people.values())


def _rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The CSV's rows as dicts, keyed by the header, with their line numbers."""
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ManifestError([f"{path.name}: {size:,} bytes > limit {MAX_MANIFEST_BYTES:,}"])
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        why = f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise ManifestError([why]) from None
    except OSError as exc:
        raise ManifestError([f"{path.name}: cannot read ({exc.strerror})"]) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) not in (HEADER, HEADER + OPTIONAL):
            raise ManifestError(
                [
                    f"line 1: the header must be {','.join(HEADER)} (optionally ,minor); got "
                    f"{','.join(header or [])!r}"
                ]
            )
        names = [h.strip() for h in header]
        out, problems = [], []
        for record in reader:
            line = reader.line_num
            if not any(c.strip() for c in record):
                continue  # blank lines are harmless
            if len(record) != len(names):
                problems.append(f"line {line}: {len(record)} fields, the header has {len(names)}")
                continue
            out.append((line, dict(zip(names, (c.strip() for c in record), strict=True))))
            if len(out) > MAX_ROWS:
                raise ManifestError([f"{path.name}: more than {MAX_ROWS:,} rows"])
    except csv.Error as exc:
        raise ManifestError([f"line {reader.line_num}: not valid CSV ({exc})"]) from None
    if problems:
        raise ManifestError(problems)
    return out


def _check_row(
    line: int,
    row: dict[str, str],
    base: Path,
    default_reason: str,
    today: date,
    allow_minors: bool,
) -> tuple[dict[str, Any], list[str]]:
    """(checked values, problems) of one row."""
    problems: list[str] = []

    def text(key: str, what: str, required: bool = False, free: bool = False) -> str | None:
        value = row.get(key, "")
        if required and not value:
            problems.append(f"line {line}: {what} is empty")
            return None
        try:
            check_text(value or None, what, free)
        except UnsafeTextError as exc:
            problems.append(f"line {line}: {exc}")
            return None
        if len(value.encode()) > TEXT_LEN and not free:
            problems.append(f"line {line}: {what} has more than {TEXT_LEN} bytes (UTF-8)")
        return value or None

    values: dict[str, Any] = {
        "person_ref": text("person_ref", "person_ref", required=True),
        "name": text("name", "a person's name", required=True),
        "reason": text("reason", "a reason", free=True) or default_reason,
        "authorised_by": text("authorised_by", "authorised_by"),
        "source": text("source", "an image source"),
        "category": row["category"] or "other",
        "expires": _expires(line, row["expires"], today, problems),
        "minor": _minor(line, row.get("minor", ""), allow_minors, problems),
        "path": _photo(line, row["photo"], base, problems),
    }
    if values["category"] not in CATEGORIES:
        problems.append(
            f"line {line}: category {values['category']!r} is not one of {', '.join(CATEGORIES)}"
        )
    return values, problems


def _expires(line: int, value: str, today: date, problems: list[str]) -> date | None:
    if not value:
        return None
    try:
        expires = date.fromisoformat(value)
    except ValueError:
        problems.append(f"line {line}: expires must be a date YYYY-MM-DD, got {value!r}")
        return None
    if expires < today:
        problems.append(f"line {line}: expiry date {expires} is in the past")
    return expires


def _minor(line: int, value: str, allow_minors: bool, problems: list[str]) -> bool:
    flag = value.lower()
    if flag not in _TRUE | _FALSE:
        problems.append(f"line {line}: minor must be true or false, got {value!r}")
        return False
    minor = flag in _TRUE
    if minor and not allow_minors:
        problems.append(
            f"line {line}: the list does not allow minors; an admin must allow it explicitly"
        )
    return minor


def _photo(line: int, photo: str, base: Path, problems: list[str]) -> Path | None:
    """The photo's resolved path, confined to the CSV's folder."""
    if not photo:
        problems.append(f"line {line}: photo is empty")
        return None
    if "\0" in photo or Path(photo).is_absolute():
        problems.append(f"line {line}: photo {photo!r} must be a path relative to the CSV")
        return None
    path = (base / photo).resolve()
    if not path.is_relative_to(base):
        problems.append(f"line {line}: photo {photo!r} lies outside the CSV's folder")
        return None
    if not path.is_file():
        problems.append(f"line {line}: photo {photo!r} does not exist or is not a file")
        return None
    return path


def _disagreements(
    line: int, values: dict[str, Any], first_line: int, first: dict[str, Any]
) -> list[str]:
    return [
        f"line {line}: person_ref {values['person_ref']!r} has another {key} than on line "
        f"{first_line} ({values[key]!r}, not {first[key]!r}); rows of one person must agree"
        for key in PERSON_FIELDS
        if values[key] != first[key]
    ]
