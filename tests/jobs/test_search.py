"""``facewatch search`` end to end, as a user runs it: real Ray, real MTCNN and dlib-resnet,
real video, a real milvus-lite store in tmp_path.

Starting Ray and the FacePool costs 10-15 s, so the module starts them once and every
search reuses the running pool (the CLI finds it, as it finds a running `facewatch serve`).
Most searches run the CLI in-process through typer's CliRunner; the first one runs as a
separate process (``python -m jobs.cli``) so that stdout can be checked byte for byte and
the store can be reopened after that process has exited.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner
from videofiles import remux

from jobs.cli.app import app
from pipelines import groundtruth
from pipelines.config import Settings
from pipelines.engine import FaceEngine
from pipelines.home import Home
from pipelines.store import MATCHES, WATCHLIST
from pipelines.watchlist import Watchlists

ROOT = Path(__file__).resolve().parents[2]
CLIP = "video/short_hamilton_clip.mp4"
LIN, ALEX = "Lin-Manuel Miranda", "Alex Lacamoire"
PURPOSE = ["--case", "T-1", "--reason", "integration test"]

pytestmark = [pytest.mark.slow, pytest.mark.integration]


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def cli(home):
    """Run ``facewatch --home HOME ...`` in this process; returns the click Result."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, ["--home", str(home), *args], input=input, catch_exceptions=False)

    return invoke


def _facewatch(home: Path, *args: str) -> subprocess.CompletedProcess:
    """``facewatch --home HOME ...`` as its own process, as a user runs it."""
    env = dict(os.environ, FACEWATCH_USER="tester")
    cmd = [sys.executable, "-m", "jobs.cli", "--home", str(home), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def first_run(home, data, ray_address, tmp_path_factory):
    """Lin-Manuel and Alex enrolled on the default list, then the Hamilton clip searched with
    --json, each by a separate ``facewatch`` process. milvus-lite admits one process at a
    time, so this runs before the test process itself opens the store."""
    ids = {}
    for name, photo in ((LIN, "lin-manuel-miranda.png"), (ALEX, "alex-lacamoire.png")):
        proc = _facewatch(home, "watchlist", "add", name, str(data / "known" / photo))
        assert proc.returncode == 0, proc.stderr
        ids[name] = proc.stdout.strip().splitlines()[-1]
    out = tmp_path_factory.mktemp("hamilton")
    args = ["search", str(data / CLIP), "--list", "default", "--out", str(out), "--json"]
    proc = _facewatch(home, *args, "--ray-address", ray_address, *PURPOSE)
    return proc, out, ids


@pytest.fixture(scope="module")
def enrolled(first_run) -> dict[str, str]:
    return first_run[2]


def _sightings(out: Path) -> list[dict]:
    return pq.read_table(out / "sightings.parquet").to_pylist()


def _stored_matches(settings: Settings) -> list[dict]:
    with Home.open(settings, FaceEngine(settings).info) as h:
        return h.vectors().query(MATCHES, fields=["id", "person_id", "source_id", "frame_index"])


# -- usage errors (no Ray needed) ----------------------------------------------------------
def test_search_without_a_case_is_refused(cli, data, enrolled, tmp_path):
    res = cli("search", str(data / CLIP), "--list", "default", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2
    assert "--case" in res.stderr and "--reason" in res.stderr
    assert not (tmp_path / "o").exists()


def test_bad_enrolment_images_enrol_nobody_and_each_is_named(cli, data, enrolled, tmp_path):
    blank = tmp_path / "landscape.png"  # a picture with no face in it
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(90, 160, (240, 320, 3), dtype=np.uint8)).save(blank)
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is not a picture\n")
    two = data / "known" / "two_people.jpg"
    good = data / "known" / "obama.jpg"
    res = cli("watchlist", "add", "Mixed Bag", str(good), str(blank), str(two), str(not_image))
    assert res.exit_code == 2
    err = res.stderr
    assert "no one was enrolled" in err
    for bad in (blank, two, not_image):
        assert bad.name in err
    assert good.name not in err.split("unusable", 1)[1]
    assert "no face" in err and "exactly one" in err
    listed = cli("watchlist", "ls", "--json", "--removed")
    assert listed.exit_code == 0
    assert "Mixed Bag" not in {p["name"] for p in json.loads(listed.stdout)["people"]}


# -- the known person in real video --------------------------------------------------------
def test_known_person_is_found_and_the_absent_one_is_not(first_run):
    proc, out, _ = first_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines, "no sightings printed"
    rows = [json.loads(line) for line in lines]  # --json: nothing but JSON lines on stdout
    names = [r["person_name"] for r in rows]
    assert LIN in names and ALEX not in names
    lin = [r for r in rows if r["person_name"] == LIN]
    # Lin-Manuel is on screen at 3.0-7.0 s (checked with the dlib reference pipeline).
    assert any(r["start_s"] <= 6.5 and r["end_s"] >= 3.5 for r in lin)
    # his best face in the clip scores 0.978 against his photo embedded with photo TTA
    # (measured 0.978; 0.9731 against the photo embedded once); a sighting of the wrong face
    # or track would not
    assert max(r["best_score"] for r in lin) == pytest.approx(0.978, abs=0.002), lin
    assert rows == _sightings(out)
    for name in ("sightings.parquet", "matches.parquet", "errors.parquet", "report.html"):
        assert (out / name).is_file(), name
    assert pq.read_table(out / "errors.parquet").num_rows == 0
    assert all((out / r["thumbnail"]).is_file() for r in rows)
    assert LIN in (out / "report.html").read_text()


def test_search_outputs_and_the_home_are_private(first_run, home):
    """Face thumbnails, Parquet files and the report of a search, and everything in the
    home, are 0600 / 0700: no other user of the machine can read them."""
    _, out, _ = first_run
    assert (out / "thumbs").is_dir() and any((out / "thumbs").iterdir())
    for root in (out, home):
        paths = [root, *root.rglob("*")]
        shared = [f"{p} {p.stat().st_mode & 0o777:04o}" for p in paths if p.stat().st_mode & 0o077]
        assert shared == []


def test_the_store_reopened_after_the_process_exits_holds_everything(first_run, home, enrolled):
    proc, out, _ = first_run
    assert proc.returncode == 0
    written = pq.read_table(out / "matches.parquet").to_pylist()
    assert written and {m["person_id"] for m in written} == {enrolled[LIN]}
    settings = Settings(home=home)
    stored = {m["id"]: m for m in _stored_matches(settings)}
    assert {m["match_id"] for m in written} <= set(stored)
    info = FaceEngine(settings).info
    with Home.open(settings, info) as h:
        people = Watchlists(h, info, 0.93)
        names = {p["name"] for p in people.people("default")}
        faces = h.vectors().count(WATCHLIST)
        searches = [r for r in h.audit.records(action="search") if r["actor"] == "tester"]
        assert h.audit.verify().ok
    assert names == {LIN, ALEX}
    assert faces >= 2  # both enrolment embeddings are still there
    assert searches and searches[0]["details"]["case"] == "T-1"


def test_a_rerun_adds_no_duplicate_matches(first_run, cli, data, home, tmp_path):
    _, first_out, _ = first_run
    settings = Settings(home=home)
    before = _stored_matches(settings)
    res = cli("search", str(data / CLIP), "--list", "default", "--out", str(tmp_path), *PURPOSE)
    assert res.exit_code == 0, res.output
    after = _stored_matches(settings)
    assert len(after) == len(before) and {m["id"] for m in after} == {m["id"] for m in before}
    again = pq.read_table(tmp_path / "matches.parquet").column("match_id").to_pylist()
    first = pq.read_table(first_out / "matches.parquet").column("match_id").to_pylist()
    assert sorted(again) == sorted(first)


def test_another_case_gets_its_own_matches(first_run, cli, data, home, tmp_path):
    """The same search under another case reference adds that case's rows and leaves the
    first case's record as it was (its case reference, its retention clock)."""
    settings = Settings(home=home)
    with Home.open(settings, FaceEngine(settings).info) as h:
        before = h.vectors().query(MATCHES, fields=["id", "case_ref", "created_at"])
    other = ["--case", "T-9", "--reason", "a second investigation"]
    res = cli("search", str(data / CLIP), "--list", "default", "--out", str(tmp_path), *other)
    assert res.exit_code == 0, res.output
    with Home.open(settings, FaceEngine(settings).info) as h:
        after = h.vectors().query(MATCHES, fields=["id", "case_ref", "created_at"])
    assert len(after) == 2 * len(before) > 0
    assert {r["case_ref"] for r in after} == {"T-1", "T-9"}
    kept = {r["id"]: r for r in after}
    assert all(kept[r["id"]] == r for r in before)  # untouched, created_at included


# -- a probe photo instead of a watch list --------------------------------------------------
def test_a_probe_photo_search_finds_that_person(cli, data, enrolled, ray_address, tmp_path):
    photo = data / "known" / "lin-manuel-miranda.png"
    args = ["search", str(data / CLIP), "--probe", str(photo), "--out", str(tmp_path)]
    res = cli(*args, "--json", *PURPOSE)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert rows and {r["list_name"] for r in rows} == {"probe"}
    assert any(r["start_s"] <= 6.5 and r["end_s"] >= 3.5 for r in rows)
    listed = json.loads(cli("watchlist", "ls", "--json").stdout)["people"]
    assert {p["name"] for p in listed} == {LIN, ALEX}  # the probe enrolled no one


# -- bad files mixed into a folder ---------------------------------------------------------
def test_bad_files_are_recorded_and_the_rest_completes(cli, data, enrolled, ray_address, tmp_path):
    folder = tmp_path / "archive"
    (folder / "day2").mkdir(parents=True)
    full = tmp_path / "full.mp4"
    remux(data / CLIP, full, faststart=True)
    (folder / "cut.mp4").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("minutes of the meeting, not a video\n")
    (folder / "day2" / "photo.mkv").write_bytes((data / "known" / "obama.jpg").read_bytes())
    (folder / "day2" / "readme.txt").write_text("not searched: not a video extension\n")
    # a name from an old Latin-1 file system: no decoder, Parquet or Milvus can carry it
    latin1 = os.fsdecode(bytes(folder / "day2") + b"/caf\xe9.mp4")
    Path(latin1).write_bytes((data / CLIP).read_bytes())
    good = groundtruth.render(
        folder / "day2" / "good.mp4", [], duration_s=2.0, size=(320, 240), fps=10
    )
    (folder / "day2" / "loop.mp4").symlink_to(folder / "day2" / "loop.mp4")  # a link loop
    (folder / "day2" / "back").symlink_to(folder)  # a folder loop: not followed
    out = tmp_path / "out"
    res = cli("search", str(folder), "--list", "default", "--out", str(out), *PURPOSE)
    assert res.exit_code == 3, res.output
    errors = {Path(r["path"]).name: r for r in pq.read_table(out / "errors.parquet").to_pylist()}
    assert set(errors) == {
        "cut.mp4", "zero.mp4", "notes.mp4", "photo.mkv", "caf\ufffd.mp4", "loop.mp4",
    }  # fmt: skip
    assert errors["loop.mp4"]["reason"] == "a symbolic link loop"
    assert errors["caf\ufffd.mp4"]["reason"].startswith("the file name is not valid UTF-8")
    assert errors["zero.mp4"]["reason"] == "empty file"
    assert errors["notes.mp4"]["reason"].startswith("not a readable video")
    assert errors["photo.mkv"]["reason"].startswith("not a video: a jpeg_pipe still image")
    assert "truncated" in errors["cut.mp4"]["reason"] and errors["cut.mp4"]["frames_lost"] > 0
    summary = "".join(res.stderr.split())  # rich wraps long lines at the terminal width
    for name in errors:
        assert f"{name}:" in summary  # the summary names every failed file
    assert "caf\ufffd.mp4" in (out / "report.html").read_text(encoding="utf-8")
    # The readable part of the cut file was searched: Lin-Manuel is in its first half (at
    # the shipped defaults his faces there reach the review tier or better).
    names = {(Path(s["source_path"]).name, s["person_name"]) for s in _sightings(out)}
    assert ("cut.mp4", LIN) in names
    assert good.is_file()


# -- ground truth: known people at known times among distractors ----------------------------
FIXTURE = ROOT / "tests" / "fixtures" / "archive_gt"  # benchmarks/make_groundtruth.py


@pytest.fixture(scope="module")
def fixture_list(cli, data) -> dict:
    """The fixture's three wanted CelebA people, two photos each, on list ``fixture``."""
    truth = json.loads((FIXTURE / "truth.json").read_text(encoding="utf-8"))
    for person, photos in truth["enrol"].items():
        res = cli("watchlist", "add", person, *(str(data / p) for p in photos), "--list", "fixture")
        assert res.exit_code == 0, res.output
    return truth


@pytest.fixture(scope="module")
def fixture_evaluated(cli, fixture_list, ray_address, tmp_path_factory):
    """``facewatch evaluate archive`` on the fixture video at the shipped defaults."""
    out = tmp_path_factory.mktemp("fixture-eval")
    res = cli(
        "evaluate", "archive", str(FIXTURE / "video.mp4"), "--truth", str(FIXTURE / "truth.json"),
        "--list", "fixture", "--out", str(out), "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1]), out


@pytest.mark.timeout(400)
def test_ground_truth_fixture_at_the_shipped_defaults(fixture_evaluated):
    """Both tiers at the defaults a user gets (no threshold given). Measured on this fixture
    (FIXTURE_MEASURED): 5 of 7 wanted appearances as sightings, 6 with candidates, no false
    sighting, no false candidate among the 7 non-listed appearances."""
    m, out = fixture_evaluated
    print("fixture:", {k: v for k, v in m.items() if k != "missed"})
    assert m["thresholds"] == [0.95, 0.95] and m["review_thresholds"] == [0.935, 0.935]
    assert (m["wanted_appearances"], m["distractor_appearances"]) == (7, 7)
    assert m["recall_sightings"]["k"] >= FIXTURE_MEASURED["sightings"]
    assert m["recall_with_candidates"]["k"] >= FIXTURE_MEASURED["with_candidates"]
    assert m["recall_with_candidates"]["k"] > m["recall_sightings"]["k"]  # the review tier adds
    assert m["false_sightings"] == 0
    assert m["false_candidates"] <= FIXTURE_MEASURED["false_candidates"]
    rows = _sightings(out)
    assert {r["tier"] for r in rows} == {"sighting", "candidate"}
    for r in rows:  # each row carries both thresholds, and its tier follows from them
        assert (r["threshold"], r["review_threshold"]) == (0.95, 0.935)
    report = (out / "report.html").read_text(encoding="utf-8")
    assert report.index(">sighting<") < report.index(">candidate<")  # sightings come first


# What the fixture gave at the shipped defaults when it was made (evaluate archive, above);
# the bars are these measured values: a change that finds fewer fails.
FIXTURE_MEASURED = {"sightings": 5, "with_candidates": 6, "false_candidates": 0}


def test_a_review_decision_changes_the_reported_precision(cli, fixture_evaluated, home):
    m, out = fixture_evaluated
    rows = _sightings(out)
    candidate = next(r for r in rows if r["tier"] == "candidate")
    res = cli("sightings", "decide", str(out), candidate["sighting_id"], "--decision", "rejected",
              "--note", "not her: different ears")  # fmt: skip
    assert res.exit_code == 0, res.output
    review = json.loads((out / "summary.json").read_text())["review"]
    assert review["candidate"]["rejected"] == 1 and review["candidate"]["precision"] == 0.0
    # the terminal review: confirm the first sighting, skip the rest
    n_sightings = sum(r["tier"] == "sighting" for r in rows)
    res = cli(
        "sightings", "review", str(out), "--tier", "sighting", input="y\nseen on camera 4\nq\n"
    )
    assert res.exit_code == 0, res.output
    review = json.loads((out / "summary.json").read_text())["review"]
    assert review["sighting"] == {
        "total": n_sightings, "confirmed": 1, "rejected": 0, "unsure": 0,
        "undecided": n_sightings - 1, "precision": 1.0,
        "precision_ci95": review["sighting"]["precision_ci95"],
    }  # fmt: skip
    assert review["sighting"]["precision_ci95"][0] == pytest.approx(0.2065, abs=1e-3)  # Wilson, 1/1
    assert "precision from decisions" in (out / "report.html").read_text(encoding="utf-8")
    with Home.open(Settings(home=home), None) as h:
        acts = list(h.audit.records(action="sighting.review"))
    assert [(a["details"]["decision"], a["details"]["tier"]) for a in acts][-2:] == [
        ("rejected", "candidate"),
        ("confirmed", "sighting"),
    ]


@pytest.mark.timeout(400)
def test_a_lower_threshold_override_finds_at_least_as_much_and_is_audited(
    cli, fixture_list, ray_address, tmp_path, home
):
    """A deliberate override, named as one: lowering the alert tier turns candidates into
    sightings and loses nothing found at the defaults."""
    out = tmp_path / "override"
    res = cli(
        "evaluate", "archive", str(FIXTURE / "video.mp4"), "--truth", str(FIXTURE / "truth.json"),
        "--list", "fixture", "--out", str(out), "--json", "--threshold", "0.935",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout.strip().splitlines()[-1])
    assert m["thresholds"] == [0.935, 0.935]
    assert m["recall_sightings"]["k"] >= FIXTURE_MEASURED["with_candidates"]


# -- the pool starts alongside the job -----------------------------------------------------
def test_a_pool_that_cannot_start_is_reported_with_its_reason(ray_address):
    """``face_pool`` returns before the replicas have loaded, so a job's stages wait with
    ``wait_for_pool``; when the replicas fail, that wait raises with their own error rather
    than hanging or failing somewhere in Ray Data."""
    from ray import serve as ray_serve
    from ray.serve.api import _run

    from jobs.archive import runtime

    @ray_serve.deployment(name="Broken", ray_actor_options={"num_cpus": 0})
    class Broken:
        def __init__(self):
            raise RuntimeError("weights file unreadable (test)")

    _run(Broken.bind(), _blocking=False, name="fw-test-broken", route_prefix=None)
    try:
        with pytest.raises(runtime.PoolStartError) as err:
            runtime.wait_for_pool("fw-test-broken", timeout_s=120)
        # the replicas' own error in one line; Serve's report, traceback and all, beside it
        msg = "the face pool failed to start: RuntimeError: weights file unreadable (test)"
        assert str(err.value) == msg
        assert "Traceback" in err.value.details and "unreadable (test)" in err.value.details
        runtime.check_pool_failed(runtime.SERVE_APP)  # absent: nothing to report
    finally:
        ray_serve.delete("fw-test-broken")


def test_waiting_for_a_pool_that_never_comes_times_out(ray_address):
    from jobs.archive import runtime

    with pytest.raises(runtime.PoolStartError, match="did not start within 0s .absent."):
        runtime.wait_for_pool("fw-test-no-such-app", timeout_s=0.0)


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="needs a machine without a CUDA device"
)
def test_a_cuda_pool_on_a_machine_without_one_fails_clearly(data, tmp_path):
    """The pool is configured for a CUDA device and no node of the search's Ray offers a
    GPU: the search says so before it deploys the pool (exit 2, a configuration error),
    instead of a traceback, a job that waits for replicas that never come, or a minute of
    replicas failing to start one after another."""
    env = dict(os.environ, FACEWATCH_USER="tester", FACEWATCH__POOL__DEVICE="cuda")
    args = ["search", str(data / CLIP), "--list", "default", "--out", str(tmp_path), *PURPOSE]
    cmd = [sys.executable, "-m", "jobs.cli", "--home", str(tmp_path / "home"), *args]
    # its own home: the module's store stays with the processes that use it
    enrol = [sys.executable, "-m", "jobs.cli", "--home", str(tmp_path / "home"), "watchlist"]
    photo = str(data / "known" / "lin-manuel-miranda.png")
    add = subprocess.run([*enrol, "add", LIN, photo], cwd=ROOT, env=env, capture_output=True)
    assert add.returncode == 0, add.stderr
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: device 'cuda' was asked for the FacePool" in proc.stderr
    assert "no node of the cluster offers a GPU" in proc.stderr
    # and that is all: no page of Ray Data traceback in front of it (-v shows Serve's report)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_a_file_whose_decoder_hangs_is_skipped(data, ray_address, monkeypatch, tmp_path):
    """Opening a file runs in a Ray task; one that never returns (a named fake stuck
    decoder, with a 2 s limit instead of 30 min) is recorded and the other files go on."""
    import time

    import ray

    from jobs.archive import runtime
    from jobs.archive import search as search_mod
    from pipelines.match import Gallery
    from pipelines.schemas import EmbedderInfo

    stuck = str(tmp_path / "stuck.mp4")
    (tmp_path / "stuck.mp4").write_bytes((data / CLIP).read_bytes())

    def fake_stuck_probe(path: str):
        if path == stuck:
            time.sleep(60)
        return runtime.probe_video(path)

    fake_task = ray.remote(num_cpus=0.25)(fake_stuck_probe)
    monkeypatch.setattr(runtime, "probe_remote", lambda *_: fake_task)
    monkeypatch.setattr(search_mod, "PROBE_TIMEOUT_S", 2.0)
    info = EmbedderInfo("fake-space", "1", 4)
    empty = Gallery(np.zeros((0, 4), np.float32), [], [], [], [], [], info, np.zeros(0))
    job = search_mod.ArchiveSearch(Settings(), empty, tmp_path / "out")
    segments, pending, errors = job.plan([tmp_path / "stuck.mp4", data / CLIP])
    assert [(Path(e.path).name, e.stage) for e in errors] == [("stuck.mp4", "open")]
    assert "took over 2 s" in errors[0].reason
    assert len(pending) == 1 and segments  # the Hamilton clip is planned as usual
