"""Cameras: what one is (a validated spec), and where the list of them is kept.

A camera is added through the API, the CLI or a YAML file. All three produce the same
``CameraSpec``, so one set of rules decides what a usable source is:
- ``rtsp://``, ``rtsps://``, ``http://``, ``https://``: a stream decoded with PyAV;
- a local video file (a path or ``file://``), looped or played once, for tests and drills;
- ``push``: the camera sends frames to ``POST /v1/cameras/{id}/frames``.

Cameras added through the API or the CLI live in a small SQLite table beside the catalog,
so ``facewatch camera add`` works whether or not the server runs, and a running server
picks changes up on its next poll. Cameras in the YAML file are read-only at run time.
Stream credentials do not belong in either place: write ``${CAM1_PASSWORD}`` in the URL and
it is expanded from the environment only when connecting. A password written out in a
URL is refused (API, CLI and cameras file alike), so none is ever stored. Only variables whose names
start with ``CAM``, and only in the ``user:password`` part of a stream URL, so a URL
cannot send any other server setting (API tokens, ...) to any host.

Video files of cameras added through the API (the registry) must lie in ``<home>/videos``
or a folder listed in ``$FACEWATCH_CAMERA_FILE_ROOTS``, checked after symlinks and ``..``
are resolved; a path outside them gets one answer whether or not it exists. The cameras
file is the operator's own configuration: its files may be anywhere.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import socket
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from pipelines.catalog import Catalog, iso_utc
from pipelines.errors import FacewatchError
from pipelines.paths import resolved
from pipelines.text import check_text

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
PUSH = "push"
CAMERA_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_ENV_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")
_CAM_REF = re.compile(r"\$\{CAM[A-Z0-9_]*\}")
SECRET_RULE = (
    "${NAME} may only stand in the user:password part of an rtsp://, rtsps://, http:// or "
    "https:// URL, and NAME must start with CAM (e.g. rtsp://viewer:${CAM1_PASSWORD}@host/s)"
)
FILE_ROOTS_ENV = "FACEWATCH_CAMERA_FILE_ROOTS"
VIDEOS_DIR = "videos"  # <home>/videos: where API-added file cameras may read
# the password runs to the last "@" before white space: a raw "/" or "@" in it is not valid
# URL syntax, but decoders print what they were given (over-scrubbing a path is harmless)
_USERINFO_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)\S*@")


class CameraError(FacewatchError, ValueError):
    """A camera spec or registry operation is invalid; ``status``: the HTTP status."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.http_status = status


def check_source_url(url: str, file_roots: Sequence[Path] | None = None) -> str:
    """The normalised source URL, or ValueError saying what is wrong with it.

    ``file_roots``: folders a video file must lie in (cameras added through the API);
    None: anywhere (the operator's cameras file)."""
    url = url.strip()
    if not url:
        raise ValueError("empty URL")
    if len(url) > 2048 or any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError("URL too long or contains whitespace/control characters")
    check_secret_refs(url)
    if url == PUSH:
        return url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in STREAM_SCHEMES:
        if not parts.hostname:
            raise ValueError(f"{scheme}:// URL has no host")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("URL has an invalid port") from None
        return url
    if scheme == "file":
        path = Path(parts.path)
    elif scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        path = Path(url)
    else:
        raise ValueError(
            f"unsupported URL scheme '{scheme}': use rtsp://, http(s)://, a local video file, "
            "or 'push'"
        )
    path = path.expanduser().resolve() if file_roots is None else confine(path, file_roots)
    if not path.is_file():
        raise ValueError(f"no such video file: {path}")
    return str(path)


LITERAL_PASSWORD_RULE = (
    "a literal password in the camera URL is refused: it would be stored in plaintext. "
    "Write a ${CAM...} reference instead (e.g. rtsp://viewer:${CAM1_PASSWORD}@host/s) and "
    "set that variable in the server's environment"
)


def check_no_literal_password(url: str) -> None:
    """ValueError if a stream URL's password is written out: only ``${CAM...}`` references
    may stand there (a user name may be literal). The registry, the cameras file and every
    log line then hold a reference, never the password. The message never echoes it."""
    if urlsplit(url).scheme.lower() not in STREAM_SCHEMES:
        return
    userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
    _, colon, password = userinfo.partition(":")
    if at and colon and _CAM_REF.sub("", password):
        raise ValueError(LITERAL_PASSWORD_RULE)


def check_secret_refs(url: str) -> None:
    """ValueError unless every ``${...}`` in ``url`` is a ``${CAM...}`` in the userinfo of
    a stream URL (elsewhere (host, path, query) it could send a secret to any host), and
    the password, if any, is only such references (``check_no_literal_password``)."""
    if "${" not in url:
        check_no_literal_password(url)
        return
    scheme, _, after = url.partition("://")
    userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
    if (
        scheme.lower() not in STREAM_SCHEMES
        or not at
        or not after.startswith(userinfo + "@")
        or "${" in after[len(userinfo) + 1 :]
        or "${" in _CAM_REF.sub("", userinfo)
    ):
        raise ValueError(SECRET_RULE)
    check_no_literal_password(url)


ANY_NETWORK = ("0.0.0.0/0", "::/0")
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}


def _in_networks(
    address: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # no IPv6 zone id
    mapped = getattr(ip, "ipv4_mapped", None)
    return any(ip in n or (mapped is not None and mapped in n) for n in networks)


def check_camera_host(url: str, allowed: Sequence[str], resolve: bool = True) -> list[str]:
    """The addresses a stream URL's host resolves to, or CameraError (422) if any lies
    outside ``allowed`` (``live.allowed_camera_networks``), before anything is sent to it.
    ``resolve=False``: check only a host written as an IP address (no DNS lookup), as when
    a camera is added. Any network allowed: nothing is looked up. PyAV resolves the name
    again when it connects, so a DNS answer that changes in between is not covered: list
    cameras by IP address where that matters."""
    if set(allowed) >= set(ANY_NETWORK) or urlsplit(url).scheme.lower() not in STREAM_SCHEMES:
        return []
    parts = urlsplit(url)
    host = parts.hostname or ""
    networks = [ipaddress.ip_network(n, strict=False) for n in allowed]
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        if not resolve:
            return []
        try:
            port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 0)
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise CameraError(f"cannot resolve camera host {host}: {exc}") from None
        addresses = sorted({str(info[4][0]) for info in infos})
    outside = [a for a in addresses if not _in_networks(a, networks)]
    if outside:
        raise CameraError(
            f"camera host {host} ({', '.join(outside)}) is outside live.allowed_camera_networks"
            f" ({', '.join(allowed) or 'none'}): not connected"
        )
    return addresses


def camera_file_roots(home: Path, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where API-added file cameras may read: ``<home>/videos`` and the folders listed in
    ``$FACEWATCH_CAMERA_FILE_ROOTS`` (separated by ``os.pathsep``), symlinks resolved."""
    env = os.environ if environ is None else environ
    extra = [p.strip() for p in env.get(FILE_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return [p.expanduser().resolve() for p in [Path(home) / VIDEOS_DIR, *map(Path, extra)]]


def confine(path: Path, roots: Sequence[Path]) -> Path:
    """``path`` with symlinks and ``..`` resolved, if it lies in one of ``roots``. Otherwise
    one ValueError, whether or not the path exists: refusals are no existence oracle."""
    real = resolved(Path(path).expanduser())  # a link loop: refused or unreadable, not a 500
    allowed = [resolved(r) for r in roots]
    if any(real.is_relative_to(r) for r in allowed):
        return real
    raise ValueError(
        "no such video file in the folders cameras may read ("
        + ", ".join(str(r) for r in allowed)
        + f"): put the video in <home>/{VIDEOS_DIR} or a folder listed in ${FILE_ROOTS_ENV}"
    )


def source_kind(url: str) -> Literal["stream", "file", "push"]:
    if url == PUSH:
        return "push"
    return "stream" if urlsplit(url).scheme.lower() in STREAM_SCHEMES else "file"


def redact_url(url: str) -> str:
    """The URL without a password, for status pages, logs and stored alerts."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def scrub_secrets(text: str, url: str | None = None, public_url: str = "") -> str:
    """``text`` (an error message) fit to store and log: the connect URL (secrets expanded)
    replaced by ``public_url``, and the password of any ``scheme://user:password@`` in it
    replaced by ``***``. Scrub before truncating, or a cut URL keeps part of a password."""
    if url and url != public_url:
        text = text.replace(url, public_url)
    return _USERINFO_PASSWORD.sub(r"\g<head>***@", text)


def expand_secrets(url: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace ``${CAM...}`` with the environment variable, at connect time only."""
    try:
        check_secret_refs(url)
    except ValueError as exc:
        raise CameraError(str(exc)) from None
    env = os.environ if environ is None else environ

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in env:
            raise CameraError(f"environment variable {m.group(1)} (used in the URL) is not set")
        return env[m.group(1)]

    return _ENV_REF.sub(sub, url)


class CameraSpec(BaseModel):
    """One camera. ``fps`` None means the configured default (``live.fps``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    id: str = Field(..., pattern=CAMERA_ID, description="letters, digits, _ and -; 1-64")
    url: str = Field(..., description="rtsp:// or http(s):// stream, video file, or 'push'")
    fps: float | None = Field(None, gt=0, le=60, description="analysed frames per second")
    list_name: str | None = Field(
        None, alias="list", max_length=128, description="watch list (default: all lists)"
    )
    threshold: float | None = Field(
        None, ge=-1, le=1, description="override the list's calibrated threshold (audited)"
    )
    loop: bool = Field(True, description="file sources: start again at the end")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str, info: ValidationInfo) -> str:
        return check_source_url(v, (info.context or {}).get("file_roots"))

    @field_validator("list_name")
    @classmethod
    def _list(cls, v: str | None) -> str | None:
        return check_text(v, "list")

    @property
    def kind(self) -> Literal["stream", "file", "push"]:
        return source_kind(self.url)

    def public(self) -> dict[str, Any]:
        """The spec as shown to users: the URL without its password."""
        d = self.model_dump(by_alias=True)
        d["url"] = redact_url(self.url)
        d["kind"] = self.kind
        return d


def parse_spec(data: dict[str, Any], file_roots: Sequence[Path] | None = None) -> CameraSpec:
    """A validated spec; ``file_roots``: see ``check_source_url``."""
    try:
        return CameraSpec.model_validate(data, context={"file_roots": file_roots})
    except ValidationError as exc:
        raise CameraError("invalid camera: " + validation_message(exc)) from None


def validation_message(exc: ValidationError) -> str:
    """``field: why; field: why`` from a pydantic error, without echoing the input."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )


def load_cameras_file(path: Path) -> list[CameraSpec]:
    """Cameras from YAML: ``cameras: [{id, url, fps, list, threshold, loop}, ...]``."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CameraError(f"cannot read cameras file {path}: {exc}") from None
    items = data.get("cameras", []) if isinstance(data, dict) else None
    if not isinstance(items, list) or (isinstance(data, dict) and set(data) - {"cameras"}):
        raise CameraError(f"{path}: expected a mapping with one key, 'cameras', holding a list")
    specs = [parse_spec(item if isinstance(item, dict) else {}) for item in items]
    ids = [s.id for s in specs]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise CameraError(f"{path}: camera ids used twice: {', '.join(dupes)}")
    return specs


class CameraRegistry:
    """Cameras added through the API or CLI: the ``live_cameras`` table (catalog migration
    4). Each call opens its own short catalog session (the hub calls from two threads)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def add(self, spec: CameraSpec, actor: str, record: Callable[[], Any] | None = None) -> None:
        """``record`` (the audit append) runs in the same transaction: if it fails, the
        camera is not registered."""
        try:
            with self.catalog.session() as db:
                db.execute(
                    "INSERT INTO live_cameras (id, spec, created_by, created_at) VALUES (?,?,?,?)",
                    (spec.id, spec.model_dump_json(), actor, iso_utc(time.time())),
                )
                if record is not None:
                    record()
        except sqlite3.IntegrityError:
            raise CameraError(f"camera '{spec.id}' already exists", status=409) from None

    def remove(self, camera_id: str, record: Callable[[], Any] | None = None) -> None:
        """As ``add``: no record, no removal."""
        with self.catalog.session() as db:
            n = db.execute("DELETE FROM live_cameras WHERE id = ?", (camera_id,)).rowcount
            if n == 0:
                raise CameraError(f"no camera '{camera_id}'", status=404)
            if record is not None:
                record()

    def add_audited(self, spec: CameraSpec, actor: str, audit: Any) -> None:
        """``add``, with its ``camera.add`` record in ``audit`` (an AuditLog) in the same
        transaction: no record, no camera."""
        record = functools.partial(audit.append, actor, "camera.add", camera=spec.public())
        self.add(spec, actor, record)

    def remove_audited(self, camera_id: str, actor: str, audit: Any, reason: str = "") -> None:
        """``remove``, with its ``camera.remove`` record (and why, if the server removed
        it) in the same transaction: no record, no removal."""
        why = {"reason": reason} if reason else {}
        record = functools.partial(audit.append, actor, "camera.remove", camera_id=camera_id, **why)
        self.remove(camera_id, record)

    def all(self) -> list[CameraSpec]:
        with self.catalog.session(write=False) as db:
            rows = db.execute("SELECT spec FROM live_cameras ORDER BY id").fetchall()
        return [_stored_spec(r[0]) for r in rows]


def _stored_spec(raw: str) -> CameraSpec:
    """A stored spec was valid when added; if its file has gone since, keep it anyway, so
    that it shows up with an error (and can be removed) instead of vanishing."""
    try:
        return CameraSpec.model_validate_json(raw)
    except ValidationError:
        return CameraSpec.model_construct(**json.loads(raw))
