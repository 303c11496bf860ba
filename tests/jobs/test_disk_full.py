"""Fault 7 of issue 16, for an archive search: the home's disk fills while `facewatch
search` runs. The search must stop with a clear error, leave the catalog and the audit log
sound (`facewatch audit verify` passes), report nothing as stored that is not (each file
recorded complete has its matches in the output of the rerun, which resumes it), and a
rerun with room again must complete every file.

The home is a 64 MiB tmpfs in a private mount namespace (tests/diskfull.py, run under
``unshare -m``: root or CAP_SYS_ADMIN, as CI has). Real CLI processes, local Ray, MTCNN,
dlib-resnet and milvus-lite. Marked ``faults`` (make test-faults): two searches, each
starting its own Ray, cost minutes on 2 cores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import searchruns as runs

N_FILES = 3
CASE = ["--case", "FAULT-7", "--reason", "fault test: disk full during a search"]

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.faults]


@pytest.mark.timeout(900)
def test_a_full_disk_during_a_search_is_a_clear_error_and_loses_nothing(data, tmp_path):
    if shutil.which("unshare") is None:
        pytest.fail("fault 7 needs `unshare` (util-linux) for its private tmpfs home")
    archive = runs.copies_of_the_clip(data, tmp_path / "archive", N_FILES)
    src = tmp_path / "home-src"
    enrol = runs.run(
        src, "watchlist", "add", "Lin-Manuel Miranda", str(data / "known/lin-manuel-miranda.png")
    )
    assert enrol.returncode == 0, enrol.stderr
    out, report = tmp_path / "out", tmp_path / "report.json"
    # 8 fps: about 74 frames a file (51 MB decoded), longer than the stream's 16 MiB
    # blocks, so files finish seconds apart. At the default 2 fps (19 frames, 13 MB) a
    # block could end two files at once, and the last two files were once recorded
    # complete before the disk was filled (rc 0)
    args = ["search", str(archive), "--list", "default", *CASE, "--out", str(out), "--json"]
    args += ["--fps", "8"]
    child = [sys.executable, str(runs.ROOT / "tests/diskfull.py"), str(report), str(src)]
    child += [str(tmp_path / "home"), *args]
    proc = subprocess.run(
        ["unshare", "-m", *child], cwd=runs.ROOT, env=runs.env(), capture_output=True,
        text=True, timeout=850,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(report.read_text())
    full = r["full"]
    assert full["rc"] != 0, full  # the full disk stopped it
    assert "space" in full["stderr"].lower() or "full" in full["stderr"].lower(), full["stderr"]
    assert "Traceback" not in full["stderr"], full["stderr"]  # a clear error, not a crash
    assert r["after_full"]["integrity"] == "ok"
    assert r["verify"]["rc"] == 0, r["verify"]
    done_before = set(r["after_full"]["completed"])
    assert 1 <= len(done_before) < N_FILES, r["after_full"]
    not_stored = full["stderr"].split("NOT stored:")[-1]
    for video in archive.iterdir():  # each file not recorded complete is named as not stored
        assert (str(video) in done_before) != (video.name in not_stored), (video, full["stderr"])
    assert r["rerun"]["rc"] == 0, r["rerun"]
    assert r["after_rerun"]["integrity"] == "ok" and r["verify_after_rerun"]["rc"] == 0, r
    assert done_before <= set(r["after_rerun"]["completed"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files_resumed"] == len(done_before), summary
    ids, sightings = runs.outputs(out)
    assert ids and len(ids) == len(set(ids))
    assert len({s[2] for s in sightings}) == N_FILES, sightings  # Lin-Manuel in every file
