"""The audit log: tampering is caught at the record where it happened."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from pipelines.audit import GENESIS, AuditError, AuditLog, AuditUnavailable, record_hash


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    log = AuditLog(tmp_path / "audit.log")
    for i in range(1, 7):
        log.append(f"user{i % 2}", "watchlist.add" if i % 2 else "search", n=i, case=f"C{i}")
    return log


def _lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def _write(log: AuditLog, lines: list[bytes]) -> None:
    log.path.write_bytes(b"".join(lines))


def _edit_field(lines):
    r = json.loads(lines[2])
    r["details"]["case"] = "OTHER"
    lines[2] = json.dumps(r, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    return lines


def _edit_and_rehash(lines):
    r = json.loads(lines[2])
    r["actor"] = "someone-else"
    r["hash"] = record_hash(r)  # a careful forger: the record itself is consistent again
    lines[2] = json.dumps(r, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    return lines


def _delete(lines):
    del lines[2]
    return lines


def _swap(lines):
    lines[2], lines[3] = lines[3], lines[2]
    return lines


def _insert(lines):
    return [*lines[:2], lines[1], *lines[2:]]


def _garbage(lines):
    lines[2] = b"not json\n"
    return lines


def _truncate_mid_record(lines):
    return [*lines[:5], lines[5][:-10]]


def _duplicate_key(lines):
    """The same record with its actor named twice: the hash covers the last value json
    keeps, so only a parser that refuses duplicate keys sees the hidden first one."""
    lines[2] = lines[2].replace(b'"actor":', b'"actor":"someone-else","actor":', 1)
    return lines


def _not_canonical(lines):
    lines[2] = lines[2].replace(b'","', b'", "', 1)  # same record, other bytes
    return lines


@pytest.mark.parametrize(
    ("tamper", "first_bad", "why"),
    [
        (_edit_field, 3, "contents changed"),
        (_edit_and_rehash, 4, "does not follow"),
        (_delete, 3, "sequence number 4 where 3"),
        (_swap, 3, "sequence number 4 where 3"),
        (_insert, 3, "sequence number 2 where 3"),
        (_garbage, 3, "not a JSON record"),
        (_truncate_mid_record, 6, "truncated"),
        (_duplicate_key, 3, "a key appears twice"),
        (_not_canonical, 3, "canonical form"),
    ],
    ids=[
        "edit",
        "edit+rehash",
        "delete",
        "swap",
        "insert",
        "garbage",
        "torn-write",
        "duplicate-key",
        "not-canonical",
    ],
)
def test_tampering_is_found_at_the_right_record(log, tamper, first_bad, why):
    assert log.verify().ok and log.verify().n_records == 6
    _write(log, tamper(_lines(log)))
    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq == first_bad
    assert why in result.reason
    assert result.n_records == first_bad - 1


def test_cut_off_tail_is_found_with_a_noted_head(log):
    head = log.verify().head
    assert head != GENESIS and log.verify(head).ok
    _write(log, _lines(log)[:4])
    assert log.verify().ok  # a shorter chain is still a chain...
    result = log.verify(head)  # ...but the head noted earlier is gone
    assert not result.ok and result.first_bad_seq == 5 and "cut off" in result.reason


def test_appends_continue_the_chain_after_reopening(log):
    again = AuditLog(log.path)
    rec = again.append("admin", "retention.run", deleted={"rejected_alerts": 2})
    assert rec["seq"] == 7 and rec["prev_hash"] == json.loads(_lines(log)[5])["hash"]
    assert again.verify().ok and again.verify().n_records == 7


def test_filters(log):
    assert [r["seq"] for r in log.records(actor="user0")] == [2, 4, 6]
    assert [r["seq"] for r in log.records(action="watchlist")] == [1, 3, 5]  # sub-actions
    assert [r["seq"] for r in log.records(action="watchlist.add")] == [1, 3, 5]
    assert list(log.records(action="watch")) == []  # a prefix is not an action
    assert len(list(log.records(since="2000-01-01"))) == 6
    assert list(log.records(since="2999-01-01T00:00:00+02:00")) == []
    with pytest.raises(AuditError, match="ISO date"):
        list(log.records(since="yesterday"))


def test_ls_on_a_damaged_log_says_so(log):
    _write(log, _garbage(_lines(log)))
    with pytest.raises(AuditError, match="line 3"):
        list(log.records())


def _append_many(path: str, who: str, n: int) -> None:
    log = AuditLog(Path(path))
    for i in range(n):
        log.append(who, "search", i=i)


@pytest.mark.timeout(60)
def test_concurrent_writers_keep_one_chain_and_readers_see_it_whole(tmp_path):
    path = str(tmp_path / "audit.log")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(path, f"p{k}", 25)) for k in range(4)]
    for p in procs:
        p.start()
    log, checks = AuditLog(Path(path)), 0
    while any(p.is_alive() for p in procs):  # a reader never sees a half-written record
        result = log.verify()
        assert result.ok, result.reason
        checks += 1
    for p in procs:
        p.join(50)
        assert p.exitcode == 0
    assert checks > 0
    result = AuditLog(Path(path)).verify()
    assert result.ok and result.n_records == 100


def test_a_torn_last_record_is_set_aside_and_auditing_goes_on(log):
    """A crash mid-write leaves half a record at the end. It must not stop every later
    append (the act would happen unaudited): the next append moves those bytes aside,
    records that it did, and the chain verifies again."""
    whole = log.path.read_bytes()
    torn = b'{"action":"watchlist.pol'
    log.path.write_bytes(whole + torn)
    assert not log.verify().ok  # until the next append: reported, not hidden
    assert len(list(log.records())) == 6  # readers skip the torn line instead of failing
    log.append("officer", "watchlist.policy", size_cap=7)
    result = log.verify()
    assert result.ok and result.n_records == 8
    repair, policy = list(log.records())[-2:]
    assert repair["action"] == "audit.torn_record_set_aside"
    assert repair["details"]["bytes"] == len(torn) and repair["details"]["at_byte"] == len(whole)
    assert policy["action"] == "watchlist.policy" and policy["prev_hash"] == repair["hash"]
    kept = log.path.with_name("audit.log.torn")
    assert kept.read_bytes() == torn + b"\n" and kept.stat().st_mode & 0o777 == 0o600


def test_a_whole_record_missing_only_its_end_of_line_is_kept(log):
    log.path.write_bytes(log.path.read_bytes()[:-1])  # the last record, without its newline
    log.append("officer", "search", case="C7")
    result = log.verify()
    assert result.ok and result.n_records == 7
    assert not log.path.with_name("audit.log.torn").exists()


# Written by the code before records were checked for canonical bytes (git 1ee9f8c):
# logs already in use must still verify and take appends.
OLD_LOG = (
    b'{"action":"watchlist.add","actor":"officer-7","details":{"exp":null,"images":[{"sha256":'
    b'"ab"}],"minor":false,"n":1.5,"name":"Zo\\u00eb \\u00dc"},"hash":"739fdb9f8122fdac63822e11b5'
    b'2ad4b4e09a3fb327cb001860232ffae0aad1f2","prev_hash":"0000000000000000000000000000000000000'
    b'000000000000000000000000000","seq":1,"ts":"2026-12-04T23:42:48.895+00:00"}\n'
    b'{"action":"search","actor":"admin","details":{"case":"C1","paths":["/x/\\u00fc.mp4"]},"ha'
    b'sh":"cd6f81c6353382df9d533badb96156ffd6c8dc45398bcbf858aa01dc87e59d96","prev_hash":"739fdb9'
    b'f8122fdac63822e11b52ad4b4e09a3fb327cb001860232ffae0aad1f2","seq":2,"ts":"2026-12-04T23:42:4'
    b'8.901+00:00"}\n'
)


def test_a_log_written_before_the_canonical_check_still_verifies(tmp_path):
    log = AuditLog(tmp_path / "audit.log")
    log.path.write_bytes(OLD_LOG)
    assert log.verify().ok and log.verify().n_records == 2
    log.append("admin", "search", case="C2")
    assert log.verify().ok and log.verify().n_records == 3


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (b"this is not a record\n", "not a JSON record"),
        (b'{"seq": 7}\n', "not an audit record"),
        (b"\n", "not a JSON record"),
    ],
    ids=["garbage-line", "not-a-record", "blank-line"],
)
def test_a_damaged_log_takes_no_record_and_names_the_line(log, damage, why):
    """A whole damaged line at the end (not a torn write): the act it would record must
    not happen, so check() and append() refuse, naming line 7, and write nothing."""
    damaged = log.path.read_bytes() + damage
    log.path.write_bytes(damaged)
    with pytest.raises(AuditUnavailable, match=f"line 7 \\({why}") as caught:
        log.check()
    assert caught.value.line == 7 and "line 7" in caught.value.public_message()
    with pytest.raises(AuditUnavailable, match="line 7"):
        log.append("officer", "watchlist.add", name="X")
    assert log.path.read_bytes() == damaged
    log.path.write_bytes(damaged + b'{"action":"watchlist.pol')  # and a torn write after it
    with pytest.raises(AuditUnavailable, match="line 7"):
        log.append("officer", "watchlist.add", name="X")
    assert not log.path.with_name("audit.log.torn").exists()


def test_a_damaged_last_record_is_refused_even_when_it_parses(log):
    lines = _lines(log)
    log.path.write_bytes(b"".join(_duplicate_key(lines[:3])))  # the damage is the last line
    with pytest.raises(AuditUnavailable, match="line 3 \\(not a valid record: a key appears"):
        log.append("officer", "search", case="C9")
    log.path.write_bytes(b"".join(lines[:2]))
    log.append("officer", "search", case="C9")  # the damage gone: auditing goes on
    assert log.verify().ok and log.verify().n_records == 3
