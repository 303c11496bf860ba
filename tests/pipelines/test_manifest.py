"""Bulk-enrolment manifests are checked whole before any work: every problem is listed by
line, photos stay inside the CSV's folder, and rows of one person must agree."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from pipelines.manifest import HEADER, ManifestError, person_id_for, read_manifest

pytestmark = pytest.mark.timeout(30)
TODAY = date(2026, 12, 5)


def _manifest(folder: Path, rows: list[str], header: str = ",".join(HEADER)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("a.jpg", "b.jpg", "sub/c.jpg"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"not checked here: photos are read by the pool")
    path = folder / "m.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _problems(path: Path, **kw) -> list[str]:
    with pytest.raises(ManifestError) as err:
        read_manifest(path, "import reason", TODAY, **kw)
    return err.value.problems


def test_rows_of_one_person_are_one_person_with_defaults_filled_in(tmp_path):
    path = _manifest(
        tmp_path / "m",
        [
            "R1,Ann Smith,a.jpg,wanted,,2027-01-01,Supt Jones,custody",
            "",  # a blank line is harmless
            "R2,Bob,sub/c.jpg,,warrant 9,,,",
            "R1,Ann Smith,b.jpg,wanted,,2027-01-01,Supt Jones,custody",
        ],
    )
    people = read_manifest(path, "import reason", TODAY)
    assert [p.person_ref for p in people] == ["R1", "R2"]
    ann, bob = people
    assert [r.photo for r in ann.photos] == ["a.jpg", "b.jpg"]
    assert [r.line for r in ann.photos] == [2, 5]
    assert ann.photos[0].path == (tmp_path / "m" / "a.jpg").resolve()
    assert (ann.reason, ann.expires_on, ann.authorised_by) == (
        "import reason",
        date(2027, 1, 1),
        "Supt Jones",
    )
    assert (bob.category, bob.reason, bob.expires_on, bob.source) == (
        "other",
        "warrant 9",
        None,
        None,
    )


def test_every_problem_is_listed_at_once_by_line(tmp_path):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"x")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "link.jpg").symlink_to(outside)
    path = _manifest(
        tmp_path / "m",
        [
            "R1,Ann,a.jpg,wanted,,,,",
            "R1,Ann B,b.jpg,suspect,,,,",  # disagrees with line 2 twice
            "R2,Bob,../outside.jpg,,,,,",
            "R3,Cy,/etc/passwd,,,,,",
            "R4,Di,link.jpg,,,,,",  # a symlink out of the folder
            "R5,Ed,missing.jpg,,,,,",
            "R6,,a.jpg,villain,,2020-01-01,,",
            "R7,Flo,a.jpg,,,next week,,",
            ",NoRef,a.jpg,,,,,",
            "R8,Gus\u202e,a.jpg,,,,,",
            "R9,Hal,a.jpg,,,,",  # one field short
        ],
    )
    problems = _problems(path)
    text = "\n".join(problems)
    assert "line 12: 7 fields, the header has 8" in text
    assert len(problems) == 1  # a broken row shape stops the check at once: nothing else is
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    problems = _problems(path)
    expected = [
        "line 3: person_ref 'R1' has another name",
        "line 3: person_ref 'R1' has another category",
        "line 4: photo '../outside.jpg' lies outside the CSV's folder",
        "line 5: photo '/etc/passwd' must be a path relative to the CSV",
        "line 6: photo 'link.jpg' lies outside the CSV's folder",
        "line 7: photo 'missing.jpg' does not exist",
        "line 8: a person's name is empty",
        "line 8: category 'villain' is not one of",
        "line 8: expiry date 2020-01-01 is in the past",
        "line 9: expires must be a date YYYY-MM-DD, got 'next week'",
        "line 10: person_ref is empty",
        "line 11: a person's name may not hold control or bidirectional-override characters",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)
    assert len(problems) == len(expected)


@pytest.mark.parametrize(
    "header",
    [
        "name,person_ref,photo,category,reason,expires,authorised_by,source",
        "person_ref,name,photo",
        "",
    ],
)
def test_the_header_must_be_the_documented_one(tmp_path, header):
    path = _manifest(tmp_path / "m", ["R1,Ann,a.jpg,,,,,"], header=header)
    assert _problems(path)[0].startswith("line 1: the header must be person_ref,name,photo")


def test_minors_only_on_a_list_that_allows_them(tmp_path):
    path = _manifest(
        tmp_path / "m",
        ["R1,Ann,a.jpg,missing,,,,,true", "R2,Bob,b.jpg,missing,,,,,no", "R3,Cy,a.jpg,,,,,,maybe"],
        header=",".join(HEADER) + ",minor",
    )
    problems = _problems(path)
    assert problems == [
        "line 2: the list does not allow minors; an admin must allow it explicitly",
        "line 4: minor must be true or false, got 'maybe'",
    ]
    path.write_text(path.read_text().replace(",maybe", ",false"))
    people = read_manifest(path, "r", TODAY, allow_minors=True)
    assert [p.minor for p in people] == [True, False, False]


def test_not_utf8_and_not_csv_are_clear_errors(tmp_path):
    path = _manifest(tmp_path / "m", ["R1,Ann,a.jpg,,,,,"])
    path.write_bytes(path.read_bytes() + b"R2,\xff\xfe,a.jpg,,,,,\n")
    assert "not UTF-8 text" in _problems(path)[0]
    path.write_text(",".join(HEADER) + '\nR1,"Ann,a.jpg,,,,,\n')
    assert "not valid CSV" in _problems(path)[0] or "fields" in _problems(path)[0]
    path.write_text(",".join(HEADER) + "\n")
    assert _problems(path) == ["m.csv: no rows after the header"]


def test_a_person_id_is_the_same_every_run_and_differs_per_list():
    assert person_id_for("wl", "R1") == person_id_for("wl", "R1")
    assert person_id_for("wl", "R1") != person_id_for("other", "R1")
    assert person_id_for("wl", "R1") != person_id_for("wl", "R2")
    assert person_id_for("wl", "R1").startswith("p_") and len(person_id_for("wl", "R1")) == 14
