"""``make demo``: the main job on embedded defaults (local Ray, milvus-lite), offline.

It runs the same commands a user would type, and prints each one first:
1. enrol Lin-Manuel Miranda and Alex Lacamoire into a fresh store;
2. search the Hamilton clip (Lin-Manuel is in it; Alex is not);
3. print the sightings and the path of report.html.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CASE = "DEMO-0001"


def run(args: list[str], env: dict[str, str]) -> None:
    print("\n$ facewatch " + " ".join(shlex.quote(a) for a in args), flush=True)
    done = subprocess.run([sys.executable, "-m", "jobs.cli", *args], env=env, check=False)
    if done.returncode not in (0,):
        raise SystemExit(f"demo step failed with exit code {done.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, required=True, help="a fresh data home for the demo")
    parser.add_argument("--out", type=Path, required=True, help="where the report goes")
    args = parser.parse_args()
    for f in ("short_hamilton_clip.mp4", "lin-manuel-miranda.png", "alex-lacamoire.png"):
        if not (EXAMPLES / f).is_file():
            raise SystemExit(f"missing demo file {EXAMPLES / f}")
    for d in (args.home, args.out):
        if d.exists():
            shutil.rmtree(d)
    env = dict(os.environ, FACEWATCH_HOME=str(args.home.resolve()), FACEWATCH_USER="demo")
    env.setdefault("RAY_NODE_IP_ADDRESS", "127.0.0.1")
    enrol = [
        "watchlist",
        "add",
        "--list",
        "demo",
        "--category",
        "other",
        "--reason",
        "facewatch demo (public figures, public photos)",
    ]
    run([*enrol, "Lin-Manuel Miranda", str(EXAMPLES / "lin-manuel-miranda.png")], env)
    run([*enrol, "Alex Lacamoire", str(EXAMPLES / "alex-lacamoire.png")], env)
    run(["watchlist", "ls", "--list", "demo"], env)
    run(
        [
            "search",
            str(EXAMPLES / "short_hamilton_clip.mp4"),
            "--list",
            "demo",
            "--case",
            CASE,
            "--reason",
            "demo: find watch-listed people in the sample clip",
            "--out",
            str(args.out),
        ],
        env,
    )
    print(f"\nOpen the report: {(args.out / 'report.html').resolve()}")


if __name__ == "__main__":
    main()
