"""Cases and evidence bundles without Ray: a real catalog and audit log in tmp_path, a real
clip cut from examples/short_hamilton_clip.mp4, the bundle checked byte by byte."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from pipelines.cases import Actor, CaseBook, CaseError
from pipelines.config import Settings
from pipelines.evidence import MANIFEST, export_bundle, verify_bundle
from pipelines.home import Home
from pipelines.schemas import Sighting
from pipelines.sighting_reviews import SightingReviews

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "examples" / "short_hamilton_clip.mp4"
ANA, BEN = Actor("ana", "investigator"), Actor("ben", "investigator")
AUDITOR, ADMIN = Actor("aud", "auditor"), Actor("root", "admin")


@pytest.fixture
def home(tmp_path):
    with Home.open(Settings(home=tmp_path / "home")) as h:
        yield h


@pytest.fixture
def book(home):
    return CaseBook(home.catalog, home.audit)


def actions(home: Home) -> list[tuple[str, str]]:
    return [(r["actor"], r["action"]) for r in home.audit.records()]


@pytest.mark.timeout(30)
def test_only_the_owner_grantees_and_auditors_open_a_case_and_refusals_are_audited(home, book):
    book.create("OP-1", "robbery at the depot", "Supt. Hale", ANA)
    with pytest.raises(CaseError) as refused:
        book.open("OP-1", BEN)
    assert refused.value.status == 403
    assert ("ben", "case.refused") in actions(home)
    assert book.cases(BEN) == [] and [c["case_ref"] for c in book.cases(ANA)] == ["OP-1"]
    assert book.open("OP-1", AUDITOR)["owner"] == "ana"
    with pytest.raises(CaseError) as not_work:
        book.require("OP-1", AUDITOR, "work")  # an auditor reads, never decides
    assert not_work.value.status == 403
    with pytest.raises(CaseError):
        book.grant("OP-1", "ben", ANA)  # only an admin grants
    assert book.grant("OP-1", "ben", ADMIN)["grants"] == ["ben"]
    assert book.require("OP-1", BEN, "work")["case_ref"] == "OP-1"
    assert ("root", "case.grant") in actions(home) and home.audit.verify().ok


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "ref, reason, authority, words",
    [
        ("../etc", "r", "a", "a case reference is"),
        ("OP-2", "  ", "a", "needs a reason"),
        ("OP-2", "r", "", "who authorised it"),
        ("OP-2", "r\x1b[2J", "a", "control or bidirectional"),
    ],
)
def test_a_bad_case_is_refused_clearly_and_stores_nothing(
    home, book, ref, reason, authority, words
):
    with pytest.raises(CaseError, match=words.replace("(", r"\(")):
        book.create(ref, reason, authority, ANA)
    assert home.catalog.rows("SELECT * FROM cases") == []
    with pytest.raises(CaseError) as role:
        book.create("OP-3", "r", "a", AUDITOR)
    assert role.value.status == 403


def confirmed_case(home: Home, book: CaseBook) -> Sighting:
    """Case OP-1 with one confirmed sighting at 3-7 s of the example clip."""
    book.create("OP-1", "robbery at the depot", "Supt. Hale", ANA)
    s = Sighting(
        "p_1",
        "Lin-Manuel Miranda",
        "probe",
        str(CLIP),
        "f1",
        3.0,
        7.0,
        0.97,
        4.0,
        20,
        sighting_id="s_0123456789abcdef",
    )
    SightingReviews(home).decide(s, home.path, "OP-1", "confirmed", "same man", "ana")
    return s


@pytest.mark.timeout(60)
def test_a_bundle_verifies_and_any_changed_byte_fails_and_says_where(home, book, tmp_path):
    confirmed_case(home, book)
    bundle = tmp_path / "OP-1.zip"
    result = export_bundle(book, "OP-1", ANA, bundle)
    assert result["confirmed_clips"] == 1 and result["audit_records"] >= 3
    verdict = verify_bundle(bundle)
    assert verdict.ok, verdict.problems
    data = bundle.read_bytes()
    with zipfile.ZipFile(bundle) as z:
        manifest = json.loads(z.read(MANIFEST))
        clip = z.getinfo("clips/s_0123456789abcdef.mp4")
        assert any(
            r["action"] == "case.create"
            for r in map(json.loads, z.read("audit/records.jsonl").splitlines())
        )
    assert manifest["case"]["authorised_by"] == "Supt. Hale"
    middle_of_clip = clip.header_offset + len(clip.FileHeader()) + clip.compress_size // 2
    for at in (middle_of_clip, 10, len(data) - 30, data.index(b"Supt. Hale")):
        bad = bytearray(data)
        bad[at] ^= 0x01
        changed = tmp_path / f"changed-{at}.zip"
        changed.write_bytes(bytes(bad))
        verdict = verify_bundle(changed)
        assert not verdict.ok and verdict.problems, at
    changed = tmp_path / "clip-changed.zip"
    bad = bytearray(data)
    bad[middle_of_clip] ^= 0x01
    changed.write_bytes(bytes(bad))
    assert "clips/s_0123456789abcdef.mp4" in " ".join(verify_bundle(changed).problems)


@pytest.mark.timeout(60)
def test_a_bundle_without_the_clip_of_a_confirmed_sighting_fails(home, book, tmp_path):
    confirmed_case(home, book)
    bundle = tmp_path / "OP-1.zip"
    export_bundle(book, "OP-1", ANA, bundle)
    cut = tmp_path / "cut.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(cut, "w") as dst:
        for info in src.infolist():
            if not info.filename.startswith("clips/"):
                dst.writestr(info, src.read(info))
    problems = " ".join(verify_bundle(cut).problems)
    assert "confirmed sighting s_0123456789abcdef: no clip" in problems
    assert "clips/s_0123456789abcdef.mp4: listed in the manifest, missing" in problems


@pytest.mark.timeout(30)
def test_another_investigator_cannot_export_a_case(home, book, tmp_path):
    confirmed_case(home, book)
    with pytest.raises(CaseError) as refused:
        export_bundle(book, "OP-1", BEN, tmp_path / "x.zip")
    assert refused.value.status == 403 and not (tmp_path / "x.zip").exists()


@pytest.mark.timeout(120)
def test_every_byte_of_a_bundle_is_covered(home, book, tmp_path):
    """One changed bit anywhere (each header byte of the first entries, every 997th byte
    of the rest) fails verification with a named problem, never a crash."""
    confirmed_case(home, book)
    bundle = tmp_path / "OP-1.zip"
    export_bundle(book, "OP-1", ANA, bundle)
    data = bundle.read_bytes()
    changed = tmp_path / "changed.zip"
    for at in [*range(0, 400), *range(400, len(data), 997), *range(len(data) - 300, len(data))]:
        bad = bytearray(data)
        bad[at] ^= 0x04
        changed.write_bytes(bytes(bad))
        verdict = verify_bundle(changed)
        assert not verdict.ok and verdict.problems, at
