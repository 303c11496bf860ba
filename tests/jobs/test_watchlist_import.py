"""``facewatch watchlist import``: a manifest of real LFW photos enrolled through Ray Data and
the FacePool; unusable photos go to the errors table; a rerun adds nothing."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jobs.archive.watchlist_import import BulkImport, ImportResult
from pipelines.catalog import today
from pipelines.config import Settings
from pipelines.engine import ProbeFace
from pipelines.home import Home
from pipelines.manifest import HEADER, ManifestError, person_id_for
from pipelines.watchlist import Watchlists


def _copy_people(data: Path, folder: Path, n: int, photos: int = 2) -> list[tuple[str, str]]:
    """``n`` LFW people with at least ``photos`` photos, copied under ``folder``:
    (name, relative photo path) per row."""
    rows = []
    for person in sorted(p for p in (data / "lfw").iterdir() if p.is_dir()):
        imgs = sorted(person.glob("*.jpg"))
        if len(imgs) < photos:
            continue
        for img in imgs[:photos]:
            dst = folder / "photos" / img.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(img, dst)
            rows.append((person.name, f"photos/{img.name}"))
        if len(rows) == n * photos:
            return rows
    raise AssertionError("not enough LFW people")


def _write(folder: Path, rows: list[tuple[str, str]]) -> Path:
    path = folder / "manifest.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for name, photo in rows:
            w.writerow(
                [f"REF-{name}", name.replace("_", " "), photo, "wanted", "", "", "DI X", "LFW"]
            )
    return path


@pytest.fixture
def home(tmp_path):
    """A real home (catalog, audit log, milvus-lite store), no face engine: the embedder's
    identity is read from its weights file without loading it."""
    import torch

    from pipelines.embedders.backends import build_embedder

    settings = Settings(home=tmp_path / "home")
    info = build_embedder(settings.embedder, torch.device("cpu")).info
    h = Home.open(settings, info)
    yield h, Watchlists(h, info, 0.95)
    h.close()


@pytest.mark.timeout(120)
def test_a_planned_rerun_sends_only_photos_not_yet_enrolled(home, tmp_path, data):
    h, lists = home
    rows = _copy_people(data, tmp_path / "m", 3)
    rows.append(rows[0])  # the same photo twice for one person: embedded once
    manifest = _write(tmp_path / "m", rows)
    job = BulkImport(h, lists, "wl", "officer", "bulk test")
    people = job.check(manifest, today())
    result = ImportResult()
    todo = job.plan(people, result)
    assert [len(t.photos) for t in todo] == [2, 2, 2] and result.photos_skipped == 1
    assert not any(t.existing for t in todo)
    # enrol the first person's first photo as an import would (a synthetic embedding: the
    # plan only reads the catalog), then plan again
    first_row, digest = todo[0].photos[0]
    face = ProbeFace(first_row.photo, digest, _unit(128), np.zeros((8, 8, 3), np.uint8), 1.0)
    pid = lists.add("A", [face], "officer", "wl", person_id=todo[0].person_id)
    assert pid == person_id_for("wl", people[0].person_ref)
    again = ImportResult()
    todo2 = job.plan(job.check(manifest, today()), again)
    assert todo2[0].existing and [r.photo for r, _ in todo2[0].photos] == [rows[1][1]]
    assert again.photos_skipped == 2 and [len(t.photos) for t in todo2] == [1, 2, 2]


@pytest.mark.timeout(120)
def test_size_cap_and_removed_people_refuse_the_whole_import_before_work(home, tmp_path, data):
    h, lists = home
    manifest = _write(tmp_path / "m", _copy_people(data, tmp_path / "m", 3, photos=1))
    lists.set_policy("wl", "admin", size_cap=2)
    job = BulkImport(h, lists, "wl", "officer", "bulk test")
    with pytest.raises(ManifestError, match="3 new people do not fit"):
        job.check(manifest, today())
    with pytest.raises(ManifestError, match="needs --reason"):
        BulkImport(h, lists, "wl", "officer", " ").check(manifest, today())


def _unit(dim: int) -> np.ndarray:
    v = np.random.default_rng(0).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.mark.timeout(600)
def test_import_50_people_then_rerun_changes_nothing(cli, data, tmp_path):
    folder = tmp_path / "m"
    rows = _copy_people(data, folder, 50)
    (folder / "photos" / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    shutil.copyfile(data / "known" / "two_people.jpg", folder / "photos" / "two.jpg")
    rows += [(rows[0][0], "photos/broken.jpg"), ("Two_People", "photos/two.jpg")]
    manifest = _write(folder, rows)
    out = tmp_path / "out"
    args = ("watchlist", "import", str(manifest), "--list", "bulk", "--reason", "op bulk")
    first = cli(*args, "--out", str(out))
    assert first.exit_code == 3, first.output  # some photos were unusable
    summary = json.loads((out / "summary.json").read_text())
    errors = list(csv.DictReader((out / "errors.csv").open()))
    reasons = {e["photo"]: e["reason"] for e in errors}
    assert reasons.pop("photos/broken.jpg") == "not a recognised image format"
    assert reasons.pop("photos/two.jpg").startswith("2 usable faces; a photo must show")
    # some LFW photos are unusable too (a face too small, blurred...): listed with why
    assert all("face" in why for why in reasons.values()), reasons
    assert summary["people_added"] == 50 and summary["people_failed"] == 1  # Two_People
    assert summary["photos_enrolled"] + summary["photos_failed"] == 102
    assert summary["photos_failed"] == len(errors) and len(reasons) < 10
    people = json.loads(cli("watchlist", "ls", "--list", "bulk", "--json").output)["people"]
    assert len(people) == 50 and sum(p["images"] for p in people) == summary["photos_enrolled"]
    assert {p["person_id"] for p in people} == {
        person_id_for("bulk", f"REF-{name}") for name, _ in rows[:100]
    }
    audit = _audit(cli)
    assert [a["action"] for a in audit].count("watchlist.add") == 50
    record = [a for a in audit if a["action"] == "watchlist.import"]
    assert len(record) == 1
    assert record[0]["details"]["photos_enrolled"] == summary["photos_enrolled"]

    second = cli(*args, "--out", str(tmp_path / "out2"))
    assert second.exit_code == 3, second.output  # the same photos are still unusable
    again = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert (again["people_added"], again["people_extended"], again["photos_enrolled"]) == (0, 0, 0)
    # only the unusable photos are tried again, and fail again
    assert again["photos_skipped"] == summary["photos_enrolled"]
    assert again["photos_processed"] == again["photos_failed"] == len(errors)
    after = json.loads(cli("watchlist", "ls", "--list", "bulk", "--json").output)["people"]
    assert after == people
    assert [a["action"] for a in _audit(cli)].count("watchlist.add") == 50


def _audit(cli) -> list[dict]:
    out = cli("audit", "ls", "--json")
    assert out.exit_code == 0, out.output
    return [json.loads(line) for line in out.output.splitlines() if line.startswith("{")]


@pytest.mark.timeout(120)
def test_active_people_counts_as_the_status_of_each_person_says(home):
    """The size check counts in SQLite (an import asks once per person); it must count
    exactly the people ``people()`` calls active, on any day."""
    from datetime import timedelta

    h, lists = home
    day = today()
    for i, expires in enumerate([None, day, day + timedelta(days=2), None]):
        face = ProbeFace(f"{i}.jpg", f"{i:064x}", _unit(128), np.zeros((8, 8, 3), np.uint8), 1.0)
        lists.add(f"P{i}", [face], "officer", "wl", expires_on=expires)
    p3 = next(p for p in lists.people("wl") if p["name"] == "P3")  # not by position: ties
    lists.remove(p3["person_id"], "officer", "gone")
    for at in (day, day + timedelta(days=1), day + timedelta(days=3)):
        want = sum(lists._status(p, at) == "active" for p in lists.people("wl", True))
        assert lists.active_people("wl", at) == want
    assert [lists.active_people("wl", day + timedelta(days=d)) for d in (0, 1, 3)] == [3, 2, 1]
