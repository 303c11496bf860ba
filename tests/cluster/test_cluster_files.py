"""A search on the cluster checks at plan time, from a task on each decoding node, that the
node reads every archive file as the driver does. Here the driver runs in a private mount
namespace with a tmpfs only it sees (as a file on the investigator's local disk would be),
so the worker nodes cannot read the file: it becomes one clear error row, not a crash on a
worker. The store is milvus-lite with every writer pinned to the home node, the one case
where a cluster may use it (placement.lite_writers_on_home)."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from jobs.cluster import ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.integration]


def _enrol(home, data) -> None:
    photo = data / "known" / "lin-manuel-miranda.png"
    cmd = [sys.executable, "-m", "jobs.cli", "--home", str(home), "watchlist", "add"]
    cmd += ["Lin-Manuel Miranda", str(photo), "--list", "watch"]
    env = {**os.environ, "FACEWATCH_USER": "officer-7"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.timeout(600)
def test_a_file_only_the_driver_sees_is_one_error_row(ray_cluster, data, tmp_path):
    home, out, hidden = tmp_path / "home", tmp_path / "out", tmp_path / "local-disk"
    hidden.mkdir()
    _enrol(home, data)
    clip = data / "video" / "short_hamilton_clip.mp4"
    search = f"{sys.executable} -m jobs.cli --home {home} search {hidden}/clip.mp4 --list watch"
    search += f" --case C-9 --reason 'cluster files' --out {out}"
    script = f"mount -t tmpfs tmpfs {hidden} && cp {clip} {hidden}/clip.mp4 && exec {search}"
    env = {"FACEWATCH_USER": "officer-7", "FACEWATCH__PLACEMENT__LITE_WRITERS_ON_HOME": "true"}
    done = ray_cluster.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode in (1, 3), done.stderr[-3000:]
    assert not (hidden / "clip.mp4").exists()  # the tmpfs was the driver's alone
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    assert len(errors) == 1, errors
    assert errors[0]["path"] == f"{hidden}/clip.mp4"
    assert "not readable from decoding node" in errors[0]["reason"]
    assert "only the driver sees it" in errors[0]["reason"]
