"""Bearer tokens and roles for the HTTP API.

Why it looks like this:
- Tokens are secrets, so only their sha256 is ever held: config carries hashes, and tokens
  given through the environment are hashed as they are read. Nothing here logs a token or
  a hash; a failure is described by its kind ("missing", "unknown token"), never by value.
- Lookups compare every configured hash with ``hmac.compare_digest``, without an early
  exit, so response time does not reveal how close a guess came.
- A role is a set of permissions, checked per route. ``operator`` reviews and adjudicates,
  ``investigator`` searches and works in its cases, ``auditor`` reads every case, ``admin``
  manages cameras, lists and config and grants access to cases, and ``camera``
  may only push frames, and only to its own camera(s): a token named like a camera, or
  bound by ``cameras`` (a device should not hold an admin token).
- Browsers cannot attach a bearer header to a page load, so the same token is accepted as
  the password of HTTP Basic auth; the review page then works from a plain browser.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from pipelines.config import CAMERA_ID_PATTERN, ApiConfig
from pipelines.errors import FacewatchError

ROLES = ("operator", "investigator", "admin", "camera", "auditor")


class Permission(str, Enum):
    REVIEW = "review"  # see live alerts, the review page, the alert stream
    ADJUDICATE = "adjudicate"  # confirm or reject an alert
    SEARCH = "search"  # query stored matches, live and archive
    STATS = "stats"
    STATUS = "status"  # the operations view: cameras, pool, searches, store, outbox
    CAMERAS_READ = "cameras:read"
    CAMERAS_WRITE = "cameras:write"
    FRAMES = "frames"  # push frames for a camera
    LISTS = "lists"  # reload watch lists
    CONFIG = "config"  # read the effective configuration
    CASES = "cases"  # the investigator workspace: which case, and what in it, is per case


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "operator": frozenset(
        {
            Permission.REVIEW,
            Permission.ADJUDICATE,
            Permission.STATS,
            Permission.STATUS,
            Permission.CAMERAS_READ,
        }
    ),
    "investigator": frozenset({Permission.SEARCH, Permission.STATS, Permission.CASES}),
    "admin": frozenset(
        {
            Permission.CAMERAS_READ,
            Permission.CAMERAS_WRITE,
            Permission.FRAMES,
            Permission.LISTS,
            Permission.CONFIG,
            Permission.STATS,
            Permission.STATUS,
            Permission.CASES,
        }
    ),
    "camera": frozenset({Permission.FRAMES}),
    # reads every case and its audit records (pipelines.cases decides per case), decides
    # nothing, searches nothing
    "auditor": frozenset({Permission.CASES}),
}


class TokenConfigError(FacewatchError, ValueError):
    """The token configuration is unusable (the message never contains a token)."""

    http_status = 500  # the server's own set-up: not the client's to fix


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's name (audited as the actor), its role and, for a
    camera token, the cameras it may push frames to (none given: the camera of its name)."""

    name: str
    role: str
    cameras: frozenset[str] = frozenset()

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS.get(self.role, frozenset())

    def may_push(self, camera_id: str) -> bool:
        """A camera token pushes to its own camera(s) only; an admin to any camera."""
        if self.role != "camera":
            return self.can(Permission.FRAMES)
        return camera_id in (self.cameras or {self.name})


@dataclass(frozen=True)
class AuthFailure:
    status: int  # 401: who are you; 403: not allowed
    reason: str  # "missing", "malformed", "unknown token", "role", "camera"
    message: str
    actor: str = "anonymous"  # a 403 names the token (its name, never its value)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token: 256 bits, URL-safe."""
    return "fw_" + secrets.token_urlsafe(32)


Entry = tuple[str, str, str, tuple[str, ...]]  # name, role, sha256, cameras (role camera)
_CAMERA_ID = re.compile(CAMERA_ID_PATTERN)


def parse_env_tokens(raw: str) -> list[Entry]:
    """``name:role:token`` entries separated by commas or newlines -> (name, role, sha256,
    cameras). A camera token is bound to the camera named like it, or to the cameras in
    its role: ``door-dev:camera@door-1+door-2:TOKEN``."""
    out = []
    for n, item in enumerate(p.strip() for p in raw.replace("\n", ",").split(",")):
        if not item:
            continue
        parts = item.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise TokenConfigError(f"token entry {n + 1}: expected name:role:token")
        name, role, token = parts
        role, at, bound = role.partition("@")
        if role not in ROLES:
            raise TokenConfigError(f"token entry {n + 1} ({name}): unknown role {role!r}")
        cameras = tuple(bound.split("+")) if at else ()
        if at and (role != "camera" or not all(_CAMERA_ID.match(c) for c in cameras)):
            raise TokenConfigError(
                f"token entry {n + 1} ({name}): only role camera takes @camera-id[+camera-id]"
            )
        if len(token) < 16:
            raise TokenConfigError(f"token entry {n + 1} ({name}): token shorter than 16 chars")
        out.append((name, role, hash_token(token), cameras))
    return out


class TokenTable:
    """The known token hashes and whom they belong to."""

    def __init__(self, entries: list[Entry] | list[tuple[str, str, str]]):
        """``entries``: (name, role, sha256) or (name, role, sha256, cameras)."""
        seen: set[str] = set()
        self._entries = []
        for name, role, digest, *bound in entries:
            if role not in ROLES:
                raise TokenConfigError(f"token {name}: unknown role {role!r}")
            if digest in seen:
                raise TokenConfigError(f"token {name}: the same token is configured twice")
            seen.add(digest)
            cameras = frozenset(bound[0]) if bound else frozenset()
            self._entries.append((bytes.fromhex(digest), Principal(name, role, cameras)))

    @classmethod
    def from_config(cls, config: ApiConfig, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        entries: list[tuple[str, str, str, tuple[str, ...]]] = [
            (t.name, t.role, t.sha256, tuple(t.cameras)) for t in config.tokens
        ]
        entries += parse_env_tokens(env.get(config.tokens_env, ""))
        return cls(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found = None
        for known, principal in self._entries:  # no early exit: constant work per lookup
            if hmac.compare_digest(known, digest):
                found = principal
        return found

    def authenticate(self, authorization: str | None) -> Principal | AuthFailure:
        token = extract_token(authorization)
        if isinstance(token, AuthFailure):
            return token
        principal = self.lookup(token)
        if principal is None:
            return AuthFailure(401, "unknown token", "the token is not valid")
        return principal

    def authorize(self, authorization: str | None, permission: Permission):
        """The principal, or why not: 401 without a valid token, 403 without the role."""
        who = self.authenticate(authorization)
        if isinstance(who, Principal) and not who.can(permission):
            return AuthFailure(
                403,
                "role",
                f"role '{who.role}' may not do this (needs {permission.value})",
                actor=who.name,
            )
        return who


def extract_token(authorization: str | None) -> str | AuthFailure:
    """The token from ``Bearer TOKEN`` or from the password of ``Basic base64(user:TOKEN)``."""
    if not authorization:
        return AuthFailure(401, "missing", "authentication required: send a bearer token")
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value and " " not in value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return AuthFailure(401, "malformed", "malformed Basic credentials")
        _, sep, password = decoded.partition(":")
        if sep and password:
            return password
    return AuthFailure(401, "malformed", "malformed Authorization header: use 'Bearer TOKEN'")


class FailureThrottle:
    """How often refused requests are written to the audit log: the first from a client for
    a reason (and actor: the token of a 403) at once, then at most one record per
    ``window_s`` with the number left out in between. A token-less flood then costs a
    counter, not a synced disk write per request on the thread that also stores alerts.
    At most ``max_keys`` clients are remembered."""

    def __init__(self, window_s: float = 60.0, max_keys: int = 10_000, clock=None):
        self.window_s, self.max_keys = window_s, max_keys
        self.clock = clock or time.monotonic
        # (client, reason, actor) -> [last written, left out]
        self._seen: dict[tuple[str, str, str], list[float]] = {}
        self._evicted = 0  # failures left out for clients forgotten since (see ``due``)

    def admit(self, client: str, reason: str, actor: str = "anonymous") -> int | None:
        """None: leave this one out (counted). Otherwise write it, noting the returned
        number of failures left out since the last record for this client, reason and
        actor."""
        key, now = (client, reason, actor), self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.window_s:
            seen[1] += 1
            return None
        left_out = int(seen[1]) if seen is not None else 0
        self._seen.pop(key, None)
        while len(self._seen) >= self.max_keys:  # forget the longest-remembered client
            self._evicted += int(self._seen.pop(next(iter(self._seen)))[1])
        self._seen[key] = [now, 0]
        return left_out

    def due(self) -> list[tuple[str, str, int, str]]:
        """(client, reason, left out, actor) for each key whose window has passed with
        failures left out: written by the hub's upkeep, so a flood that stops is counted."""
        now, out = self.clock(), []
        for key, seen in list(self._seen.items()):
            if seen[1] and now - seen[0] >= self.window_s:
                client, reason, actor = key
                out.append((client, reason, int(seen[1]), actor))
                self._seen[key] = [now, 0]
        if self._evicted:
            out.append(("(clients forgotten)", "", self._evicted, "anonymous"))
            self._evicted = 0
        return out
