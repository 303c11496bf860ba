"""A tamper-evident audit log: append-only JSON lines, each record hashing the previous one.

Every act that touches biometric data or its rules is appended: who, when, what, and the
hash of the record before it. Editing a field, deleting a record or swapping two breaks
the chain at that record, and ``verify`` names it. Cutting records off the end leaves a
shorter chain that is still valid; to catch that, note the head hash that ``verify``
prints (or publish it) and later verify with ``head=`` that record still exists.

Appends from several processes (the CLI and a running server) are serialised with an
exclusive file lock; the file is only ever appended to, with one exception: a torn last
line (a crash mid-write leaves a record without its end of line) would stop every later
append, so the next append moves those bytes to ``audit.log.torn`` and records that it did,
with their length and hash, before its own record. Secrets are never written: callers pass
token names, not tokens.

An act that cannot be audited does not happen. Every append first checks the last whole
record (it parses, has each key once, is in canonical form and its hash holds); a damaged
one raises ``AuditUnavailable`` naming the line, and nothing is written. Callers ``check()``
before an act that is not one database transaction with its record, and append inside the
transaction where it is. A record is hashed over its canonical serialisation and must be
stored in exactly those bytes, so a duplicated key or reordered fields do not verify.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from pipelines.errors import FacewatchError
from pipelines.observe import emit

GENESIS = "0" * 64


class AuditError(FacewatchError, ValueError):
    """The audit log cannot be read as asked; the message says where."""


class AuditUnavailable(FacewatchError, RuntimeError):
    """The audit log cannot take a record, so the act it would record must not happen."""

    http_status = 503

    def __init__(self, path: Path, line: int, reason: str):
        self.path, self.line, self.reason = path, line, reason
        super().__init__(
            f"the audit log {path} is damaged at line {line} ({reason}); nothing was done: "
            "an act that cannot be audited does not happen. See facewatch audit verify; "
            "keep the damaged log as evidence and move it aside to start a new one"
        )

    def public_message(self) -> str:
        """The same without the home's path (for API answers)."""
        where = f"line {self.line} is damaged ({self.reason})"
        return f"audit log unavailable: {where}; nothing was done"


def utc_since(since: str) -> str:
    """An ISO date or date-time (naive means UTC) as the log's UTC timestamp format."""
    try:
        when = datetime.fromisoformat(since.strip())
    except ValueError:
        raise AuditError(f"--since must be an ISO date or date-time, got {since!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str).encode()


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key appears twice")
    return out


def check_record(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """A whole line (with its end of line) as a record, or None and why it is not one:
    it must parse, name each key once, hold the chain's keys, be stored in its canonical
    bytes and match its own hash. (Its place in the chain is the caller's to check.)"""
    if not line.endswith(b"\n"):
        return None, "truncated record (no end of line)"
    try:
        r = json.loads(line, object_pairs_hook=_no_duplicate_keys)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, "not a JSON record"
    except ValueError as exc:
        return None, f"not a valid record: {exc}"
    if not isinstance(r, dict) or not {"seq", "hash", "prev_hash"} <= set(r):
        return None, "not an audit record"
    if record_hash(r) != r["hash"]:
        return r, "contents changed after it was written"
    if line[:-1] != _canonical(r):
        return r, "not stored in canonical form (changed after it was written)"
    return r, ""


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


@dataclass
class VerifyResult:
    ok: bool
    n_records: int
    first_bad_seq: int | None = None  # 1-based line number of the first broken record
    reason: str = ""
    head: str = GENESIS  # hash of the last record that verified


class AuditLog:
    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, actor: str, action: str, **details: Any) -> dict[str, Any]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a+b") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    self._head(f)  # a damaged log takes nothing, not even the torn-tail repair
                    torn = self._set_aside_torn_tail(f)
                    if torn is not None:
                        self._write(f, "audit", "audit.torn_record_set_aside", torn)
                    record = self._write(f, actor, action, details)
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
        except BaseException:
            emit("facewatch_audit_appends", 1, outcome="failed")
            raise
        emit("facewatch_audit_appends", 1, outcome="ok")
        return record

    def _write(
        self, f: BinaryIO, actor: str, action: str, details: dict[str, Any]
    ) -> dict[str, Any]:
        seq, prev = self._head(f)
        record = {
            "seq": seq + 1,
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "actor": actor,
            "action": action,
            "details": details,
            "prev_hash": prev,
        }
        record["hash"] = record_hash(record)
        f.write(_canonical(record) + b"\n")
        f.flush()
        os.fsync(f.fileno())
        return record

    def check(self) -> None:
        """Raise ``AuditUnavailable`` if an append would be refused (the last whole record is
        damaged); call it before an act whose record cannot share its transaction."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            try:
                self._head(f)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _head(self, f: BinaryIO) -> tuple[int, str]:
        """(seq, hash) of the last whole record (a torn tail after it is ignored here);
        ``AuditUnavailable`` naming its line if it is damaged."""
        start, line = self._last_whole_line(f)
        if not line:
            return 0, GENESIS
        r, bad = check_record(line)
        if not bad and not isinstance(r["seq"], int):  # type: ignore[index]
            bad = "not an audit record"
        if bad:
            f.seek(0)
            raise AuditUnavailable(self.path, f.read(start).count(b"\n") + 1, bad)
        return int(r["seq"]), str(r["hash"])  # type: ignore[index]

    @staticmethod
    def _newline_before(f: BinaryIO, pos: int) -> int:
        """Offset of the last end of line before byte ``pos``, or -1."""
        while pos > 0:
            step = min(pos, 1 << 16)
            f.seek(pos - step)
            cut = f.read(step).rfind(b"\n")
            if cut >= 0:
                return int(pos - step + cut)
            pos -= step
        return -1

    def _last_whole_line(self, f: BinaryIO) -> tuple[int, bytes]:
        """(offset, bytes) of the last line that has its end of line; (0, b"") if none."""
        end = f.seek(0, os.SEEK_END)
        last = self._newline_before(f, end)
        if last < 0:
            return 0, b""
        start = self._newline_before(f, last) + 1
        f.seek(start)
        return start, f.read(last + 1 - start)

    def _set_aside_torn_tail(self, f: BinaryIO) -> dict[str, Any] | None:
        """A last line without its end of line: a whole record only missing the newline
        gets it; anything else moves to ``<log>.torn``. Returns what to record, or None."""
        f.seek(0, os.SEEK_END)
        end = f.tell()
        if end == 0:
            return None
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return None
        start = self._newline_before(f, end) + 1  # the byte after the last end of line
        f.seek(start)
        tail = f.read(end - start)
        whole, bad = check_record(tail + b"\n")
        if whole is not None and not bad:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")  # the record was written whole; only its end of line is missing
            f.flush()
            return None
        torn_path = self.path.with_name(self.path.name + ".torn")
        fd = os.open(torn_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as kept:  # as private as the log itself
            kept.write(tail + b"\n")
            kept.flush()
            os.fsync(kept.fileno())
        f.truncate(start)
        f.flush()
        os.fsync(f.fileno())
        return {
            "bytes": len(tail),
            "sha256": hashlib.sha256(tail).hexdigest(),
            "kept_in": torn_path.name,
            "at_byte": start,
        }

    def records(
        self, since: str | None = None, actor: str | None = None, action: str | None = None
    ) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        since = utc_since(since) if since else None
        for n, line in enumerate(self._lines(), start=1):
            if not line.strip() or not line.endswith(b"\n"):
                continue  # blank, or a torn last line (verify reports it; append repairs it)
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                msg = f"{self.path}: line {n} is not a record (run audit verify)"
                raise AuditError(msg) from None
            if since and r["ts"] < since:
                continue
            if actor and r["actor"] != actor:
                continue
            if action and not (r["action"] == action or r["action"].startswith(action + ".")):
                continue
            yield r

    def _lines(self) -> Iterator[bytes]:
        """The records written so far: the size is taken under the append lock, so a
        record being appended meanwhile is neither read half-written nor reported torn."""
        with open(self.path, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            try:
                size = os.fstat(f.fileno()).st_size
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
            done = 0
            for line in f:
                if done >= size:
                    return
                done += len(line)
                yield line[: len(line) - max(0, done - size)]

    def verify(self, head: str | None = None) -> VerifyResult:
        """Check the whole chain; with ``head``, also that a record with that hash exists
        (a head noted earlier: catches records cut off the end)."""
        if not self.path.exists():
            return self._missing_head(VerifyResult(True, 0), head, False)
        prev, n, seen = GENESIS, 0, head is None
        for n, line in enumerate(self._lines(), start=1):
            bad = self._check_line(line, n, prev)
            if bad:
                return VerifyResult(False, n - 1, n, bad, prev)
            prev = json.loads(line)["hash"]
            seen = seen or prev == head
        return self._missing_head(VerifyResult(True, n, head=prev), head, seen)

    @staticmethod
    def _missing_head(result: VerifyResult, head: str | None, seen: bool) -> VerifyResult:
        if head is None or seen:
            return result
        result.ok, result.first_bad_seq = False, result.n_records + 1
        result.reason = f"no record has the noted head hash {head[:16]}...: records were cut off"
        return result

    @staticmethod
    def _check_line(line: bytes, n: int, prev: str) -> str:
        r, bad = check_record(line)
        if r is None:
            return bad
        if r["seq"] != n:
            return f"sequence number {r['seq']} where {n} was expected (deleted or moved)"
        if r["prev_hash"] != prev:
            return "does not follow the previous record (deleted, inserted or reordered)"
        return bad
