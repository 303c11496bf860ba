"""The disk-full search of issue 16's fault 7, run inside a private mount namespace
(``unshare -m python tests/diskfull.py REPORT HOME_SRC HOME ARCHIVE OUT...``; needs root or
CAP_SYS_ADMIN, like the test cluster's ``unshare -n``).

Here a small tmpfs is mounted over HOME (only this namespace sees it; it goes with the
namespace), the enrolled home is copied in, and `facewatch search` runs on it. Once the
search has recorded its first file complete, the rest of the tmpfs is filled, so the
search's next writes to the home (matches, thumbnails, catalog, audit log) fail with
ENOSPC. Then the filler is removed and the checks run where only this namespace can see:
`facewatch audit verify`, the catalog's ``PRAGMA integrity_check``, what the failed run
recorded as complete, and a rerun with the same arguments. Everything goes to REPORT (JSON,
outside the tmpfs) for the test (tests/jobs/test_disk_full.py) to judge.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import searchruns as runs

TMPFS_SIZE = "64m"


def fill(folder: Path) -> int:
    """Write zeros to ``folder/filler`` until the filesystem is full; returns bytes written."""
    written, block = 0, b"\0" * 65536
    with open(folder / "filler", "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(block)
            except OSError:
                return written


def catalog_facts(home: Path) -> dict:
    db = sqlite3.connect(f"file:{home / 'catalog.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        return {
            "integrity": db.execute("PRAGMA integrity_check").fetchone()[0],
            "completed": [r[0] for r in db.execute("SELECT path FROM search_files")],
        }
    finally:
        db.close()


def full_run(home: Path, args: list[str]) -> dict:
    with runs.killed_on_exit(runs.start(home, args)) as proc:
        runs.when_a_file_is_done(home, proc)
        filled = fill(home)
        _, err = proc.communicate(timeout=400)
    return {"rc": proc.returncode, "stderr": err[-4000:], "filled": filled}


def main(report: Path, src: Path, home: Path, args: list[str]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=700", "tmpfs",
                    str(home)], check=True)  # fmt: skip
    shutil.copytree(src, home, dirs_exist_ok=True)
    out: dict = {"full": full_run(home, args)}
    (home / "filler").unlink()
    out["after_full"] = catalog_facts(home)
    verify = runs.run(home, "audit", "verify")
    out["verify"] = {"rc": verify.returncode, "stdout": verify.stdout[-2000:]}
    rerun = runs.run(home, *args)
    out["rerun"] = {"rc": rerun.returncode, "stderr": rerun.stderr[-3000:]}
    out["after_rerun"] = catalog_facts(home)
    verify = runs.run(home, "audit", "verify")
    out["verify_after_rerun"] = {"rc": verify.returncode, "stdout": verify.stdout[-2000:]}
    report.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
