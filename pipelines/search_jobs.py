"""Searches started from the browser: ``facewatch search`` as a detached process per search.

A search takes minutes to hours; a web request must not. So the workspace starts the same
``facewatch search --case REF`` that an investigator would type, as its own process in its
own session (it outlives the request, and a restart of the server), with
``--progress-file`` for the page to poll, and records it in ``case_searches``. Reusing the
CLI means one search path: the same purpose checks, audit records, outputs and store.

When this server holds the milvus-lite store (``facewatch serve``: LiveHub owns it, and
milvus-lite admits one process), the search cannot open it: it runs with ``--handoff`` and
leaves each finished file's matches in ``HOME/handoff/SEARCH_ID/``, which this server
stores (``ingest``: on every status poll, and in the hub's upkeep), keeping one writer per
milvus-lite file. A search is ``done`` only once everything it handed over is stored.

What the browser may name is confined: archive paths are ``ROOT/relative`` under the
configured ``workspace.archive_roots`` (resolved, so neither ``..`` nor a symlink leaves
them), and probe photos are files this module stored after checking them as images first
and then for one usable face (the server's face pool runs the search's quality gates).
A cancel interrupts the process (SIGINT, so it shuts its Ray down; then SIGKILL to its
group); what it stored before stays stored, and the search's state says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.cases import WORK, Actor, CaseBook, CaseError
from pipelines.catalog import new_id, utcnow
from pipelines.config import Settings
from pipelines.handoff import GALLERY, export_gallery, handoff_root, ingest, pending
from pipelines.home import Home
from pipelines.images import ImageError, check_image_header, decode_image
from pipelines.video import DEFAULT_EXTENSIONS

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]  # the checkout: ``python -m jobs.cli`` runs here
PROBE_ID = r"^pr_[0-9a-f]{16}$"
LIST_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
CANCEL_GRACE_S = 20.0
GROUP_EXIT_S = 10.0  # after SIGKILL, how long a cancel waits for the group's processes to exit


class SearchJobs:
    def __init__(self, home: Home, settings: Settings, book: CaseBook):
        self.home, self.settings, self.book = home, settings, book
        self.roots = [Path(r).expanduser().resolve() for r in settings.workspace.archive_roots]
        self._procs: dict[str, subprocess.Popen[bytes]] = {}  # started by this process: reaped here

    # -- the archive, confined to its roots ------------------------------------------------
    def resolve(self, name: str) -> Path:
        """``"N/relative/path"`` -> the path under root N; nothing outside the roots."""
        head, _, rest = str(name).partition("/")
        if not head.isdigit() or int(head) >= len(self.roots):
            raise CaseError(
                f"{name!r}: an archive path is ROOT/path, ROOT one of 0.."
                f"{len(self.roots) - 1} (workspace.archive_roots)"
            )
        root = self.roots[int(head)]
        path = (root / rest).resolve()
        if not path.is_relative_to(root) or not path.exists():
            raise CaseError(f"{name!r}: no such file or folder under archive root {head}", 404)
        return path

    def browse(self, who: Actor, name: str) -> dict[str, Any]:
        """The folders and videos in one archive folder ("" lists the roots)."""
        if who.role not in ("investigator", "auditor"):
            raise CaseError("only investigators and auditors browse the archive", 403)
        self.home.audit.append(who.name, "archive.browse", path=str(name)[:1000])
        if not name:
            return {
                "path": "",
                "entries": [
                    {"name": r.name or str(i), "path": str(i), "kind": "dir"}
                    for i, r in enumerate(self.roots)
                ],
                "indexed": self.indexed(),
            }
        folder = self.resolve(name)
        if not folder.is_dir():
            raise CaseError(f"{name!r} is not a folder", 422)
        entries = []
        for child in sorted(folder.iterdir())[:2000]:
            kind = "dir" if child.is_dir() else "video"
            if kind == "video" and child.suffix.lower() not in DEFAULT_EXTENSIONS:
                continue
            entries.append(
                {"name": child.name, "path": f"{name.rstrip('/')}/{child.name}", "kind": kind}
            )
        return {"path": name, "display": self._display(name), "entries": entries}

    def _display(self, name: str) -> str:
        """``0/sub`` as the investigator reads it: the root's own name, then the rest."""
        first, _, rest = name.partition("/")
        root = self.roots[int(first)]
        return "/".join(filter(None, [root.name or first, rest.strip("/")]))

    def indexed(self) -> dict[str, Any]:
        """Whether the indexed probe search (``search --indexed``) can be offered: the
        archive was indexed (``facewatch index`` stored faces), and the search can open
        the store (not a milvus-lite store this server holds: that admits one process)."""
        faces = sum(
            int(r["details"].get("faces") or 0)
            for r in self.home.audit.records(action="index.done")
        )
        if faces == 0:
            return {"available": False, "why": "the archive is not indexed (facewatch index)"}
        if self._holds_lite():
            return {
                "available": False,
                "why": "the face index is in the milvus-lite store this server holds, which "
                "admits one process: search the video, or move to a Milvus server (store.uri)",
            }
        return {"available": True, "why": f"{faces} faces indexed"}

    def _holds_lite(self) -> bool:
        return self.home.store is not None and not self.settings.store.uri

    # -- probe photos ---------------------------------------------------------------------
    def check_probe(self, who: Actor, ref: str, data: bytes) -> np.ndarray:
        """A probe photo checked as an image (size, header, decoding), before anything else
        looks at it: the decoded image, for the face check."""
        self.book.require(ref, who, WORK)
        ws = self.settings.workspace
        if len(data) > ws.max_probe_bytes:
            raise CaseError(f"the photo is over {ws.max_probe_bytes} bytes", 413)
        try:
            check_image_header(data, "probe photo", ws.max_probe_pixels)
            return decode_image(data, "probe photo", ws.max_probe_pixels)
        except ImageError as exc:
            raise CaseError(str(exc), 422) from None

    def add_probe(
        self, who: Actor, ref: str, data: bytes, problem: str | None = None
    ) -> dict[str, Any]:
        """Store a probe photo for the case, given what the face check found: ``problem``
        is why the photo has no usable face (no face, several, none passing the quality
        gates the search uses), None when it has exactly one. A refused photo is not kept;
        its refusal is audited."""
        image = self.check_probe(who, ref, data)
        digest = hashlib.sha256(data).hexdigest()
        probe_id = "pr_" + digest[:16]
        if problem is not None:
            self.home.audit.append(
                who.name, "case.probe_refused", case=ref, probe=probe_id, reason=problem
            )
            raise CaseError(f"the photo has no usable face: {problem}", 422)
        ext = ".png" if data.startswith(b"\x89PNG") else ".jpg"
        folder = self._case_dir(ref) / "probes"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.home.audit.append(
            who.name, "case.probe_upload", case=ref, probe=probe_id, sha256=digest
        )
        (folder / f"{probe_id}{ext}").write_bytes(data)
        return {
            "probe_id": probe_id,
            "width": image.shape[1],
            "height": image.shape[0],
            "face": "one usable face",
        }

    def _case_dir(self, ref: str) -> Path:
        return self.home.path / "cases" / ref

    def _probe(self, ref: str, probe_id: str) -> Path:
        found = sorted((self._case_dir(ref) / "probes").glob(f"{probe_id}.*"))
        if not found:
            raise CaseError(f"no probe {probe_id} in case {ref}: upload it first", 404)
        return found[0]

    # -- start, follow, cancel ------------------------------------------------------------
    def start(
        self, who: Actor, ref: str, spec: dict[str, Any], ray_address: str | None = None
    ) -> dict[str, Any]:
        """Start ``facewatch search`` for the case, detached; return its row."""
        case = self.book.require(ref, who, WORK)
        if not self.roots:
            raise CaseError("searches from the browser are off: no workspace.archive_roots", 409)
        paths = [self.resolve(p) for p in spec.get("paths", [])]
        probes = [self._probe(ref, p) for p in spec.get("probes", [])]
        if not paths or bool(probes) == bool(spec.get("list_name")):
            raise CaseError("a search needs archive paths and either probe photos or one list")
        if spec.get("indexed"):
            self._check_indexed(probes)
        search_id = new_id("sr")
        out = self._case_dir(ref) / "searches" / search_id
        out.mkdir(parents=True, mode=0o700)
        cmd = [
            sys.executable,
            "-m",
            "jobs.cli",
            "--home",
            str(self.home.path),
            "search",
            *map(str, paths),
            "--case",
            ref,
            "--reason",
            case["reason"],
            "--out",
            str(out),
            "--progress-file",
            str(out / "progress.json"),
        ]
        cmd += [a for p in probes for a in ("--probe", str(p))]
        cmd += ["--list", spec["list_name"]] if spec.get("list_name") else []
        if spec.get("indexed"):
            cmd += ["--indexed"]  # the face index: no video decoded, no Ray
        else:
            cmd += ["--fps", str(float(spec["fps"]))] if spec.get("fps") else []
            cmd += ["--ray-address", ray_address] if ray_address else []
            cmd += self._handoff(search_id, spec)
        self.home.audit.append(
            who.name,
            "case.search_start",
            case=ref,
            search_id=search_id,
            paths=[str(p) for p in paths],
            probes=spec.get("probes", []),
            list=spec.get("list_name"),
            fps=spec.get("fps"),
            indexed=bool(spec.get("indexed")),
        )
        proc = self._spawn(cmd, out, who.name)
        self._procs[search_id] = proc
        self.home.catalog.db.execute(
            "INSERT INTO case_searches(search_id, case_ref, started_by, started_at, pid, out_dir,"
            " spec_json, state) VALUES (?, ?, ?, ?, ?, ?, ?, 'running')",
            (search_id, ref, who.name, utcnow(), proc.pid, str(out), json.dumps(spec)),
        )
        return self.status(who, ref, search_id)

    def _check_indexed(self, probes: list[Path]) -> None:
        offer = self.indexed()
        if not probes or not offer["available"]:
            why = offer["why"] if probes else "it searches for the person in probe photos"
            raise CaseError(f"no indexed search here: {why}", 409)

    def _handoff(self, search_id: str, spec: dict[str, Any]) -> list[str]:
        """This server holds the milvus-lite store, so the search hands its matches over
        (pipelines/handoff.py); a watch-list search gets the list vectors it reads."""
        if not self._holds_lite():
            return []  # no store held here, or a Milvus server: the search writes it itself
        folder = handoff_root(self.home.path) / search_id
        folder.mkdir(parents=True, mode=0o700)
        if spec.get("list_name"):
            export_gallery(self.home.store, folder)
        return ["--handoff", str(folder)]

    def ingest(self) -> int:
        """Store what searches handed over (the server, the store's one writer, calls it)."""
        if self.home.store is None:
            return 0
        return ingest(self.home.store, self.home.catalog, handoff_root(self.home.path))

    @staticmethod
    def _spawn(cmd: list[str], out: Path, actor: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, FACEWATCH_USER=actor)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        fd = os.open(out / "search.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:  # private, as everything in the home
            return subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _row(self, ref: str, search_id: str) -> dict[str, Any]:
        row = self.home.catalog.row(
            "SELECT * FROM case_searches WHERE search_id = ? AND case_ref = ?", search_id, ref
        )
        if row is None:
            raise CaseError(f"no search {search_id} in case {ref}", 404)
        return row

    def status(self, who: Actor, ref: str, search_id: str) -> dict[str, Any]:
        """The search's state and progress (files, video-seconds, faces, ETA)."""
        self.book.require(ref, who)
        row = self._row(ref, search_id)
        if row["state"] == "running":
            row = self._settle(row)
        progress = _progress(Path(row["out_dir"]))
        keep = ("search_id", "started_by", "started_at", "state", "message", "ended_at")
        return {**{k: row[k] for k in keep}, "progress": progress}

    def searches(self, who: Actor, ref: str) -> list[dict[str, Any]]:
        rows = self.home.catalog.rows(
            "SELECT search_id FROM case_searches WHERE case_ref = ? ORDER BY started_at", ref
        )
        return [self.status(who, ref, r["search_id"]) for r in rows]

    def _exit_code(self, row: dict[str, Any]) -> int | None:
        """The process's exit code, or None while it runs (a process another server
        started is followed by its pid; it left its exit in the log only)."""
        proc = self._procs.get(row["search_id"])
        if proc is not None:
            return proc.poll()
        try:
            os.kill(row["pid"], 0)
            return None
        except ProcessLookupError:
            return -1

    def _settle(self, row: dict[str, Any]) -> dict[str, Any]:
        self.ingest()  # what it handed over so far, stored while the page follows it
        code = self._exit_code(row)
        if code is None:
            return row
        if pending(handoff_root(self.home.path) / row["search_id"]):
            return row  # ended, but not all its matches are stored yet: still running
        out = Path(row["out_dir"])
        state = "done" if code in (0, 3) and (out / "sightings.parquet").is_file() else "failed"
        message = "" if state == "done" else _last_error(out / "search.log")
        return self._end(row, state, message)

    def _end(self, row: dict[str, Any], state: str, message: str) -> dict[str, Any]:
        folder = handoff_root(self.home.path) / row["search_id"]
        (folder / GALLERY).unlink(missing_ok=True)
        if folder.is_dir() and not pending(folder):
            with contextlib.suppress(OSError):  # a set-aside .bad file stays, for a person
                folder.rmdir()
        self.home.catalog.db.execute(
            "UPDATE case_searches SET state = ?, message = ?, ended_at = ? "
            "WHERE search_id = ? AND state = 'running'",
            (state, message, utcnow(), row["search_id"]),
        )
        self._procs.pop(row["search_id"], None)
        return self._row(row["case_ref"], row["search_id"])

    def cancel(self, who: Actor, ref: str, search_id: str) -> dict[str, Any]:
        """Interrupt the search; it keeps what it stored, and its state says so."""
        self.book.require(ref, who, WORK)
        row = self._row(ref, search_id)
        if row["state"] != "running" or self._exit_code(row) is not None:
            raise CaseError(f"search {search_id} is not running ({row['state']})", 409)
        self.home.audit.append(who.name, "case.search_cancel", case=ref, search_id=search_id)
        stop_group(row["pid"], self._procs.get(search_id))
        self.ingest()  # what it handed over before it stopped
        progress = _progress(Path(row["out_dir"]))
        message = (
            f"cancelled by {who.name} after {progress.get('files_done', 0)} of "
            f"{progress.get('files_total') or '?'} files: the matches stored before "
            "stay stored (and audited); the search wrote no report"
        )
        self._end(row, "cancelled", message)
        return self.status(who, ref, search_id)


def stop_group(pid: int, proc: subprocess.Popen[bytes] | None) -> None:
    """SIGINT to the search's process group (it shuts its local Ray down), SIGKILL after
    ``CANCEL_GRACE_S``; the group is the search's own session, nothing else. Returns once
    the whole group is gone (a killed process takes a moment to exit, and Ray's processes
    of the search are in the group), or after ``GROUP_EXIT_S`` with a warning."""
    try:
        os.killpg(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + CANCEL_GRACE_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if proc is None and not alive(pid):
            break
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(10)
    deadline = time.monotonic() + GROUP_EXIT_S
    while alive(pid, group=True):
        if time.monotonic() > deadline:
            logger.warning("search process group %d: still there %.0f s after SIGKILL",
                           pid, GROUP_EXIT_S)  # fmt: skip
            return
        time.sleep(0.1)


def alive(pid: int, group: bool = False) -> bool:
    """Whether the process (or, with ``group``, any process of its group) still exists; a
    process that has exited but is not reaped yet counts."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _progress(out: Path) -> dict[str, Any]:
    path = out / "progress.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _last_error(log: Path) -> str:
    """The search's own last words (its 'error: ...' message, which may span lines)."""
    if not log.is_file():
        return "the search ended without a log"
    lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    starts = [i for i, ln in enumerate(lines) if ln.lower().startswith("error:")]
    if starts:
        return " ".join(lines[starts[-1] :])[:1000]
    return (lines or ["the search ended without a message"])[-1][:1000]
