"""Investigators' query over stored matches (live alerts and archive matches).

Milvus filters are strings, so values are never pasted in unchecked: each one must match a
strict identifier pattern, or the query is refused with 422. Embeddings never leave.
"""

from __future__ import annotations

import re
from typing import Any

from serve.http import HubError

SAFE = re.compile(r"^[A-Za-z0-9_.@:-]{1,128}$")
HIDDEN = {"embedding"}


def _quoted(name: str, value: str) -> str:
    if not SAFE.match(value):
        raise HubError(422, f"{name}: only letters, digits and _ . @ : - are allowed")
    return f'"{value}"'


def match_filter(query: dict[str, Any]) -> str:
    parts = []
    if query.get("person"):
        parts.append(f"person_id == {_quoted('person', query['person'])}")
    if query.get("list"):
        parts.append(f"list_name == {_quoted('list', query['list'])}")
    if query.get("source") in ("live", "archive"):
        parts.append(f'source == "{query["source"]}"')
    return " and ".join(parts) or 'id != ""'


def public_match(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in HIDDEN}
