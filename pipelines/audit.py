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
from typing import Any

GENESIS = "0" * 64


class AuditError(ValueError):
    """The audit log cannot be read as asked; the message says where."""


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
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                torn = self._set_aside_torn_tail(f)
                if torn is not None:
                    self._write(f, "audit", "audit.torn_record_set_aside", torn)
                record = self._write(f, actor, action, details)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return record

    def _write(self, f, actor: str, action: str, details: dict[str, Any]) -> dict[str, Any]:
        seq, prev = self._tail(f)
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

    def _set_aside_torn_tail(self, f) -> dict[str, Any] | None:
        """A last line without its end of line: a whole record only missing the newline
        gets it; anything else moves to ``<log>.torn``. Returns what to record, or None."""
        f.seek(0, os.SEEK_END)
        end = f.tell()
        if end == 0:
            return None
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return None
        start = end - 1
        while start > 0:  # back to the byte after the last end of line
            step = min(start, 1 << 16)
            f.seek(start - step)
            cut = f.read(step).rfind(b"\n")
            if cut >= 0:
                start = start - step + cut + 1
                break
            start -= step
        f.seek(start)
        tail = f.read(end - start)
        try:
            whole = json.loads(tail)
        except (json.JSONDecodeError, UnicodeDecodeError):
            whole = None
        if isinstance(whole, dict) and whole.get("hash") == record_hash(whole):
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

    @staticmethod
    def _tail(f) -> tuple[int, str]:
        """(seq, hash) of the last record, reading backwards from the end."""
        f.seek(0, os.SEEK_END)
        end = f.tell()
        if end == 0:
            return 0, GENESIS
        size = min(end, 1 << 16)
        while True:
            f.seek(end - size)
            chunk = f.read(size)
            lines = chunk.rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or size == end:
                last = json.loads(lines[-1])
                return int(last["seq"]), str(last["hash"])
            size = min(end, size * 4)

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
        if not line.endswith(b"\n"):
            return "truncated record (no end of line)"
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            return "not a JSON record"
        if not isinstance(r, dict) or not {"seq", "hash", "prev_hash"} <= set(r):
            return "not an audit record"
        if r["seq"] != n:
            return f"sequence number {r['seq']} where {n} was expected (deleted or moved)"
        if r["prev_hash"] != prev:
            return "does not follow the previous record (deleted, inserted or reordered)"
        if record_hash(r) != r["hash"]:
            return "contents changed after it was written"
        return ""
