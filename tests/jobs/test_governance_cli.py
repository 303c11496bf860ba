"""The governance commands as a user runs them (typer's CliRunner, in-process): audit ls
and verify, watch-list options and policy, deployment start/end/report, retention."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


def _audit(cli, *args) -> list[dict]:
    res = cli("audit", "ls", "--json", *args)
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines()]


def _enrol_with_policy(cli, known: Path) -> None:
    """A list that refuses minors refuses one; an adult is enrolled with who authorised it."""
    res = cli("watchlist", "policy", "events", "--no-minors")
    assert res.exit_code == 0, res.output
    res = cli("watchlist", "add", "Child", str(known / "obama.jpg"), "--list", "events", "--minor")
    assert res.exit_code == 2 and "does not allow minors" in res.output
    res = cli(
        "watchlist",
        "add",
        "Barack Obama",
        str(known / "obama.jpg"),
        "--list",
        "events",
        "--category",
        "wanted",
        "--reason",
        "warrant 123",
        "--authorised-by",
        "Supt Jones",
        "--source",
        "custody image",
    )
    assert res.exit_code == 0, res.output
    listed = json.loads(cli("watchlist", "ls", "--json").stdout)
    (person,) = listed["people"]
    assert (person["image_source"], person["authorised_by"], person["added_by"]) == (
        "custody image",
        "Supt Jones",
        "officer-7",
    )


def _deploy_end_and_report(cli, reports: Path) -> None:
    """A deployment needs all four of its facts, runs once per camera, ends and reports."""
    res = cli("deployment", "start", "--purpose", "Op X", "--location", "Cardiff")
    assert res.exit_code == 2 and "--cameras" in res.output  # all four are required
    args = ["--purpose", "Op X", "--location", "Cardiff", "--cameras", "c1,c2", "--list", "events"]
    res = cli("deployment", "start", *args)
    assert res.exit_code == 0, res.output
    dep_id = res.stdout.strip()
    assert "not configured" in res.stderr
    res = cli("deployment", "start", *args)
    assert res.exit_code == 2 and "already in a running deployment" in res.output
    res = cli("deployment", "end", dep_id)
    assert res.exit_code == 0 and "0 alerts" in res.output, res.output
    res = cli("deployment", "report", dep_id, "--out", str(reports))
    assert res.exit_code == 0, res.output
    rep = json.loads((reports / f"{dep_id}.json").read_text())
    assert rep["status"] == "ended" and rep["cameras"].keys() == {"c1", "c2"}
    assert (reports / f"{dep_id}.html").read_text().startswith("<!doctype html>")
    (listed,) = json.loads(cli("deployment", "ls", "--json").stdout)
    assert listed["deployment_id"] == dep_id and listed["ended_by"] == "officer-7"


def test_watchlist_deployment_retention_and_audit_end_to_end(cli, data, tmp_path):
    _enrol_with_policy(cli, data / "known")

    _deploy_end_and_report(cli, tmp_path / "reports")

    res = cli("retention", "run", "--dry-run", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["dry_run"] is True

    actions = [r["action"] for r in _audit(cli)]
    assert actions == [
        "watchlist.policy",
        "watchlist.add",
        "deployment.start",
        "deployment.end",
        "export.deployment_report",
        "retention.run",
    ]
    assert {r["actor"] for r in _audit(cli)} == {"officer-7"}
    assert [r["action"] for r in _audit(cli, "--action", "deployment")] == [
        "deployment.start",
        "deployment.end",
    ]
    assert _audit(cli, "--actor", "nobody") == [] and _audit(cli, "--since", "2999-01-01") == []
    add = _audit(cli, "--action", "watchlist.add")[0]["details"]
    assert add["images"][0]["sha256"] and add["authorised_by"] == "Supt Jones"


def test_audit_verify_names_the_first_broken_record(cli, tmp_path):
    for n in range(3):
        assert cli("watchlist", "policy", f"list{n}", "--size-cap", "5").exit_code == 0
    res = cli("audit", "verify")
    assert res.exit_code == 0 and "intact: 3 records" in res.output
    head = res.output.split("head ")[1].split()[0]
    log = Path(tmp_path / "home" / "audit.log")
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + lines[2])  # record 2 deleted
    res = cli("audit", "verify")
    assert res.exit_code == 1 and "broken at record 2" in res.output
    log.write_bytes(b"".join(lines[:2]))  # the last record cut off
    assert cli("audit", "verify").exit_code == 0
    res = cli("audit", "verify", "--head", head)
    assert res.exit_code == 1 and "cut off" in res.output
    assert cli("audit", "ls", "--since", "last tuesday").exit_code == 2
    log.unlink()  # a mistyped home has no log: that is not "intact: 0 records"
    res = cli("audit", "verify")
    assert res.exit_code == 1 and "no audit log" in res.output


def test_a_torn_audit_record_does_not_stop_the_next_act(cli, tmp_path):
    """A crash mid-write left half a record: the next policy change is applied and audited
    (the torn bytes set aside and recorded), not applied and then refused with a traceback."""
    assert cli("watchlist", "policy", "L1", "--size-cap", "5").exit_code == 0
    log = Path(tmp_path / "home" / "audit.log")
    log.write_bytes(log.read_bytes() + b'{"action":"watchlist.pol')
    res = cli("watchlist", "policy", "L1", "--size-cap", "7")
    assert res.exit_code == 0, res.output
    res = cli("audit", "verify")
    assert res.exit_code == 0 and "intact: 3 records" in res.output


@pytest.mark.parametrize(
    "purpose",
    [[], ["--case", "C-1"], ["--reason", "looking"], ["--case", " ", "--reason", "looking"]],
    ids=["none", "no-reason", "no-case", "blank-case"],
)
def test_a_search_without_a_purpose_is_refused(cli, data, tmp_path, purpose):
    clip = str(data / "video" / "short_hamilton_clip.mp4")
    res = cli("search", clip, "--list", "events", "--out", str(tmp_path / "o"), *purpose)
    assert res.exit_code == 2, res.output
    assert "needs a purpose" in res.output and "--case" in res.output
    assert not (tmp_path / "home" / "audit.log").exists()  # nothing was searched


def test_a_removal_records_who_why_and_which_photos(cli, data):
    res = cli("watchlist", "add", "Joe Biden", str(data / "known" / "biden.jpg"), "--list", "l")
    assert res.exit_code == 0, res.output
    pid = res.stdout.strip().splitlines()[-1]
    res = cli("watchlist", "rm", pid, "--reason", "warrant withdrawn")
    assert res.exit_code == 0, res.output
    (rec,) = _audit(cli, "--action", "watchlist.remove")
    assert rec["actor"] == "officer-7"
    assert (rec["details"]["name"], rec["details"]["reason"]) == ("Joe Biden", "warrant withdrawn")
    assert len(rec["details"]["images"]) == 1


@pytest.mark.timeout(240)
def test_no_cli_act_happens_when_the_audit_log_is_damaged(cli, data, tmp_path):
    """A whole line of garbage appended to the log (not a torn record): every act that
    writes the log is refused with one line naming the damaged line, exit code 2, and did
    not happen; the log is left as it was (evidence)."""
    known, clip = data / "known", str(data / "video" / "short_hamilton_clip.mp4")
    res = cli("watchlist", "add", "Joe Biden", str(known / "biden.jpg"), "--list", "events")
    assert res.exit_code == 0, res.output
    pid = res.stdout.strip().splitlines()[-1]
    home = tmp_path / "home"
    log = home / "audit.log"
    line = len(log.read_bytes().splitlines()) + 1
    damaged = log.read_bytes() + b"operator note: checked the cameras\n"
    log.write_bytes(damaged)

    def refused(*args: str) -> None:
        res = cli(*args)
        assert res.exit_code == 2, (args, res.output)
        assert f"damaged at line {line} (not a JSON record)" in res.output, res.output
        assert "Traceback" not in res.output and "nothing was done" in res.output
        assert log.read_bytes() == damaged

    def listed() -> dict:
        return json.loads(cli("watchlist", "ls", "--json").stdout)

    before = listed()
    refused("watchlist", "add", "Barack Obama", str(known / "obama.jpg"), "--list", "events")
    refused("watchlist", "rm", pid, "--reason", "warrant withdrawn")
    refused("watchlist", "policy", "events", "--size-cap", "3")
    refused("watchlist", "calibrate", "--list", "events", "--distractors", str(data / "lfw"))
    assert listed() == before  # nobody enrolled or removed; cap and threshold as they were
    out = tmp_path / "out"
    refused("search", clip, "--list", "events", "--case", "C-1", "--reason", "r", "--out", str(out))
    refused("index", clip, "--case", "C-1", "--reason", "r", "--out", str(out))
    assert not out.exists()  # nothing searched or indexed
    with sqlite3.connect(home / "catalog.sqlite") as db:  # Biden's entry is now overdue
        db.execute("UPDATE persons SET expires_on = '2000-01-01'")
    refused("retention", "run")
    assert [p["person_id"] for p in listed()["people"]] == [pid]  # not removed by retention
    deployment = ["--purpose", "p", "--location", "l", "--cameras", "c1", "--list", "events"]
    refused("deployment", "start", *deployment)
    assert json.loads(cli("deployment", "ls", "--json").stdout) == []
    refused("camera", "add", "door-1", "push")
    assert json.loads(cli("camera", "ls", "--json").stdout) == []


@pytest.mark.parametrize(
    "args",
    [
        ["watchlist", "add", "Bob\x1b[2J", "{photo}"],  # ESC: clears the screen
        ["watchlist", "add", "Barack \u202eamabO", "{photo}"],  # right-to-left override
        ["watchlist", "add", "Barack Obama", "{photo}", "--list", "L\x07"],  # BEL
        ["watchlist", "add", "Barack Obama", "{photo}", "--authorised-by", "Supt\x9bJ"],  # CSI
        ["watchlist", "add", "Barack Obama", "{photo}", "--reason", "why\x1b]0;x\x07"],
        ["watchlist", "policy", "L\u2066", "--size-cap", "5"],  # an isolate
        [
            "deployment",
            "start",
            "--purpose",
            "p",
            "--location",
            "gate\x1b[1A",
            "--cameras",
            "c1",
            "--list",
            "L",
        ],
        ["search", "{clip}", "--case", "C\x7f1", "--reason", "r", "--list", "L"],  # DEL
    ],
    ids=["esc", "bidi", "bel-list", "c1-control", "reason", "isolate", "location", "del-case"],
)
def test_control_and_bidi_characters_are_refused_in_names(cli, data, tmp_path, args):
    photo, clip = data / "known" / "obama.jpg", data / "video" / "short_hamilton_clip.mp4"
    args = [a.format(photo=photo, clip=clip) for a in args]
    if args[0] == "search":
        args += ["--out", str(tmp_path / "out")]
    res = cli(*args)
    assert res.exit_code == 2, res.output
    assert "control or bidirectional-override characters" in res.output
    assert "\x1b" not in res.output.replace("\x1b[", "")  # the message shows no raw ESC...
    for raw in ("\x1b[2J", "\x1b[1A", "\u202e", "\x07", "\x9b", "\x7f", "\u2066"):
        assert raw not in res.output  # ...nor any character it refused
    listed = json.loads(cli("watchlist", "ls", "--json").stdout)
    assert listed["people"] == [] and listed["lists"] == []  # nobody, no list


def test_watchlist_ls_never_prints_a_raw_escape(cli, data, tmp_path):
    """A name stored before names were checked (written into the catalog here) is shown
    escaped, not sent to the terminal."""
    res = cli("watchlist", "add", "Barack Obama", str(data / "known" / "obama.jpg"))
    assert res.exit_code == 0, res.output
    with sqlite3.connect(tmp_path / "home" / "catalog.sqlite") as db:
        db.execute("UPDATE persons SET name = ?", ("Bob\x1b[2J\u202e [red]x",))
    res = cli("watchlist", "ls")
    assert res.exit_code == 0, res.output
    text = "".join(res.output.split())
    assert "\x1b" not in res.output and "\u202e" not in res.output
    assert "Bob\\x" in text and "[red]x" in text  # escaped (cut at 80 columns); no markup


def _open_to_others(root: Path) -> list[str]:
    """Every file or folder under ``root`` (itself included) its group or others may use."""
    paths = [root, *root.rglob("*")]
    return [f"{p} {p.stat().st_mode & 0o777:04o}" for p in paths if p.lstat().st_mode & 0o077]


def test_what_facewatch_creates_is_private(cli, data, tmp_path):
    """A fresh home: catalog, audit log, milvus-lite files, media, all 0600 / 0700."""
    res = cli("watchlist", "add", "Barack Obama", str(data / "known" / "obama.jpg"))
    assert res.exit_code == 0, res.output
    home = tmp_path / "home"
    names = {p.name for p in home.iterdir()}
    assert {"catalog.sqlite", "audit.log", "milvus.db", "media"} <= names, names
    assert _open_to_others(home) == []


def test_a_home_open_to_others_is_refused_unless_allowed(cli, data, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o755)  # as an operator's `mkdir` leaves it
    photo = str(data / "known" / "obama.jpg")
    res = cli("watchlist", "add", "Barack Obama", photo)
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert f"the home {home} is open to other users (mode 0755)" in text
    assert f"chmod -R go-rwx {home}" in text and "--allow-shared-home" in text
    assert list(home.iterdir()) == []  # nothing written
    res = cli("--allow-shared-home", "watchlist", "add", "Barack Obama", photo)
    assert res.exit_code == 0, res.output  # said explicitly: used as it is
    assert _open_to_others(home) == [f"{home} 0755"]  # only the folder the operator made


def test_enrolment_guidance_and_reembed_need_their_photos_and_a_reason(cli, data, tmp_path):
    """One photo: the warning quotes the measured TPIR at 1 and 3 photos (the embedder's
    ``measured_tpir``, read from bench_recall.json); ``ls`` flags the person. A re-embedding
    changes who is found: it needs --reason, takes only the list's own photos (by content)
    and is audited."""
    from pipelines.embedders.backends import DlibResnetEmbedder

    photo = data / "known" / "obama.jpg"
    res = cli("watchlist", "add", "Barack Obama", str(photo), "--list", "L")
    assert res.exit_code == 0, res.output
    one, three = DlibResnetEmbedder.measured_tpir[1], DlibResnetEmbedder.measured_tpir[3]
    said = " ".join(res.output.split())
    assert f"expect about {one:.0%}" in said and f"against {three:.0%} with 3 photos" in said
    listed = " ".join(cli("watchlist", "ls").output.split())
    assert "Barack Obama: 1 photo: add more" in listed
    assert "review tier: threshold 0.935" in listed  # both tiers, each on its line
    refused = cli("watchlist", "reembed", "--list", "L", "--photos", str(photo))
    assert refused.exit_code == 2 and "give --reason" in refused.output
    biden = str(data / "known" / "biden.jpg")
    other = cli("watchlist", "reembed", "--list", "L", "--photos", biden, "--reason", "photo TTA")
    assert other.exit_code == 2 and "none of the 1 photos" in " ".join(other.output.split())
    done = cli("watchlist", "reembed", "--list", "L", "--photos", str(photo.parent),
               "--reason", "photo TTA")  # fmt: skip
    assert done.exit_code == 0 and "re-embedded 1 photo(s)" in done.output, done.output
    log = (tmp_path / "home" / "audit.log").read_text().splitlines()
    acts = [json.loads(line) for line in log if '"watchlist.reembed"' in line]
    assert len(acts) == 1 and acts[0]["details"]["reason"] == "photo TTA"
    assert acts[0]["details"]["modes"] == {acts[0]["details"]["entries"][0]: "tta6"}


def test_measured_tpir_quoted_to_officers_is_what_bench_recall_measured():
    """The numbers enrolment guidance quotes are the benchmark's, not typed by hand twice."""
    from measured import RESULTS

    from pipelines.embedders.backends import DlibResnetEmbedder

    rows = json.loads((RESULTS / "bench_recall.json").read_text())["photos"]["rows"]
    shipped = {
        r["per_person"]: r["tpir_at_fpir"]["0.001"]
        for r in rows
        if (r["photos"], r["probes"], r["cohort_offsets"]) == ("tta", "once", False)
        and r["rule"] == ("best" if r["per_person"] == 1 else "mean")
    }
    assert DlibResnetEmbedder.measured_tpir == {1: shipped[1], 3: shipped[3]}
